"""Chunked torch implementation of logprobs_entropy (the CPU path, and backend="torch" anywhere).

Same math as the Triton kernels (see logprobs_triton.py), in natural units: s = z / T and per row
the online state over vocab chunks

    m = max s,   l = sum e^(s - m),   a = sum e^(s - m) (s - m)
    lse = m + log l,  E_p[s] = m + a / l,  entropy = log l - a / l,  log p(y) = (s_y - m) - log l.

Memory stays bounded: vocab columns are taken _COLS at a time (outer loop: each weight chunk is
read once) and rows _ROWS at a time (inner loop), so the largest temporary is a few
[_ROWS, _COLS] blocks plus four numbers per row, whatever M and V; nothing of size [M, V] is ever
allocated. The row block is always padded to exactly _ROWS rows, and the chunk sizes depend on
nothing but V, so every matmul and reduction a row goes through has the same shape whatever batch
it sits in: a row's results are bitwise the same alone and inside any batch (BLAS picks its kernel,
blocking and threading from the shape alone; checked with 1 and 2 threads, and expected for any
thread count dividing _ROWS, which keeps torch's per-thread ranges row-aligned).

Backward recomputes each logit chunk (vocab outer, rows inner): dZ = dS / T with
dS = g_lp (onehot - p) - g_H p (s - E_p[s]), p = e^((s - m) - log l), s - E_p[s] = (s - m) - a / l
and 1 - p_y = -expm1(log p(y)) at the target (exact for peaked rows: the recomputed max logit is
bitwise the forward's). dX [M, H] accumulates in fp32 (fp64 for fp64 inputs) over vocab chunks in
order; each dW chunk [_COLS, H] accumulates over row blocks in fp32 (in place when dW is fp32)
and is written once. Math is fp32 for fp16/bf16/fp32 inputs (logits are never rounded to 16 bits)
and fp64 for fp64 inputs. Saved for backward: the logp output and stats [M, 3] = (m, log l, a / l)
in natural units (the Triton kernels keep base-2 units: stats belong to the backend that made them).
"""
from __future__ import annotations

import torch

from ._backend import _C

_ROWS = 256
_COLS = 4096
# Exponents are clamped from below at log(smallest normal) (+ a margin): on x86 CPUs exp is 10-30x
# slower when its result is subnormal, which is where logits far below the row's maximum land
# (masked / padded vocabulary ids). A clamped term is < 2e-38 (fp32) against sums >= 1, far
# below rounding; the forward and the backward both clamp.
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}
# fp32 CPU chunks take the fused C++ row passes when the extension is built (the torch ops below
# stay the definition, the fp64 path and the fallback; tests run both by patching this).
USE_CPP = True
_HAVE_CPP = _C is not None and all(hasattr(_C, f) for f in ("lpe_online_cpu", "lpe_dlogits_cpu"))


def _alloc(*shape, **kw) -> torch.Tensor:
    """Every output buffer allocated here (tests patch it to poison buffers)."""
    return torch.empty(*shape, **kw)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _pad(t: torch.Tensor, rows: int, fill, dtype=None) -> torch.Tensor:
    """``t`` (cast to ``dtype``) padded with ``fill`` to exactly ``rows`` rows."""
    dtype = dtype or t.dtype
    if t.shape[0] == rows:
        return t.to(dtype)
    out = torch.full((rows,) + tuple(t.shape[1:]), fill, dtype=dtype, device=t.device)
    out[: t.shape[0]] = t
    return out


def _fused(s: torch.Tensor, *rows: torch.Tensor | None) -> bool:
    """Whether the C++ row passes (csrc/cpu/logprobs_ops.cpp) take this fp32 CPU chunk."""
    return (USE_CPP and _HAVE_CPP and s.device.type == "cpu" and s.dtype == torch.float32 and s.is_contiguous()
            and all(r is None or (r.is_contiguous() and r.device.type == "cpu" and r.dtype in
                                  (torch.float32, torch.int64, torch.bool)) for r in rows))


def _online(state, s: torch.Tensor, y: torch.Tensor, need_entropy: bool):
    """Fold the logit chunk s [R, C] (targets y [R] relative to the chunk) into (m, l, a, t).
    s is a fresh tensor and is overwritten."""
    m, l, a, t = state
    if _fused(s, y, m, l, a, t):  # one C++ pass per row, the state updated in place
        _C.lpe_online_cpu(s.data_ptr(), s.shape[0], s.shape[1], y.data_ptr(), m.data_ptr(),
                          l.data_ptr(), a.data_ptr(), t.data_ptr(), need_entropy,
                          _EXP_FLOOR[s.dtype])
        return m, l, a, t
    C = s.shape[1]
    hit = (y >= 0) & (y < C)
    t = t + torch.where(hit, s.gather(1, y.clamp(0, C - 1)[:, None])[:, 0], 0.0)
    mn = torch.maximum(m, s.amax(1))
    alpha = torch.exp(m - mn)
    d = s.sub_(mn[:, None]).clamp_(min=_EXP_FLOOR[s.dtype])
    e = torch.exp(d)
    l_new = alpha * l + e.sum(1)
    if need_entropy:
        a = alpha * (a + l * torch.where(l > 0, m - mn, 0.0)) + e.mul_(d).sum(1)
    return mn, l_new, a, t


