"""logprobs_entropy: per-token log-prob of the target and entropy of softmax(logits / T), fused
with the LM head so that the [M, V] logits are never materialised.

Math (row i, temperature T, target y):

    z = W x   (hidden path; or z given: logits path),   s = z / T,   lse = log sum_j e^(s_j)
    logp = s_y - lse,   entropy = lse - E_p[s]   with p = softmax(s), E_p[s] = sum_j p_j s_j
    d logp / ds = onehot(y) - p,   d entropy / ds = -p (s - E_p[s])
    dS = g_lp (onehot(y) - p) - g_H p (s - E_p[s]),   dZ = dS / T,   dX = dZ W,   dW = dZ^T X

Shapes: hidden [M, H] (bf16 / fp16 / fp32, any strides), weight [V, H] (same dtype; may be tied to
the embedding: autograd adds its gradient to the other uses), targets [M] int64; outputs fp32 [M]
(fp64 for fp64 inputs, torch backend only). The logits entry takes logits [..., V] with any strides
(e.g. a [B, L+1, V][:, :-1] view: no copy) and targets [...]; outputs have the targets' shape.

Conventions: a target equal to ignore_index gives logp 0, entropy 0 and no gradient. A target
outside [0, V) that is not ignore_index gives logp NaN (checked on device, no host sync).
need_entropy=False returns entropy as an empty tensor (shape [0]) and skips its work in forward
and backward. Gradients flow from both logp and entropy.

Backends: "triton" (CUDA; CPU tensors through Triton's interpreter, fp16/fp32 only there) and
"torch" (chunked, bounded memory, any device). "auto" picks triton on CUDA and torch on CPU.
Kernels: logprobs_triton.py (hidden path: algorithm, grids, workspace), logprobs_triton_logits.py,
logprobs_chunked.py (the torch path). Forward saves three fp32 numbers per row,
stats = (max, log-sum-exp - max, E_p[s] - max) in the backend's own units, plus the logp output
(for 1 - p_y = -expm1(logp)); backward recomputes the logits.
"""
from __future__ import annotations

import math

import torch

from . import logprobs_chunked as chunked
from . import logprobs_triton as tri
from . import logprobs_triton_logits as tri_logits
from ._backend import resolve

BACKENDS = ("triton", "torch")
_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
_OP = "logprobs_entropy"


def _pick(backend: str, t: torch.Tensor) -> str:
    which = resolve(_OP, backend, t.device, BACKENDS)
    if which == "triton" and t.dtype == torch.float64:
        if backend == "auto":
            return "torch"
        raise ValueError(f"{_OP}: backend 'triton' takes bfloat16/float16/float32 inputs, got "
                         "float64 (use backend='torch')")
    return which


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _rows3d(z: torch.Tensor) -> torch.Tensor:
    """z [..., V] as a [B, L, V] view (leading dims merged where their strides allow; a copy only
    when three or more of them cannot be merged)."""
    V = z.shape[-1]
    dims = [(n, s) for n, s in zip(z.shape[:-1], z.stride()[:-1]) if n != 1]
    merged: list[list[int]] = []
    for n, s in dims:
        if merged and merged[-1][1] == s * n:
            merged[-1] = [merged[-1][0] * n, s]
        else:
            merged.append([n, s])
    if len(merged) > 2:
        return z.reshape(1, -1, V)
    while len(merged) < 2:
        merged.insert(0, [1, 0])
    (B, sb), (L, sl) = merged
    return z.as_strided((B, L, V), (sb, sl, z.stride(-1)), z.storage_offset())


# ----------------------------------------------------------------------------- hidden path ops


