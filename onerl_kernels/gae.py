"""gae_advantages: PPO's generalised advantage estimation, a reversed scan over response tokens.

    rewards, values, mask [B, T] -> advantages, returns [B, T]

Per row, over the masked tokens only (others are skipped, whatever they hold, and get 0):
delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma lam A_next, returns = A + V, where
"next" is the next masked token of the row (V = A = 0 past the last). gamma = lam = 1 by default
(the 1-shot RLVR paper's PPO setting). The spec is ``reference.gae_advantages`` (a plain loop).

GPU (Triton): one launch; each program owns BLOCK_B rows and walks t = T-1 .. 0 carrying
(V_next, A_next) in registers. CPU (torch): with gamma = lam = 1 the sum telescopes,
A_t = (sum of the row's rewards from t on) - V_t, one reverse cumulative sum; otherwise a loop
over the T columns with [B]-wide vector ops. Math in fp32 (fp64 for fp64 rewards on the torch
backend); outputs fp32 (fp64 for fp64 rewards). No host sync, not differentiable (inputs are
detached: advantages and returns are data for the losses).
"""
from __future__ import annotations

import torch

from ._backend import resolve
from ._triton import tl, triton

BACKENDS = ("triton", "torch")


@triton.jit
def _gae_kernel(r_ptr, v_ptr, m_ptr, adv_ptr, ret_ptr, s_r_b, s_r_t, s_v_b, s_v_t, s_m_b, s_m_t,
                B, T, gamma, lam, BLOCK_B: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    ok = rows < B
    next_v = tl.zeros([BLOCK_B], tl.float32)
    next_a = tl.zeros([BLOCK_B], tl.float32)
    for i in range(0, T):
        t = (T - 1 - i).to(tl.int64)
        m = (tl.load(m_ptr + rows * s_m_b + t * s_m_t, mask=ok, other=0) != 0) & ok
        r = tl.load(r_ptr + rows * s_r_b + t * s_r_t, mask=m, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + rows * s_v_b + t * s_v_t, mask=m, other=0.0).to(tl.float32)
        a = r + gamma * next_v - v + gamma * lam * next_a
        next_a = tl.where(m, a, next_a)
        next_v = tl.where(m, v, next_v)
        tl.store(adv_ptr + rows * T + t, tl.where(m, a, 0.0).to(adv_ptr.dtype.element_ty), mask=ok)
        tl.store(ret_ptr + rows * T + t, tl.where(m, a + v, 0.0).to(ret_ptr.dtype.element_ty),
                 mask=ok)


def _gae_triton(rewards, values, mask, gamma, lam, out_dtype):
    B, T = rewards.shape
    adv = torch.empty(B, T, dtype=out_dtype, device=rewards.device)
    ret = torch.empty_like(adv)
    if B * T == 0:
        return adv, ret
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    block_b = 16
    _gae_kernel[(triton.cdiv(B, block_b),)](
        rewards, values, mask, adv, ret, rewards.stride(0), rewards.stride(1), values.stride(0),
        values.stride(1), mask.stride(0), mask.stride(1), B, T, gamma, lam, BLOCK_B=block_b,
        num_warps=1)
    return adv, ret


def _gae_torch(rewards, values, mask, gamma, lam, out_dtype):
    dt = torch.float64 if out_dtype == torch.float64 else torch.float32
    m = mask != 0
    z = torch.zeros((), dtype=dt, device=rewards.device)
    r, v = torch.where(m, rewards.to(dt), z), torch.where(m, values.to(dt), z)
    if gamma == 1.0 and lam == 1.0:
        ret = torch.where(m, r.flip(1).cumsum(1).flip(1), z)
        return torch.where(m, ret - v, z), ret
    # columns as contiguous rows: 5 [B]-wide ops per token position
    d, vt, mt = (r - v).t().contiguous(), v.t().contiguous(), m.t().contiguous()
    adv = torch.empty_like(d)
    next_v, next_a = r.new_zeros(r.shape[0]), r.new_zeros(r.shape[0])
    for t in range(d.shape[0] - 1, -1, -1):
        a = d[t].add(next_v, alpha=gamma).add_(next_a, alpha=gamma * lam)
        next_a, next_v = torch.where(mt[t], a, next_a), torch.where(mt[t], vt[t], next_v)
        adv[t] = next_a
    adv = torch.where(m, adv.t(), z)
    return adv, torch.where(m, adv + v, z)


@torch.library.custom_op("onerl::gae_advantages", mutates_args=())
def _gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
         lam: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    which = resolve("gae_advantages", backend, rewards.device, BACKENDS)
    out_dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    impl = _gae_triton if which == "triton" else _gae_torch
    return impl(rewards, values, mask, gamma, lam, out_dtype)


@_gae.register_fake
def _(rewards, values, mask, gamma, lam, backend):
    dt = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    return rewards.new_empty(rewards.shape, dtype=dt), rewards.new_empty(rewards.shape, dtype=dt)


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 1.0, *, backend: str = "auto"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (advantages, returns) of per-token ``rewards`` and ``values`` [B, T] over ``mask``.

    Any strides and float dtypes; mask bool or numbers (nonzero = a response token). See the
    module docstring for the math."""
    for name, t in (("rewards", rewards), ("values", values), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gae_advantages: {name} must be a torch.Tensor, got {type(t)}")
        if t.dim() != 2 or t.shape != rewards.shape:
            raise ValueError(f"gae_advantages: {name} must be [B, T] like rewards "
                             f"{tuple(rewards.shape)}, got {tuple(t.shape)}")
        if t.device != rewards.device:
            raise ValueError(f"gae_advantages: {name} is on {t.device}, rewards on "
                             f"{rewards.device}")
    if not (rewards.is_floating_point() and values.is_floating_point()):
        raise TypeError("gae_advantages: rewards and values must be floating point")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae_advantages: gamma and lam must be in [0, 1], got {gamma}, {lam}")
    return _gae(rewards.detach(), values.detach(), mask, float(gamma), float(lam), backend)
