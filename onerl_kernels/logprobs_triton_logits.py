"""Triton kernels of logprobs_entropy_from_logits: the logits [..., V] are given (any strides).

Same math as logprobs_triton.py (base-2 online state per row, STATS = (m, log2 l, a / l), the
target's 1 - p_y from -expm1(logp)), with the row helpers shared from there.

Forward: grid (N,), one program per row: it walks V in BV chunks, keeping the online state as
scalars (a chunk max, then one exp2 per element), reads the target logit directly, and writes
logp, entropy and STATS. Backward: grid (N,), one program per row walks V again and writes dZ
chunk by chunk (fp32 epilogue, stored in the logits' dtype). Both passes read the logits once:
bandwidth-bound, no workspace. Rows are addressed as (b, l) -> b s_b + l s_l, so a shifted
[B, L+1, V][:, :-1] view needs no copy. One program per row makes every row's result independent
of the batch.
"""
from __future__ import annotations

import torch

from ._triton import tl, triton
from . import logprobs_triton as base  # base._alloc is looked up per call (tests poison it)
from .logprobs_triton import LOG2E, _dlogits, _finish_rows, _interp, _row_terms, _vec


@triton.jit
def _rows_fwd_kernel(Z, TGT, LOGP, ENT, STATS, L, V, s_b, s_l, s_v, s_t, c, ignore_index,
                     NEED_ENT: tl.constexpr, BV: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    base = Z + (r // L) * s_b + (r % L) * s_l
    zero = tl.zeros([BV], tl.float32)
    m = tl.max(zero, 0) + float("-inf")
    l = tl.sum(zero, 0)
    a = tl.sum(zero, 0)
    for v0 in range(0, V, BV):
        cols = v0 + tl.arange(0, BV)
        cm = cols < V
        z = tl.load(base + cols.to(tl.int64) * s_v, mask=cm, other=0.0).to(tl.float32)
        u = tl.where(cm, z * c, float("-inf"))
        m_new = tl.maximum(m, tl.max(u, 0))
        alpha = tl.exp2(m - m_new)
        d = u - m_new
        e = tl.exp2(d)
        if NEED_ENT:
            a = alpha * (a + l * tl.where(l > 0, m - m_new, 0.0)) \
                + tl.sum(tl.where(cm, e * d, 0.0), 0)
        l = alpha * l + tl.sum(e, 0)
        m = m_new
    tgt = tl.load(TGT + r * s_t)
    valid = (tgt >= 0) & (tgt < V)
    t = tl.load(base + tl.where(valid, tgt, 0) * s_v).to(tl.float32) * c
    one = tl.arange(0, 1)  # the row finisher works on blocks of rows: a block of one here
    z1 = tl.zeros([1], tl.float32)
    _finish_rows(r + one, one == 0, m + z1, l + z1, a + z1, t + z1, TGT, s_t, V, ignore_index,
                 LOGP, ENT, STATS, NEED_ENT)


@triton.jit
def _rows_bwd_kernel(Z, TGT, LOGP, STATS, GLP, GH, DZ, L, V, s_b, s_l, s_v, s_t, s_glp, s_gh, c,
                     inv_t, ignore_index, HAS_GLP: tl.constexpr, HAS_GH: tl.constexpr,
                     BV: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    base = Z + (r // L) * s_b + (r % L) * s_l
    one = tl.arange(0, 1)
    tgt, live, m, log2l, q, omp, glp, gh = _row_terms(
        r + one, one == 0, TGT, LOGP, STATS, GLP, GH, s_t, s_glp, s_gh, ignore_index, HAS_GLP,
        HAS_GH)
    out = DZ + r * V
    for v0 in range(0, V, BV):
        cols = v0 + tl.arange(0, BV)
        cm = cols < V
        z = tl.load(base + cols.to(tl.int64) * s_v, mask=cm, other=0.0).to(tl.float32)
        dz = _dlogits((z * c)[None, :], cols, tgt, live, m, log2l, q, omp, glp, gh, inv_t,
                      HAS_GLP, HAS_GH)
        tl.store(out + cols[None, :], dz.to(DZ.dtype.element_ty), mask=cm[None, :])


# ----------------------------------------------------------------------------- launchers


def _row_cfg(t: torch.Tensor, V: int) -> dict:
    if _interp(t):
        return dict(BV=min(1024, triton.next_power_of_2(V)))
    return dict(BV=min(4096, triton.next_power_of_2(V)), num_warps=8)


def logits_forward(z, rows_shape, tgt, temperature, need_entropy, ignore_index):
    """z: logits whose rows are addressed as (b, l) -> b * rows_shape[2] + l * rows_shape[3]."""
    N, L, s_b, s_l = rows_shape
    V = z.shape[-1]
    f32 = dict(dtype=torch.float32, device=z.device)
    logp, stats = base._alloc(N, **f32), base._alloc(N, 3, **f32)
    ent = base._alloc(N if need_entropy else 0, **f32)
    if N == 0:
        return logp, ent, stats
    _rows_fwd_kernel[(N,)](
        z, tgt, logp, ent if need_entropy else logp, stats, L, V, s_b, s_l, z.stride(-1),
        tgt.stride(0), LOG2E / temperature, ignore_index, NEED_ENT=need_entropy,
        **_row_cfg(z, V))
    return logp, ent, stats


def logits_backward(g_logp, g_ent, z, rows_shape, tgt, logp, stats, temperature, ignore_index):
    N, L, s_b, s_l = rows_shape
    V = z.shape[-1]
    dz = base._alloc(N, V, dtype=z.dtype, device=z.device)
    if N == 0:
        return dz
    if g_logp is None and g_ent is None:
        return dz.zero_()
    glp, s_glp = _vec(g_logp, logp)
    gh, s_gh = _vec(g_ent, logp)
    _rows_bwd_kernel[(N,)](
        z, tgt, logp, stats, glp, gh, dz, L, V, s_b, s_l, z.stride(-1),
        tgt.stride(0), s_glp, s_gh, LOG2E / temperature, 1.0 / temperature, ignore_index,
        HAS_GLP=g_logp is not None, HAS_GH=g_ent is not None, **_row_cfg(z, V))
    return dz
