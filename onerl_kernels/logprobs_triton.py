"""Triton kernels of logprobs_entropy, hidden-state path (the LM head fused in); the shared math.

Math. Row i: logits z = W x (x [H], W [V, H]), s = z / T, p = softmax(s), target y. The kernels
work in base 2: u = s log2(e) = z c with c = log2(e) / T (a runtime scalar). Over the vocab
columns j a row keeps the online state

    m = max_j u_j,    l = sum_j 2^(u_j - m)  (>= 1),    a = sum_j 2^(u_j - m) (u_j - m)  (<= 0)

so that lse = ln2 (m + log2 l), E_p[s] = ln2 (m + a / l), entropy = lse - E_p[s]
= ln2 (log2 l - a / l), >= 0 by construction (a is kept relative to the running max, so a peaked
row has no cancellation), and log p(y) = ln2 ((u_y - m) - log2 l). Two states merge with
m = max(m1, m2), b_k = 2^(m_k - m):

    l = b1 l1 + b2 l2,    a = b1 (a1 + l1 (m1 - m)) + b2 (a2 + l2 (m2 - m)).

Backward, with g_lp, g_H the upstream gradients, d = u - m and p = 2^(d - log2 l) (fp32 epilogue):

    dS = g_lp (onehot(y) - p) - g_H p (s - E_p[s]),   dZ = dS / T,   dX = dZ W,   dW = dZ^T X
    s - E_p[s] = ln2 (d - a / l);   at the target 1 - p_y = -expm1(log p(y)) (no cancellation).

Shapes: hidden X [M, H], weight W [V, H] (same dtype: fp16, bf16 or fp32; any strides), targets
[M] int64; outputs fp32 [M]. Saved for backward: STATS [M, 3] fp32 = (m, log2 l, a / l) and the
logp output. Keeping the statistics relative to the row max (rather than lse = m + log2 l, which
rounds log2 l away when it is tiny) keeps the gradient of a peaked row (p_y -> 1) exact: the max
logit is recomputed bitwise, so d = 0 exactly there.

Forward. Grid (cdiv(M, BM), NSPLIT), the row block fastest so that programs running together
stream the same W split through L2. Program (r, k) walks vocab split k (split_n columns, BN at a
time); per tile a tl.dot over H in BK steps (fp32 accumulator) then the epilogue above; it writes
a partial (m, l, a, u_y), 16 bytes per (row, split), to PART [NSPLIT, M, 4] fp32. A merge kernel
(one program per BR rows) folds the splits in the fixed order 0..NSPLIT-1 (no atomics) and
writes logp, entropy and STATS. Tile sizes and split_n depend on the device, dtype and V only,
never on M, so a row's result is bitwise the same whatever batch it sits in.

Backward. A host loop over vocab slabs of VS columns (VS from a memory budget, a multiple of 256;
each slab costs three launches):
  1. dlogits kernel, grid (cdiv(M, BM), cdiv(VS, BN)): recompute the logit tile, write dZ in the
     input dtype to a slab buffer [M, VS] (ignored rows give 0, padded columns are not stored);
  2. dX_acc [M, H] fp32 += dZ_slab @ W[slab]  (GEMM; the accumulator is loaded, then the K steps
     are added in order, so dX does not depend on the slab width either);
  3. dW[slab] = dZ_slab^T @ X  (GEMM over all M rows: each dW slab is written once, no atomics).
Logits are recomputed once in backward: 4 GEMMs of 2 M H V flops in all (forward 1, backward 3).
Extra memory: NSPLIT * 16 B per row in forward; in backward the fp32 dX accumulator (none for
fp32 X) plus one slab buffer (<= _SLAB_BYTES).

The logits path (logits given) lives in logprobs_triton_logits.py and shares the row helpers.
"""
from __future__ import annotations

import torch

from ._triton import tl, triton

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_SLAB_BYTES = 256 << 20  # backward slab buffer budget on a GPU
_SLAB_BYTES_INTERP = 128 << 10  # tiny in the interpreter, so tests cross several slabs
_SLAB_ALIGN = 256