def _finish(state, y, V, ignore_index):
    m, l, a, t = state
    log_l, r = torch.log(l), a / l
    ign = y == ignore_index
    bad = (y < 0) | (y >= V)
    logp = torch.where(ign, 0.0, torch.where(bad, float("nan"), (t - m) - log_l))
    return logp, torch.where(ign, 0.0, log_l - r), torch.stack([m, log_l, r], 1)


def _rows_forward(prep, M, V, y_all, cd, device, need_entropy, ignore_index):
    """Shared driver, vocab chunks outer (each weight chunk is read once), row blocks inner.
    ``prep(v0, v1)`` returns ``rows(r0, n)``, the padded [_ROWS, v1 - v0] logits s (already / T)."""
    Mp = -(-M // _ROWS) * _ROWS
    y = _pad(y_all, Mp, ignore_index)
    state = [torch.full((Mp,), float("-inf"), dtype=cd, device=device),
             *(torch.zeros(Mp, dtype=cd, device=device) for _ in range(3))]
    for v0 in range(0, V, _COLS):
        v1 = min(v0 + _COLS, V)
        rows = prep(v0, v1)
        for r0 in range(0, M, _ROWS):
            b = slice(r0, r0 + _ROWS)
            new = _online([t[b] for t in state], rows(r0, min(_ROWS, M - r0)), y[b] - v0,
                          need_entropy)
            for t, u in zip(state, new):
                t[b] = u
    logp, stats = _alloc(M, dtype=cd, device=device), _alloc(M, 3, dtype=cd, device=device)
    ent = _alloc(M if need_entropy else 0, dtype=cd, device=device)
    for r0 in range(0, M, _ROWS):  # per block, so every op has the same shape for every row
        n, b = min(_ROWS, M - r0), slice(r0, r0 + _ROWS)
        lp, h, st = _finish([t[b] for t in state], y[b], V, ignore_index)
        logp[r0:r0 + n], stats[r0:r0 + n] = lp[:n], st[:n]
        if need_entropy:
            ent[r0:r0 + n] = h[:n]
    return logp, ent, stats


def _dlogits(s, rt, inv_t):
    """dZ [R, C] of a logit chunk s = z / T (a fresh tensor, overwritten); rt = (y relative to
    the chunk, live, stats, 1 - p_y, g_lp, g_H) for the same R rows. Rows not live give 0."""
    y, live, st, omp, glp, gh = rt
    C = s.shape[1]
    if _fused(s, y, live, st, omp, glp, gh):
        _C.lpe_dlogits_cpu(s.data_ptr(), s.shape[0], C, y.data_ptr(), live.data_ptr(),
                           st.data_ptr(), omp.data_ptr(), 0 if glp is None else glp.data_ptr(),
                           0 if gh is None else gh.data_ptr(), inv_t, _EXP_FLOOR[s.dtype])
        return s
    d = s.sub_(st[:, 0:1])  # s - m
    p = torch.sub(d, st[:, 1:2]).clamp_(min=_EXP_FLOOR[s.dtype]).exp_()
    if glp is not None:
        ds = p * (-glp)[:, None]
        idx, hit = y.clamp(0, C - 1)[:, None], (y >= 0) & (y < C)  # the target's entry:
        ds.scatter_(1, idx, torch.where(hit, glp * omp, ds.gather(1, idx)[:, 0])[:, None])
    else:
        ds = torch.zeros_like(s)
    if gh is not None:  # ds -= g_H p (s - E_p[s])
        ds.addcmul_(d.sub_(st[:, 2:3]).mul_(p), gh[:, None], value=-1.0)
    return ds.mul_(inv_t).masked_fill_(~live[:, None], 0.0)


def _row_terms(g_logp, g_ent, y, logp, stats, ignore_index, cd):
    """Per-row backward inputs for all rows: (y, live, stats, logp, g_lp, g_H)."""
    live = y != ignore_index
    glp = None if g_logp is None else torch.where(live, g_logp.reshape(-1).to(cd), 0.0)
    gh = None if g_ent is None else torch.where(live, g_ent.reshape(-1).to(cd), 0.0)
    return y, live, torch.where(live[:, None], stats, 0.0), torch.where(live, logp, 0.0), glp, gh


def _rows_of(rt, r0, n, v0):
    """The row terms of rows r0..r0+n, padded to _ROWS (padding rows are not live), with
    1 - p_y = -expm1(logp) computed per padded block (same shape for every row)."""
    y, live, st, lp, glp, gh = (None if t is None else _pad(t[r0:r0 + n], _ROWS, 0)
                                for t in rt)
    return y - v0, live, st, -torch.expm1(lp), glp, gh


def _hidden_logits(xb, wt, temperature):
    """s = (x W^T) / T for a padded row block: forward and backward share it (bitwise equal)."""
    return (xb @ wt).div_(temperature)


# ----------------------------------------------------------------------------- hidden path


def hidden_forward(x, w, y, temperature, need_entropy, ignore_index):
    M, V, cd = x.shape[0], w.shape[0], compute_dtype(x)

    def prep(v0, v1):
        wt = w[v0:v1].to(cd).T  # cast once per vocab chunk

        def rows(r0, n):
            return _hidden_logits(_pad(x[r0:r0 + n], _ROWS, 0.0, cd), wt, temperature)
        return rows

    return _rows_forward(prep, M, V, y, cd, x.device, need_entropy, ignore_index)


def hidden_backward(g_logp, g_ent, x, w, y, logp, stats, temperature, ignore_index, need_dx,
                    need_dw):
    (M, H), V, cd = x.shape, w.shape[0], compute_dtype(x)
    dx = torch.zeros(M if need_dx else 0, H, dtype=cd, device=x.device)
    dw = _alloc(V if need_dw else 0, H, dtype=w.dtype, device=x.device)
    if M == 0 or (g_logp is None and g_ent is None):
        return dx.to(x.dtype), dw.zero_()
    rt = _row_terms(g_logp, g_ent, y, logp, stats, ignore_index, cd)
    for v0 in range(0, V, _COLS):
        v1 = min(v0 + _COLS, V)
        wc = w[v0:v1].to(cd)
        dwc = None
        if need_dw:  # accumulate in place when dW has the compute dtype (fp32 / fp64 weights)
            dwc = dw[v0:v1] if dw.dtype == cd else torch.empty(v1 - v0, H, dtype=cd,
                                                                device=x.device)
        for r0 in range(0, M, _ROWS):
            n = min(_ROWS, M - r0)
            xb = _pad(x[r0:r0 + n], _ROWS, 0.0, cd)
            dz = _dlogits(_hidden_logits(xb, wc.T, temperature), _rows_of(rt, r0, n, v0),
                          1.0 / temperature)
            if need_dx:  # a full [_ROWS, H] product for every block, so rows stay invariant
                dx[r0:r0 + n] += (dz @ wc)[:n]
            if need_dw and r0 == 0:
                torch.mm(dz.T, xb, out=dwc)
            elif need_dw:
                dwc.addmm_(dz.T, xb)
        if need_dw and dwc.data_ptr() != dw[v0:v1].data_ptr():
            dw[v0:v1] = dwc
    return dx.to(x.dtype), dw


# ----------------------------------------------------------------------------- logits path


def _logit_rows(z3, r0, n, v0, v1, cd, temperature):
    """Rows r0..r0+n of z3 [B, L, V] (any strides) as a padded [_ROWS, v1 - v0] chunk of s."""
    r = torch.arange(r0, r0 + n, device=z3.device)
    L = z3.shape[1]
    return _pad(z3[r // L, r % L, v0:v1], _ROWS, 0.0, cd).div_(temperature)  # a fresh copy


def logits_forward(z3, y, temperature, need_entropy, ignore_index):
    """z3 [B, L, V] (any strides), y [B * L]."""
    B, L, V = z3.shape
    cd = compute_dtype(z3)

    def prep(v0, v1):
        return lambda r0, n: _logit_rows(z3, r0, n, v0, v1, cd, temperature)

    return _rows_forward(prep, B * L, V, y, cd, z3.device, need_entropy, ignore_index)


def logits_backward(g_logp, g_ent, z3, y, logp, stats, temperature, ignore_index):
    """dZ [B * L, V] (contiguous, in the logits' dtype)."""
    B, L, V = z3.shape
    N, cd = B * L, compute_dtype(z3)
    dz = _alloc(N, V, dtype=z3.dtype, device=z3.device)
    if g_logp is None and g_ent is None:
        return dz.zero_()
    rt = _row_terms(g_logp, g_ent, y, logp, stats, ignore_index, cd)
    for r0 in range(0, N, _ROWS):
        n = min(_ROWS, N - r0)
        for v0 in range(0, V, _COLS):
            v1 = min(v0 + _COLS, V)
            d = _dlogits(_logit_rows(z3, r0, n, v0, v1, cd, temperature),
                         _rows_of(rt, r0, n, v0), 1.0 / temperature)
            dz[r0:r0 + n, v0:v1] = d[:n]
    return dz