@torch.library.custom_op("onerl::logprobs_entropy", mutates_args=())
def _lpe(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
         need_entropy: bool, ignore_index: int, backend: str
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    impl = tri.hidden_forward if _pick(backend, hidden) == "triton" else chunked.hidden_forward
    return impl(hidden, weight, targets, temperature, need_entropy, ignore_index)


@_lpe.register_fake
def _(hidden, weight, targets, temperature, need_entropy, ignore_index, backend):
    M, dt = hidden.shape[0], _out_dtype(hidden)
    return (hidden.new_empty(M, dtype=dt), hidden.new_empty(M if need_entropy else 0, dtype=dt),
            hidden.new_empty(M, 3, dtype=dt))


@torch.library.custom_op("onerl::logprobs_entropy_backward", mutates_args=())
def _lpe_bwd(g_logp: torch.Tensor | None, g_entropy: torch.Tensor | None, hidden: torch.Tensor,
             weight: torch.Tensor, targets: torch.Tensor, logp: torch.Tensor, stats: torch.Tensor,
             temperature: float, ignore_index: int, need_dx: bool, need_dw: bool, backend: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    impl = tri.hidden_backward if _pick(backend, hidden) == "triton" else chunked.hidden_backward
    return impl(g_logp, g_entropy, hidden, weight, targets, logp, stats, temperature,
                ignore_index, need_dx, need_dw)


@_lpe_bwd.register_fake
def _(g_logp, g_entropy, hidden, weight, targets, logp, stats, temperature, ignore_index, need_dx,
      need_dw, backend):
    (M, H), V = hidden.shape, weight.shape[0]
    return hidden.new_empty(M if need_dx else 0, H), weight.new_empty(V if need_dw else 0, H)


def _lpe_setup(ctx, inputs, output):
    hidden, weight, targets, temperature, need_entropy, ignore_index, backend = inputs
    logp, _, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None: work skipped
    ctx.save_for_backward(hidden, weight, targets, logp, stats)
    ctx.args = (temperature, need_entropy, ignore_index, backend)


def _lpe_backward(ctx, g_logp, g_entropy, _g_stats):
    hidden, weight, targets, logp, stats = ctx.saved_tensors
    temperature, need_entropy, ignore_index, backend = ctx.args
    need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx, dw = _lpe_bwd(g_logp, g_entropy if need_entropy else None, hidden, weight, targets, logp,
                      stats, temperature, ignore_index, need_dx, need_dw, backend)
    return (dx if need_dx else None, dw if need_dw else None) + (None,) * 5


_lpe.register_autograd(_lpe_backward, setup_context=_lpe_setup)


# ----------------------------------------------------------------------------- logits path ops


@torch.library.custom_op("onerl::logprobs_entropy_from_logits", mutates_args=())
def _lpel(logits: torch.Tensor, targets: torch.Tensor, temperature: float, need_entropy: bool,
          ignore_index: int, backend: str
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z3, y = _rows3d(logits), targets.reshape(-1)
    if _pick(backend, logits) == "triton":
        rows = (z3.shape[0] * z3.shape[1], z3.shape[1], z3.stride(0), z3.stride(1))
        logp, ent, stats = tri_logits.logits_forward(z3, rows, y, temperature, need_entropy,
                                              ignore_index)
    else:
        logp, ent, stats = chunked.logits_forward(z3, y, temperature, need_entropy, ignore_index)
    shape = targets.shape
    return logp.view(shape), ent.view(shape if need_entropy else (0,)), stats


@_lpel.register_fake
def _(logits, targets, temperature, need_entropy, ignore_index, backend):
    dt, N = _out_dtype(logits), targets.numel()
    ent_shape = targets.shape if need_entropy else (0,)
    return (logits.new_empty(targets.shape, dtype=dt), logits.new_empty(ent_shape, dtype=dt),
            logits.new_empty(N, 3, dtype=dt))


@torch.library.custom_op("onerl::logprobs_entropy_from_logits_backward", mutates_args=())
def _lpel_bwd(g_logp: torch.Tensor | None, g_entropy: torch.Tensor | None, logits: torch.Tensor,
              targets: torch.Tensor, logp: torch.Tensor, stats: torch.Tensor, temperature: float,
              ignore_index: int, backend: str) -> torch.Tensor:
    z3, y, lp = _rows3d(logits), targets.reshape(-1), logp.reshape(-1)
    if _pick(backend, logits) == "triton":
        rows = (z3.shape[0] * z3.shape[1], z3.shape[1], z3.stride(0), z3.stride(1))
        dz = tri_logits.logits_backward(g_logp, g_entropy, z3, rows, y, lp, stats, temperature,
                                 ignore_index)
    else:
        dz = chunked.logits_backward(g_logp, g_entropy, z3, y, lp, stats, temperature,
                                     ignore_index)
    return dz.view(logits.shape)


@_lpel_bwd.register_fake
def _(g_logp, g_entropy, logits, targets, logp, stats, temperature, ignore_index, backend):
    return logits.new_empty(logits.shape)


def _lpel_setup(ctx, inputs, output):
    logits, targets, temperature, need_entropy, ignore_index, backend = inputs
    logp, _, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(logits, targets, logp, stats)
    ctx.args = (temperature, need_entropy, ignore_index, backend)


def _lpel_backward(ctx, g_logp, g_entropy, _g_stats):
    logits, targets, logp, stats = ctx.saved_tensors
    temperature, need_entropy, ignore_index, backend = ctx.args
    dz = _lpel_bwd(g_logp, g_entropy if need_entropy else None, logits, targets, logp, stats,
                   temperature, ignore_index, backend)
    return (dz,) + (None,) * 5


_lpel.register_autograd(_lpel_backward, setup_context=_lpel_setup)


# ----------------------------------------------------------------------------- public API


def _check_common(name: str, t, targets, target_shape, temperature, ignore_index) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype not in _DTYPES:
        raise TypeError(f"{_OP}: {name} must be a bfloat16/float16/float32 tensor (float64 on "
                        f"the torch backend), got "
                        f"{getattr(t, 'dtype', type(t))}")
    if not isinstance(targets, torch.Tensor) or targets.dtype.is_floating_point \
            or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"{_OP}: targets must be an integer (int64) tensor, got "
                        f"{getattr(targets, 'dtype', type(targets))}")
    if tuple(targets.shape) != tuple(target_shape):
        raise ValueError(f"{_OP}: targets has shape {tuple(targets.shape)}, expected "
                         f"{tuple(target_shape)}")
    if targets.device != t.device:
        raise ValueError(f"{_OP}: targets is on {targets.device}, {name} on {t.device}")
    if isinstance(temperature, torch.Tensor) or not isinstance(temperature, (int, float)):
        raise TypeError(f"{_OP}: temperature must be a Python float, got {type(temperature)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{_OP}: temperature must be finite and > 0, got {temperature}")
    if not isinstance(ignore_index, int):
        raise TypeError(f"{_OP}: ignore_index must be an int, got {type(ignore_index)}")


def logprobs_entropy(hidden, weight, targets, *, temperature=1.0, need_entropy=True,
                     ignore_index=-100, backend="auto"):
    """log p(target) and entropy of softmax((hidden @ weight.T) / temperature), per row, fused.

    hidden [M, H], weight [V, H] (same dtype and device), targets [M] int64. Returns
    ``(logp, entropy)``, both fp32 [M] and differentiable w.r.t. hidden and weight; with
    ``need_entropy=False`` entropy is an empty tensor. See the module docstring for conventions.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"{_OP}: hidden must be a 2-D [M, H] tensor, got "
                         f"{getattr(hidden, 'shape', type(hidden))}")
    _check_common("hidden", hidden, targets, hidden.shape[:1], temperature, ignore_index)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 \
            or weight.shape[1] != hidden.shape[1] or weight.shape[0] < 1:
        raise ValueError(f"{_OP}: weight must be a [V, H={hidden.shape[1]}] tensor with V >= 1, "
                         f"got {getattr(weight, 'shape', type(weight))}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"{_OP}: weight has dtype {weight.dtype}, hidden {hidden.dtype}: they "
                        "must match")
    if weight.device != hidden.device:
        raise ValueError(f"{_OP}: weight is on {weight.device}, hidden on {hidden.device}")
    logp, ent, _ = _lpe(hidden, weight, targets.long(), float(temperature), bool(need_entropy),
                           ignore_index, backend)
    return logp, ent


def logprobs_entropy_from_logits(logits, targets, *, temperature=1.0, need_entropy=True,
                                 ignore_index=-100, backend="auto"):
    """log p(target) and entropy of softmax(logits / temperature) over the last dim.

    logits [..., V] with any strides (a shifted view needs no copy), targets [...] int64.
    Returns ``(logp, entropy)`` shaped like targets (fp32; entropy empty with
    ``need_entropy=False``), differentiable w.r.t. logits.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{_OP}: logits must be a [..., V] tensor with V >= 1, got "
                         f"{getattr(logits, 'shape', type(logits))}")
    _check_common("logits", logits, targets, logits.shape[:-1], temperature, ignore_index)
    logp, ent, _ = _lpel(logits, targets.long(), float(temperature), bool(need_entropy),
                            ignore_index, backend)
    return logp, ent