# ----------------------------------------------------------------------------- hidden-state path


@triton.jit
def _logit_tile(X, W, rows, cols, rmask, cmask, H, s_xm, s_xh, s_wv, s_wh,
                PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """z[BM, BN] = X[rows] @ W[cols]^T with an fp32 accumulator (masked rows/columns give 0)."""
    acc = tl.zeros([BM, BN], tl.float32)
    xp = X + rows[:, None] * s_xm
    wp = W + cols[None, :] * s_wv
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        km = ks < H
        x = tl.load(xp + ks[None, :] * s_xh, mask=rmask[:, None] & km[None, :], other=0.0)
        w = tl.load(wp + ks[:, None] * s_wh, mask=km[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=PREC)
    return acc


@triton.jit
def _fwd_split_kernel(X, W, TGT, PART, M, V, H, split_n, s_xm, s_xh, s_wv, s_wh, s_t, c,
                      NEED_ENT: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr, BK: tl.constexpr):
    sp = tl.program_id(1)
    rows = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    rmask = rows < M
    tgt = tl.load(TGT + rows * s_t, mask=rmask, other=-1)
    tgt = tl.where((tgt >= 0) & (tgt < V), tgt, -1).to(tl.int32)
    v_lo = sp * split_n
    v_hi = tl.minimum(v_lo + split_n, V)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    a = tl.zeros([BM], tl.float32)
    t = tl.zeros([BM], tl.float32)
    for n0 in range(v_lo, v_hi, BN):
        cols = n0 + tl.arange(0, BN)
        cmask = cols < v_hi
        u = _logit_tile(X, W, rows, cols.to(tl.int64), rmask, cmask, H, s_xm, s_xh, s_wv, s_wh,
                        PREC, BM, BN, BK) * c
        t += tl.sum(tl.where(cols[None, :] == tgt[:, None], u, 0.0), 1)
        u = tl.where(cmask[None, :], u, float("-inf"))
        m_new = tl.maximum(m, tl.max(u, 1))
        alpha = tl.exp2(m - m_new)
        d = u - m_new[:, None]
        e = tl.exp2(d)
        if NEED_ENT:
            a = alpha * (a + l * tl.where(l > 0, m - m_new, 0.0)) \
                + tl.sum(tl.where(cmask[None, :], e * d, 0.0), 1)
        l = alpha * l + tl.sum(e, 1)
        m = m_new
    p = PART + (sp.to(tl.int64) * M + rows) * 4
    tl.store(p + 0, m, mask=rmask)
    tl.store(p + 1, l, mask=rmask)
    tl.store(p + 2, a, mask=rmask)
    tl.store(p + 3, t, mask=rmask)


@triton.jit
def _fwd_merge_kernel(PART, TGT, LOGP, ENT, STATS, M, V, nsplit, s_t, ignore_index,
                      NEED_ENT: tl.constexpr, BR: tl.constexpr):
    rows = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
    ok = rows < M
    m = tl.full([BR], float("-inf"), tl.float32)
    l = tl.zeros([BR], tl.float32)
    a = tl.zeros([BR], tl.float32)
    t = tl.zeros([BR], tl.float32)
    for sp in range(0, nsplit):
        p = PART + (sp * M + rows) * 4
        ms = tl.load(p + 0, mask=ok, other=0.0)
        ls = tl.load(p + 1, mask=ok, other=1.0)
        m_new = tl.maximum(m, ms)
        b1 = tl.exp2(m - m_new)
        b2 = tl.exp2(ms - m_new)
        if NEED_ENT:
            as_ = tl.load(p + 2, mask=ok, other=0.0)
            a = b1 * (a + l * tl.where(l > 0, m - m_new, 0.0)) + b2 * (as_ + ls * (ms - m_new))
        l = b1 * l + b2 * ls
        t += tl.load(p + 3, mask=ok, other=0.0)
        m = m_new
    _finish_rows(rows, ok, m, l, a, t, TGT, s_t, V, ignore_index, LOGP, ENT, STATS, NEED_ENT)


@triton.jit
def _finish_rows(rows, ok, m, l, a, t, TGT, s_t, V, ignore_index, LOGP, ENT, STATS,
                 NEED_ENT: tl.constexpr):
    """Write logp, entropy and STATS; ignored rows give 0, targets outside [0, V) a NaN logp."""
    tgt = tl.load(TGT + rows * s_t, mask=ok, other=ignore_index)
    ign = tgt == ignore_index
    bad = (tgt < 0) | (tgt >= V)
    log2l = tl.log2(l)
    r = a / l
    logp = LN2 * ((t - m) - log2l)
    tl.store(LOGP + rows, tl.where(ign, 0.0, tl.where(bad, float("nan"), logp)), mask=ok)
    tl.store(STATS + rows * 3 + 0, m, mask=ok)
    tl.store(STATS + rows * 3 + 1, log2l, mask=ok)
    tl.store(STATS + rows * 3 + 2, r, mask=ok)
    if NEED_ENT:
        tl.store(ENT + rows, tl.where(ign, 0.0, LN2 * (log2l - r)), mask=ok)


@triton.jit
def _expm1(x):
    """exp(x) - 1 without cancellation near 0 (no libdevice): a Taylor series for |x| < 0.1."""
    small = x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0)))))
    return tl.where(tl.abs(x) < 0.1, small, tl.exp(x) - 1.0)


