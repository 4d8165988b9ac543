"""Triton kernels of paged_attention (decode with split-KV + merge, and chunked prefill).

The math and the tiling are described in paged_attention.py. Both kernels share one online-
softmax step (_attend_tile) in the log2 domain; each tile of BLOCK_N positions looks its block
ids up in the block table (any block size, 1 included). fp32 inputs, and every input under the
interpreter (whose bf16 dots are wrong), use an exact fp32 dot; bf16/fp16 on a GPU feed the
tensor cores with fp32 accumulation.
"""
from __future__ import annotations

import torch

from ._backend import triton_interpreting
from ._triton import tl, triton

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(q, m, l, acc, k_ptr, v_ptr, bt_row, n0, lo, hi, h, block_size, s_kb, s_kt,
                 s_kh, s_vb, s_vt, s_vh, d, d_ok, q_pos, qk_scale, CAUSAL: tl.constexpr,
                 BLOCK_N: tl.constexpr, F32_DOT: tl.constexpr):
    """One online-softmax step (log2 domain) over positions [n0, n0 + BLOCK_N) clipped to
    [lo, hi): q [R, D], running max m [R], sum l [R] and unnormalised output acc [R, D] (fp32);
    qk_scale = scale * log2(e)."""
    pos = n0 + tl.arange(0, BLOCK_N)
    ok = (pos >= lo) & (pos < hi)
    blk = tl.load(bt_row + pos // block_size, mask=ok, other=0).to(tl.int64)
    off = (pos % block_size).to(tl.int64)
    kv_ok = ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + blk[:, None] * s_kb + off[:, None] * s_kt + h * s_kh + d[None, :],
                mask=kv_ok, other=0.0)
    v = tl.load(v_ptr + blk[:, None] * s_vb + off[:, None] * s_vt + h * s_vh + d[None, :],
                mask=kv_ok, other=0.0)
    if F32_DOT:
        s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * qk_scale
    else:
        s = tl.dot(q, tl.trans(k)) * qk_scale
    see = ok[None, :]
    if CAUSAL:
        see = see & (pos[None, :] <= q_pos[:, None])
    s = tl.where(see, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l = l * alpha + tl.sum(p, 1)
    if F32_DOT:
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l, acc


@triton.jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, sl_ptr, out_ptr, po_ptr, plse_ptr,
                   s_qb, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_btb, s_ob, s_oh,
                   qk_scale, block_size, split_len, G, D, n_splits,
                   SPLIT: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, F32_DOT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    sp = tl.program_id(2)
    seq_len = tl.load(sl_ptr + b)
    lo = sp * split_len
    hi = tl.minimum(seq_len, lo + split_len)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_ok = g < G
    d_ok = d < D
    heads = h * G + g
    q = tl.load(q_ptr + b * s_qb + heads[:, None] * s_qh + d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    if F32_DOT:
        q = q.to(tl.float32)
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    bt_row = bt_ptr + b * s_btb
    for n0 in range(lo, hi, BLOCK_N):
        m, l, acc = _attend_tile(q, m, l, acc, k_ptr, v_ptr, bt_row, n0, lo, hi, h, block_size,
                                 s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, d, d_ok, g, qk_scale, False,
                                 BLOCK_N, F32_DOT)
    o = acc / tl.where(l > 0, l, 1.0)[:, None]
    o_mask = g_ok[:, None] & d_ok[None, :]
    if SPLIT:  # normalised partial + its log2-sum-exp (-inf when the split is empty)
        row = (b * G * tl.num_programs(1) + heads) * n_splits + sp
        tl.store(po_ptr + row[:, None] * D + d[None, :], o, mask=o_mask)
        tl.store(plse_ptr + row, tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)),
                                          float("-inf")), mask=g_ok)
    else:
        tl.store(out_ptr + b * s_ob + heads[:, None] * s_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _merge_kernel(po_ptr, plse_ptr, out_ptr, s_ob, s_oh, Hq, D, n_splits,
                  BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, h] = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M), splits in a fixed order."""
    bh = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_ok = s < n_splits
    lse = tl.load(plse_ptr + bh * n_splits + s, mask=s_ok, other=float("-inf"))
    mx = tl.max(lse, 0)
    w = tl.where(s_ok & (lse > float("-inf")), tl.exp2(lse - tl.where(mx > float("-inf"), mx, 0.0)),
                 0.0)
    o = tl.load(po_ptr + (bh * n_splits + s)[:, None] * D + d[None, :],
                mask=(w > 0)[:, None] & (d < D)[None, :], other=0.0)
    tot = tl.sum(w, 0)
    res = tl.sum(o * w[:, None], 0) / tl.where(tot > 0, tot, 1.0)
    tl.store(out_ptr + (bh // Hq) * s_ob + (bh % Hq) * s_oh + d, res.to(out_ptr.dtype.element_ty),
             mask=d < D)


@triton.jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, cu_ptr, sl_ptr, out_ptr,
                    s_qn, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_btb, s_on, s_oh,
                    qk_scale, block_size, G, D,
                    BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, F32_DOT: tl.constexpr):
    """Program (b, kv head, query tile): BLOCK_M queries x the G heads of one KV head as rows."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    q_lo = tl.load(cu_ptr + b)
    m_len = tl.load(cu_ptr + b + 1) - q_lo
    i0 = tl.program_id(2) * BLOCK_M
    if i0 < m_len:
        seq_len = tl.load(sl_ptr + b)
        r = tl.arange(0, BLOCK_M * BLOCK_G)
        i = i0 + r // BLOCK_G
        g = r % BLOCK_G
        r_ok = (i < m_len) & (g < G)
        q_pos = seq_len - m_len + i
        d = tl.arange(0, BLOCK_D)
        d_ok = d < D
        tok = (q_lo + i).to(tl.int64)
        heads = h * G + g
        q = tl.load(q_ptr + tok[:, None] * s_qn + heads[:, None] * s_qh + d[None, :],
                    mask=r_ok[:, None] & d_ok[None, :], other=0.0)
        if F32_DOT:
            q = q.to(tl.float32)
        m = tl.full([BLOCK_M * BLOCK_G], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_M * BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_M * BLOCK_G, BLOCK_D], tl.float32)
        hi = tl.minimum(seq_len, seq_len - m_len + i0 + BLOCK_M)
        bt_row = bt_ptr + b * s_btb
        for n0 in range(0, hi, BLOCK_N):
            m, l, acc = _attend_tile(q, m, l, acc, k_ptr, v_ptr, bt_row, n0, 0, hi, h,
                                     block_size, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, d, d_ok,
                                     q_pos, qk_scale, True, BLOCK_N, F32_DOT)
        o = acc / tl.where(l > 0, l, 1.0)[:, None]
        tl.store(out_ptr + tok[:, None] * s_on + heads[:, None] * s_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=r_ok[:, None] & d_ok[None, :])


