"""paged_attention: decode attention reading K/V through block tables (and a chunked-prefill twin).

Decode. q [B, Hq, D] holds one query token per sequence; sequence b attends to its positions
[0, seq_lens[b]) (the current token's K/V already written), read from k_cache/v_cache
[num_blocks, block_size, Hkv, D] through block_tables int32 [B, max_blocks]:

    out[b, h] = softmax(scale * q[b, h] . K_b^T) V_b,    K_b, V_b = kv head h // (Hq / Hkv)

out [B, Hq, D] in q's dtype, fp32 accumulation; seq_len 0 gives zeros.

GPU (Triton): program (b, kv head, split) packs the G = Hq/Hkv query heads of one KV head into
the rows of one tile (padded to 16), walks BLOCK_N positions at a time (each position's block id
looked up from the table, so any block size works, 1 included) with an online softmax in the
exp2 domain, and either writes the output directly (one split) or a partial (normalised output
+ log2-sum-exp) per split. Split-KV is used when B * Hkv programs cannot fill the GPU; a second
tiny kernel merges the splits of each (b, head) in a fixed order, so results are deterministic.
Lengths are runtime values: a grid sized from max_blocks serves any seq_lens (CUDA graphs).

CPU: the C++ twin (csrc/cpu/paged_attention.cpp) reads K/V rows straight through the block
table (two passes per sequence and KV head: scores of its G query heads, then the V sum; no
gather copy, 2-4x faster than the torch path here). The torch path (also the GPU fallback):
the K/V rows of all sequences are gathered at once by slot ([B, L, Hkv, D], L = the
longest sequence rounded up to a block; positions past a sequence's end read its position 0,
which is always written, and are masked), and the G query heads of a KV head become G "query
rows" of one batched scaled_dot_product_attention call.

Prefill (paged_prefill_attention): q [Nq, Hq, D] packs the new tokens of B sequences
(cu_seqlens_q [B+1]); they are the LAST tokens of their sequences (total lengths seq_lens, all
K/V in the cache), and query i of a chunk of m sees positions [0, seq_len - m + i].
"""
from __future__ import annotations

import math

import torch

from . import reference
from ._backend import _C, resolve
from .paged_attention_triton import _decode_triton, _prefill_triton
from .paged_kv import _eager_cpp, check_caches

BACKENDS = ("triton", "cpp", "torch")


# ----------------------------------------------------------------------------- torch path


def _gather_kv(cache, slots):
    """[B, Hkv, L, D] rows of the cache at slots [B, L] (a strided view, no extra copy)."""
    B, L = slots.shape
    rows = cache.view(-1, cache.shape[2] * cache.shape[3]).index_select(0, slots.reshape(-1))
    return rows.view(B, L, *cache.shape[2:]).transpose(1, 2)