@triton.jit
def _row_terms(rows, rmask, TGT, LOGP, STATS, GLP, GH, s_t, s_glp, s_gh, ignore_index,
               HAS_GLP: tl.constexpr, HAS_GH: tl.constexpr):
    """Per-row backward inputs: target, live flag, m, log2 l, a / l, 1 - p_y, g_lp, g_H."""
    tgt = tl.load(TGT + rows * s_t, mask=rmask, other=ignore_index)
    live = rmask & (tgt != ignore_index)
    m = tl.load(STATS + rows * 3 + 0, mask=live, other=0.0)
    log2l = tl.load(STATS + rows * 3 + 1, mask=live, other=0.0)
    q = m
    omp = m
    glp = m
    gh = m
    if HAS_GLP:
        glp = tl.load(GLP + rows * s_glp, mask=live, other=0.0).to(tl.float32)
        omp = -_expm1(tl.load(LOGP + rows, mask=live, other=0.0))
    if HAS_GH:
        gh = tl.load(GH + rows * s_gh, mask=live, other=0.0).to(tl.float32)
        q = tl.load(STATS + rows * 3 + 2, mask=live, other=0.0)
    return tgt, live, m, log2l, q, omp, glp, gh


@triton.jit
def _dlogits(u, cols, tgt, live, m, log2l, q, omp, glp, gh, inv_t,
             HAS_GLP: tl.constexpr, HAS_GH: tl.constexpr):
    """dZ (fp32) of a [R, C] tile of scaled logits u = z log2(e) / T; row terms broadcast."""
    d = u - m[:, None]
    p = tl.exp2(d - log2l[:, None])
    ds = tl.zeros(u.shape, tl.float32)
    if HAS_GLP:
        ds = glp[:, None] * tl.where(cols[None, :] == tgt[:, None], omp[:, None], -p)
    if HAS_GH:
        ds -= (gh * LN2)[:, None] * p * (d - q[:, None])
    return tl.where(live[:, None], ds * inv_t, 0.0)