def _prefill_triton(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                    max_seqlen_q):
    Nq, Hq, D = q.shape
    bs, Hkv = k_cache.shape[1], k_cache.shape[2]
    G, B = Hq // Hkv, block_tables.shape[0]
    out = q.new_zeros(q.shape)
    if Nq == 0 or B == 0:
        return out
    block_g = triton.next_power_of_2(G)
    block_m = max(1, 64 // block_g) if not triton_interpreting() else max(1, 16 // block_g)
    block_n = 64 if not triton_interpreting() else 16
    _prefill_kernel[(B, Hkv, triton.cdiv(max(max_seqlen_q, 1), block_m))](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), scale * _LOG2E, bs, G, D,
        BLOCK_M=block_m, BLOCK_G=block_g, BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(D)), F32_DOT=_dot_in_fp32(q.dtype), num_warps=4)
    return out


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


def _pick_splits(B: int, Hkv: int, max_len: int, block_n: int, device) -> int:
    """Splits so that B * Hkv * splits programs fill the GPU about twice, each split keeping
    at least 4 tiles; from shapes only (never from seq_lens' values)."""
    programs = B * Hkv
    target = 2 * _num_sms(device)
    if programs >= target:
        return 1
    by_len = max(1, max_len // (4 * block_n))
    return max(1, min(-(-target // programs), by_len, 64))


def _dot_in_fp32(dtype: torch.dtype) -> bool:
    """fp32 inputs (and any input under the interpreter, where bf16 dots are wrong) use an
    exact fp32 dot; fp16/bf16 on a GPU feed the tensor cores with fp32 accumulation."""
    return dtype == torch.float32 or triton_interpreting()


def _decode_triton(q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits):
    B, Hq, D = q.shape
    bs, Hkv = k_cache.shape[1], k_cache.shape[2]
    G = Hq // Hkv
    out = q.new_empty(q.shape)
    if B == 0:
        return out
    block_n = 64 if bs >= 64 or not triton_interpreting() else 16
    max_len = block_tables.shape[1] * bs
    splits = num_splits if num_splits > 0 else _pick_splits(B, Hkv, max_len, block_n, q.device)
    split_len = -(-max(max_len, 1) // splits)
    split_len = -(-split_len // block_n) * block_n
    splits = max(1, -(-max_len // split_len))
    block_g = max(16, triton.next_power_of_2(G))
    block_d = max(16, triton.next_power_of_2(D))
    f32 = dict(dtype=torch.float32, device=q.device)
    po = torch.empty(B * Hq * splits, D, **f32) if splits > 1 else out
    plse = torch.empty(B * Hq * splits, **f32) if splits > 1 else out
    _decode_kernel[(B, Hkv, splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, po, plse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), scale * _LOG2E, bs, split_len, G, D, splits,
        SPLIT=splits > 1, BLOCK_G=block_g, BLOCK_N=block_n, BLOCK_D=block_d,
        F32_DOT=_dot_in_fp32(q.dtype), num_warps=4)
    if splits > 1:
        _merge_kernel[(B * Hq,)](po, plse, out, out.stride(0), out.stride(1), Hq, D, splits,
                                 BLOCK_S=max(2, triton.next_power_of_2(splits)),
                                 BLOCK_D=block_d, num_warps=4)
    return out