def _decode_torch(q, k_cache, v_cache, block_tables, seq_lens, scale):
    B, Hq, D = q.shape
    bs, Hkv = k_cache.shape[1], k_cache.shape[2]
    if q.device.type == "cpu":  # free on CPU; trims the gather to the longest sequence
        n_blocks = max(1, -(-int(seq_lens.max()) // bs)) if B else 1
    else:
        n_blocks = block_tables.shape[1]
    n_blocks = min(n_blocks, block_tables.shape[1])
    # Positions past a sequence's end read its position 0 instead (always written, so never
    # NaN/inf garbage) and are masked out of the softmax.
    pos = torch.arange(n_blocks * bs, device=q.device)[None]
    valid = pos < seq_lens[:, None]
    pos = torch.where(valid, pos, 0)
    slots = block_tables.long().gather(1, pos // bs) * bs + pos % bs
    slots = slots.clamp(0, k_cache.shape[0] * bs - 1)  # seq_len 0: any slot, output zeroed below
    k, v = _gather_kv(k_cache, slots), _gather_kv(v_cache, slots)
    out = torch.nn.functional.scaled_dot_product_attention(
        q.view(B, Hkv, Hq // Hkv, D), k, v, attn_mask=valid[:, None, None, :], scale=scale)
    return out.reshape(B, Hq, D).masked_fill((seq_lens == 0)[:, None, None], 0)


_CPP_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _decode_cpp(q, k_cache, v_cache, block_tables, seq_lens, scale):
    B, Hq, D = q.shape
    out = torch.empty(B, Hq, D, dtype=q.dtype)
    _C.paged_attention_cpu(q.data_ptr(), q.stride(0), q.stride(1), k_cache.data_ptr(),
                           v_cache.data_ptr(), block_tables.data_ptr(), block_tables.stride(0),
                           seq_lens.data_ptr(), out.data_ptr(), B, Hq, k_cache.shape[2], D,
                           k_cache.shape[1], k_cache.shape[0], block_tables.shape[1], scale,
                           _CPP_DTYPES[q.dtype])
    return out


def _prefill_torch(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale):
    return reference.paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q,
                                             seq_lens, scale)


# ----------------------------------------------------------------------------- custom ops


@torch.library.custom_op("onerl::paged_attention", mutates_args=())
def _paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                     num_splits: int, backend: str) -> torch.Tensor:
    which = resolve("paged_attention", backend, q.device, BACKENDS)
    if which == "triton":
        return _decode_triton(q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits)
    if which == "cpp" and k_cache.is_contiguous() and v_cache.is_contiguous():
        return _decode_cpp(q, k_cache, v_cache, block_tables, seq_lens, scale)
    return _decode_torch(q, k_cache, v_cache, block_tables, seq_lens, scale)


@_paged_attention.register_fake
def _(q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits, backend):
    return q.new_empty(q.shape)


@torch.library.custom_op("onerl::paged_prefill_attention", mutates_args=())
def _paged_prefill(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor,
                   seq_lens: torch.Tensor, scale: float, max_seqlen_q: int,
                   backend: str) -> torch.Tensor:
    which = resolve("paged_prefill_attention", backend, q.device, BACKENDS)
    if which == "triton":
        return _prefill_triton(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                               max_seqlen_q)
    return _prefill_torch(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)


@_paged_prefill.register_fake
def _(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_seqlen_q, backend):
    return q.new_empty(q.shape)


# ----------------------------------------------------------------------------- public API


def _check_common(op, q, k_cache, v_cache, block_tables, seq_lens, n_seqs):
    check_caches(op, k_cache, v_cache)
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"{op}: q must be a floating [tokens, q_heads, head_dim] tensor, got "
                         f"{getattr(q, 'shape', type(q))}")
    if q.shape[2] != k_cache.shape[3]:
        raise ValueError(f"{op}: q head_dim {q.shape[2]} != cache head_dim {k_cache.shape[3]}")
    if q.shape[1] % k_cache.shape[2]:
        raise ValueError(f"{op}: q_heads {q.shape[1]} is not a multiple of kv_heads "
                         f"{k_cache.shape[2]}")
    if q.dtype != k_cache.dtype:
        raise TypeError(f"{op}: q is {q.dtype}, the cache is {k_cache.dtype}")
    if not isinstance(block_tables, torch.Tensor) or block_tables.dtype != torch.int32 \
            or block_tables.dim() != 2 or block_tables.shape[0] != n_seqs:
        raise ValueError(f"{op}: block_tables must be int32 [{n_seqs}, max_blocks], got "
                         f"{getattr(block_tables, 'dtype', type(block_tables))} "
                         f"{tuple(getattr(block_tables, 'shape', ()))}")
    if not isinstance(seq_lens, torch.Tensor) or seq_lens.dtype != torch.int32 \
            or seq_lens.shape != (n_seqs,):
        raise ValueError(f"{op}: seq_lens must be int32 [{n_seqs}], got "
                         f"{getattr(seq_lens, 'dtype', type(seq_lens))} "
                         f"{tuple(getattr(seq_lens, 'shape', ()))}")
    for name, t in (("k_cache", k_cache), ("block_tables", block_tables), ("seq_lens", seq_lens)):
        if t.device != q.device:
            raise ValueError(f"{op}: {name} is on {t.device}, q on {q.device}")
    if k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError(f"{op}: the caches' head_dim must be contiguous (stride 1)")


def paged_attention(q, k_cache, v_cache, block_tables, seq_lens, scale=None, *,
                    backend: str = "auto", num_splits: int | None = None):
    """Decode attention of q [B, Hq, D] over the paged cache; returns [B, Hq, D] in q's dtype.

    block_tables int32 [B, max_blocks], seq_lens int32 [B] (current token included), scale
    defaults to 1/sqrt(D). ``num_splits`` forces the split-KV factor of the Triton kernel
    (default: chosen from B, Hkv and max_blocks, never from seq_lens' values).
    """
    _check_common("paged_attention", q, k_cache, v_cache, block_tables, seq_lens, q.shape[0])
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"paged_attention: num_splits must be >= 1, got {num_splits}")
    if q.stride(2) != 1:
        q = q.contiguous()
    if block_tables.stride(1) != 1:
        block_tables = block_tables.contiguous()
    seq_lens = seq_lens.contiguous()
    if _eager_cpp(backend, q) and k_cache.is_contiguous() and v_cache.is_contiguous():
        return _decode_cpp(q, k_cache, v_cache, block_tables, seq_lens, scale)  # no op dispatch
    return _paged_attention(q, k_cache, v_cache, block_tables, seq_lens, scale,
                            -1 if num_splits is None else int(num_splits), backend)


def paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens,
                            scale=None, *, max_seqlen_q: int | None = None,
                            backend: str = "auto"):
    """Causal attention of a packed chunk of new tokens q [Nq, Hq, D] over their sequences'
    cached prefixes and themselves; cu_seqlens_q int32 [B+1] (cu[0] = 0, cu[B] = Nq);
    seq_lens int32 [B] = total lengths including the chunk. Returns [Nq, Hq, D].
    ``max_seqlen_q`` (an int bound on the chunk lengths) sizes the GPU grid; default Nq."""
    B = block_tables.shape[0] if isinstance(block_tables, torch.Tensor) else -1
    _check_common("paged_prefill_attention", q, k_cache, v_cache, block_tables, seq_lens, B)
    if not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dtype != torch.int32 \
            or cu_seqlens_q.shape != (B + 1,) or cu_seqlens_q.device != q.device:
        raise ValueError(f"paged_prefill_attention: cu_seqlens_q must be int32 [{B + 1}] on "
                         f"{q.device}, got {getattr(cu_seqlens_q, 'dtype', type(cu_seqlens_q))} "
                         f"{tuple(getattr(cu_seqlens_q, 'shape', ()))}")
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    if q.stride(2) != 1:
        q = q.contiguous()
    if block_tables.stride(1) != 1:
        block_tables = block_tables.contiguous()
    mq = q.shape[0] if max_seqlen_q is None else int(max_seqlen_q)
    return _paged_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q.contiguous(),
                          seq_lens.contiguous(), scale, mq, backend)
