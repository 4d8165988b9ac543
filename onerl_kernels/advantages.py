"""group_advantages: GRPO's group-normalised outcome advantage.

    A_i = (r_i - mean_g(r)) / (std(r) + eps)        rewards [N] -> advantages fp32 [N]

Groups are contiguous runs of ``group_size`` rewards (in GRPO: the n rollouts of one prompt row).
``std`` picks the estimator ("unbiased" = n-1, verl's default; "population" = n; "none" = no
division, Dr. GRPO) and ``scale`` whose std divides ("group", "batch" or "none"). A group of one
has mean 0 and std 1; all-equal groups give exactly 0.

Implementations: CUDA C++ (csrc/cuda/group_advantages.cu, one launch, no host sync), the C++ CPU
twin (csrc/cpu/group_advantages.cpp), and the torch reference (reference.group_advantages). The
backward (rarely needed: rewards are data) is the analytic one, in torch.
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import _C, resolve, stream_of

_STD = {s: i for i, s in enumerate(reference.STD_MODES)}
_SCALE = {s: i for i, s in enumerate(reference.SCALE_MODES)}
BACKENDS = ("cuda", "cpp", "torch")


@torch.library.custom_op("onerl::group_advantages", mutates_args=())
def _group_advantages(rewards: torch.Tensor, group_size: int, eps: float, std: str, scale: str,
                      backend: str) -> torch.Tensor:
    which = resolve("group_advantages", backend, rewards.device, BACKENDS)
    if which == "torch":
        return reference.group_advantages(rewards, group_size, eps, std, scale).float()
    r = rewards.detach().contiguous().float()
    out = torch.empty_like(r)
    args = (r.data_ptr(), out.data_ptr(), r.numel(), group_size, eps, _STD[std], _SCALE[scale])
    if which == "cuda":
        _C.group_advantages_cuda(*args, stream_of(r))
    else:
        _C.group_advantages_cpu(*args)
    return out


@_group_advantages.register_fake
def _(rewards, group_size, eps, std, scale, backend):
    return rewards.new_empty(rewards.shape, dtype=torch.float32)


def _backward(ctx, grad):
    (rewards,) = ctx.saved_tensors
    return _advantages_vjp(grad, rewards, *ctx.args), None, None, None, None, None


def _setup(ctx, inputs, output):
    rewards, group_size, eps, std, scale, _ = inputs
    ctx.save_for_backward(rewards)
    ctx.args = (group_size, eps, std, scale)


_group_advantages.register_autograd(_backward, setup_context=_setup)


def _advantages_vjp(grad, rewards, group_size, eps, std, scale):
    """d(sum g*A)/dr. With c = r - mean_g and s the dividing std (denominator d = n-1 or n):
    dL/dr_j = (g_j - mean_g(g)) / (s + eps) - (r_j - mean_s(r)) * sum(g c) / (d s (s + eps)^2),
    the sums taken over the std's scope (group or batch); the second term is 0 where s is."""
    dt = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    n = group_size
    r, g = rewards.to(dt).reshape(-1, n), grad.to(dt).reshape(-1, n)
    c = r - r.mean(1, keepdim=True) if n > 1 else r
    g_c = g - g.mean(1, keepdim=True) if n > 1 else g
    if std == "none" or scale == "none":
        return g_c.reshape(rewards.shape).to(rewards.dtype)
    corr = 1 if std == "unbiased" else 0
    if scale == "group":
        if n == 1:
            return (g / (1.0 + eps)).reshape(rewards.shape).to(rewards.dtype)
        s = r.std(1, correction=corr, keepdim=True)
        dev, gc_sum, d = c, (g * c).sum(1, keepdim=True), n - corr
    else:
        flat = r.reshape(-1)
        if flat.numel() == 1:
            return (g_c / (1.0 + eps)).reshape(rewards.shape).to(rewards.dtype)
        s = flat.std(correction=corr)
        dev, gc_sum, d = r - flat.mean(), (g * c).sum(), flat.numel() - corr
    second = torch.where(s > 0, dev * gc_sum / (d * s.clamp(min=1e-30) * (s + eps) ** 2),
                         torch.zeros_like(dev))
    return (g_c / (s + eps) - second).reshape(rewards.shape).to(rewards.dtype)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     std: str = "unbiased", scale: str = "group", *,
                     backend: str = "auto") -> torch.Tensor:
    """Group-normalised advantages of ``rewards`` [N] in contiguous groups of ``group_size``.

    Returns float32 [N] on the rewards' device, without a host sync. See the module docstring.
    """
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"group_advantages: rewards must be a torch.Tensor, got {type(rewards)}")
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages: rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if not (rewards.is_floating_point() or rewards.dtype in (torch.bool, torch.int32, torch.int64)):
        raise TypeError(f"group_advantages: rewards dtype {rewards.dtype} is not a number type")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_advantages: group_size must be an int >= 1, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"group_advantages: N={rewards.numel()} rewards do not split into "
                         f"groups of {group_size}")
    if std not in _STD:
        raise ValueError(f"group_advantages: std must be one of {tuple(_STD)}, got {std!r}")
    if scale not in _SCALE:
        raise ValueError(f"group_advantages: scale must be one of {tuple(_SCALE)}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"group_advantages: eps must be >= 0, got {eps}")
    return _group_advantages(rewards, group_size, float(eps), std, scale, backend)