@triton.jit
def _bwd_dlogits_kernel(X, W, TGT, LOGP, STATS, GLP, GH, DZ, M, V, H, v0, v1, ldz,
                        s_xm, s_xh, s_wv, s_wh, s_t, s_glp, s_gh, c, inv_t, ignore_index,
                        HAS_GLP: tl.constexpr, HAS_GH: tl.constexpr, PREC: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rows = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    rmask = rows < M
    cols = v0 + tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < v1
    u = _logit_tile(X, W, rows, cols.to(tl.int64), rmask, cmask, H, s_xm, s_xh, s_wv, s_wh,
                    PREC, BM, BN, BK) * c
    tgt, live, m, log2l, q, omp, glp, gh = _row_terms(
        rows, rmask, TGT, LOGP, STATS, GLP, GH, s_t, s_glp, s_gh, ignore_index, HAS_GLP, HAS_GH)
    dz = _dlogits(u, cols, tgt, live, m, log2l, q, omp, glp, gh, inv_t, HAS_GLP, HAS_GH)
    ptr = DZ + rows[:, None] * ldz + (cols - v0)[None, :]
    tl.store(ptr, dz.to(DZ.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _mm_kernel(A, B, C, M, N, K, s_am, s_ak, s_bk, s_bn, s_cm, s_cn,
               ACC: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, GROUP_M: tl.constexpr):
    """C[M, N] (+)= A[M, K] @ B[K, N]; fp32 accumulator; grouped tile order for L2 reuse."""
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BM)
    n_n = tl.cdiv(N, BN)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    mm = rm < M
    nm = rn < N
    cp = C + rm[:, None] * s_cm + rn[None, :] * s_cn
    if ACC:
        acc = tl.load(cp, mask=mm[:, None] & nm[None, :], other=0.0).to(tl.float32)
    else:
        acc = tl.zeros([BM, BN], tl.float32)
    for k0 in range(0, K, BK):
        ks = (k0 + tl.arange(0, BK)).to(tl.int64)
        km = ks < K
        a = tl.load(A + rm[:, None] * s_am + ks[None, :] * s_ak, mask=mm[:, None] & km[None, :],
                    other=0.0)
        b = tl.load(B + ks[:, None] * s_bk + rn[None, :] * s_bn, mask=km[:, None] & nm[None, :],
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    tl.store(cp, acc.to(C.dtype.element_ty), mask=mm[:, None] & nm[None, :])


# ----------------------------------------------------------------------------- launchers


def _alloc(*shape, **kw) -> torch.Tensor:
    """Every output and workspace the launchers allocate (tests patch it to poison buffers)."""
    return torch.empty(*shape, **kw)


def _interp(t: torch.Tensor) -> bool:
    return t.device.type != "cuda"


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 stays fp32; 16-bit ignores it


def _gemm_cfg(t: torch.Tensor, V: int) -> tuple[dict, dict, dict]:
    """Configs of (logit tiles, dX GEMM, dW GEMM): functions of device, dtype and V, never of M."""
    if _interp(t):  # the interpreter's cost is per op (and per element of huge tiles)
        big = V > 8192
        return (dict(BM=32, BN=1024 if big else 128, BK=64),
                dict(BM=32, BN=128, BK=1024 if big else 128, GROUP_M=8),
                dict(BM=1024 if big else 128, BN=128, BK=64, GROUP_M=8))
    stages = 2 if t.dtype == torch.float32 else 3
    cfg = dict(BM=128, BN=128, BK=64, num_warps=8, num_stages=stages)
    return cfg, dict(cfg, GROUP_M=8), dict(cfg, GROUP_M=8)


def _split_n(V: int, BN: int, interp: bool) -> int:
    """Vocab columns per forward split: a function of V (and the tile) only, never of M."""
    if interp:
        return BN * max(1, triton.cdiv(triton.cdiv(V, 4), BN))  # about 4 splits
    return 8192


def _vec(t: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A 1-D view of an upstream gradient (may be stride 0) and its stride; a dummy if absent."""
    if t is None:
        return like, 0
    t = t.reshape(-1)
    return t, t.stride(0)


def hidden_forward(x, w, tgt, temperature, need_entropy, ignore_index):
    M, H = x.shape
    V = w.shape[0]
    f32 = dict(dtype=torch.float32, device=x.device)
    logp, stats = _alloc(M, **f32), _alloc(M, 3, **f32)
    ent = _alloc(M if need_entropy else 0, **f32)
    if M == 0:
        return logp, ent, stats
    cfg = _gemm_cfg(x, V)[0]
    split_n = _split_n(V, cfg["BN"], _interp(x))
    nsplit = triton.cdiv(V, split_n)
    part = _alloc(nsplit, M, 4, **f32)
    c = LOG2E / temperature
    _fwd_split_kernel[(triton.cdiv(M, cfg["BM"]), nsplit)](
        x, w, tgt, part, M, V, H, split_n, x.stride(0), x.stride(1), w.stride(0), w.stride(1),
        tgt.stride(0), c, NEED_ENT=need_entropy, PREC=_prec(x.dtype), **cfg)
    br = 128
    _fwd_merge_kernel[(triton.cdiv(M, br),)](
        part, tgt, logp, ent if need_entropy else logp, stats, M, V, nsplit, tgt.stride(0),
        ignore_index, NEED_ENT=need_entropy, BR=br, num_warps=4)
    return logp, ent, stats


def hidden_backward(g_logp, g_ent, x, w, tgt, logp, stats, temperature, ignore_index, need_dx,
                    need_dw):
    M, H = x.shape
    V = w.shape[0]
    dev = x.device
    dx_acc = torch.zeros(M, H, dtype=torch.float32, device=dev) if need_dx else None
    dw = _alloc(V if need_dw else 0, H, dtype=w.dtype, device=dev)
    if M == 0 or not (need_dx or need_dw) or (g_logp is None and g_ent is None):
        if need_dw:
            dw.zero_()
        return (dx_acc.to(x.dtype) if need_dx else x.new_empty(0, H)), dw
    cfg, dx_cfg, dw_cfg = _gemm_cfg(x, V)
    budget = _SLAB_BYTES_INTERP if _interp(x) else _SLAB_BYTES
    align = max(_SLAB_ALIGN, cfg["BN"], dx_cfg["BK"])  # slab edges on tile and K-step edges
    vs = max(align, budget // (M * x.element_size()) // align * align)
    vs = min(vs, triton.cdiv(V, align) * align)
    slab = _alloc(M, vs, dtype=x.dtype, device=dev)
    glp, s_glp = _vec(g_logp, logp)
    gh, s_gh = _vec(g_ent, logp)
    c, inv_t, prec = LOG2E / temperature, 1.0 / temperature, _prec(x.dtype)
    for v0 in range(0, V, vs):
        v1 = min(v0 + vs, V)
        n = v1 - v0
        _bwd_dlogits_kernel[(triton.cdiv(M, cfg["BM"]), triton.cdiv(n, cfg["BN"]))](
            x, w, tgt, logp, stats, glp, gh, slab, M, V, H, v0, v1, vs,
            x.stride(0), x.stride(1), w.stride(0), w.stride(1), tgt.stride(0), s_glp, s_gh,
            c, inv_t, ignore_index, HAS_GLP=g_logp is not None, HAS_GH=g_ent is not None,
            PREC=prec, **cfg)
        ws = w[v0:v1]
        if need_dx:  # dX_acc[M, H] += dZ[M, n] @ W[v0:v1]
            _mm_kernel[(triton.cdiv(M, dx_cfg["BM"]) * triton.cdiv(H, dx_cfg["BN"]),)](
                slab, ws, dx_acc, M, H, n, vs, 1, ws.stride(0), ws.stride(1), H, 1,
                ACC=True, PREC=prec, **dx_cfg)
        if need_dw:  # dW[v0:v1] = dZ[M, n]^T @ X[M, H]
            dws = dw[v0:v1]
            _mm_kernel[(triton.cdiv(n, dw_cfg["BM"]) * triton.cdiv(H, dw_cfg["BN"]),)](
                slab, x, dws, n, H, M, 1, vs, x.stride(0), x.stride(1), dws.stride(0),
                dws.stride(1), ACC=False, PREC=prec, **dw_cfg)
    del slab  # before the cast: peak extra memory = max(acc + slab, acc + dX)
    dx = (dx_acc if x.dtype == torch.float32 else dx_acc.to(x.dtype)) if need_dx \
        else x.new_empty(0, H)
    return dx, dw
