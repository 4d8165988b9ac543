"""Paged KV cache writes: write_kv (new K/V rows into their slots) and copy_blocks (copy-on-write).

Layout (one pair of caches per layer): k_cache, v_cache [num_blocks, block_size, Hkv, D], same
dtype, contiguous. A token's slot is ``block_id * block_size + offset``; the block table of a
sequence lists its blocks in order, so position p lives at slot
``block_table[p // block_size] * block_size + p % block_size``.

    write_kv:    k_cache.view(-1, Hkv, D)[slot_mapping[i]] = k[i]   (same for v), slot -1 = skip
    copy_blocks: k_cache[dst[i]] = k_cache[src[i]]                  (same for v), whole blocks

Both mutate the caches in place (custom ops with ``mutates_args``), launch once, never sync, and
work under torch.compile and CUDA graphs. k and v [N, Hkv, D] may have any token stride (views into
a fused QKV projection are fine) but each token's [Hkv, D] row must be contiguous (otherwise it
is copied first). Backends: CUDA C++ (csrc/cuda/paged_kv.cu), the C++ CPU twin
(csrc/cpu/paged_kv.cpp) and torch indexing. Slots or block ids outside the cache raise on the CPU
and are skipped by the CUDA kernels (they cannot raise); negative slots are always skipped.
copy_blocks needs distinct destinations that are not also sources.
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import _C, resolve, stream_of

BACKENDS = ("cuda", "cpp", "torch")


def _row_args(t: torch.Tensor):
    """(data_ptr, token stride in bytes) of a [N, Hkv, D] tensor with contiguous rows."""
    return t.data_ptr(), t.stride(0) * t.element_size()


def _eager_cpp(backend: str, t: torch.Tensor) -> bool:
    """Whether a call may run the C++ CPU twin directly instead of through its custom op: CPU
    tensors, backend auto/cpp, eager inference mode (no graph capture, no version counters to
    bump). Saves the op dispatch (tens of microseconds) on every engine decode step."""
    return not torch.compiler.is_compiling() and t.device.type == "cpu" \
        and backend in ("auto", "cpp") and _C is not None and torch.is_inference_mode_enabled()


@torch.library.custom_op("onerl::write_kv", mutates_args=("k_cache", "v_cache"))
def _write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              slot_mapping: torch.Tensor, backend: str) -> None:
    which = resolve("write_kv", backend, k_cache.device, BACKENDS)
    if which == "torch":
        reference.write_kv(k, v, k_cache, v_cache, slot_mapping)
        return
    (kp, ks), (vp, vs) = _row_args(k), _row_args(v)
    row_bytes = k_cache.shape[2] * k_cache.shape[3] * k_cache.element_size()
    num_slots = k_cache.shape[0] * k_cache.shape[1]
    args = (kp, vp, k_cache.data_ptr(), v_cache.data_ptr(), slot_mapping.data_ptr(), k.shape[0],
            row_bytes, ks, vs, num_slots)
    if which == "cuda":
        _C.write_kv_cuda(*args, stream_of(k_cache))
    else:
        _C.write_kv_cpu(*args)


@_write_kv.register_fake
def _(k, v, k_cache, v_cache, slot_mapping, backend):
    return None


@torch.library.custom_op("onerl::copy_blocks", mutates_args=("k_cache", "v_cache"))
def _copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, src: torch.Tensor,
                 dst: torch.Tensor, backend: str) -> None:
    which = resolve("copy_blocks", backend, k_cache.device, BACKENDS)
    if which == "torch":
        k_cache[dst] = k_cache[src]
        v_cache[dst] = v_cache[src]
        return
    block_bytes = k_cache[0].numel() * k_cache.element_size()
    args = (k_cache.data_ptr(), v_cache.data_ptr(), src.data_ptr(), dst.data_ptr(), src.numel(),
            block_bytes, k_cache.shape[0])
    if which == "cuda":
        _C.copy_blocks_cuda(*args, stream_of(k_cache))
    else:
        _C.copy_blocks_cpu(*args)


@_copy_blocks.register_fake
def _(k_cache, v_cache, src, dst, backend):
    return None


def check_caches(op: str, k_cache, v_cache) -> None:
    """The cache pair must be 4-D [num_blocks, block_size, Hkv, D], same shape/dtype/device."""
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(c, torch.Tensor) or c.dim() != 4:
            raise ValueError(f"{op}: {name} must be a [num_blocks, block_size, kv_heads, head_dim] "
                             f"tensor, got {getattr(c, 'shape', type(c))}")
    if v_cache.shape != k_cache.shape or v_cache.dtype != k_cache.dtype \
            or v_cache.device != k_cache.device:
        raise ValueError(f"{op}: v_cache {tuple(v_cache.shape)} {v_cache.dtype} {v_cache.device} "
                         f"differs from k_cache {tuple(k_cache.shape)} {k_cache.dtype} "
                         f"{k_cache.device}")


def _rows(name: str, t, k_cache) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[1:] != k_cache.shape[2:]:
        raise ValueError(f"write_kv: {name} must be [N, {k_cache.shape[2]}, {k_cache.shape[3]}] "
                         f"(the cache's kv_heads, head_dim), got {getattr(t, 'shape', type(t))}")
    if t.dtype != k_cache.dtype:
        raise TypeError(f"write_kv: {name} is {t.dtype}, the cache is {k_cache.dtype}")
    if t.device != k_cache.device:
        raise ValueError(f"write_kv: {name} is on {t.device}, the cache on {k_cache.device}")
    if t.stride(2) != 1 or t.stride(1) != t.shape[2]:
        t = t.contiguous()
    return t


def write_kv(k, v, k_cache, v_cache, slot_mapping, *, backend: str = "auto") -> None:
    """Write the K/V rows k, v [N, Hkv, D] into their cache slots (in place; slot -1 = skip).

    slot_mapping: int64 [N] on the cache's device, slot = block_id * block_size + offset.
    """
    check_caches("write_kv", k_cache, v_cache)
    if not k_cache.is_contiguous() or not v_cache.is_contiguous():
        raise ValueError("write_kv: k_cache and v_cache must be contiguous (they are written in "
                         "place)")
    k, v = _rows("k", k, k_cache), _rows("v", v, k_cache)
    if k.shape[0] != v.shape[0]:
        raise ValueError(f"write_kv: k has {k.shape[0]} tokens, v has {v.shape[0]}")
    if not isinstance(slot_mapping, torch.Tensor) or slot_mapping.dtype != torch.int64 \
            or slot_mapping.shape != (k.shape[0],):
        raise ValueError(f"write_kv: slot_mapping must be int64 [{k.shape[0]}], got "
                         f"{getattr(slot_mapping, 'dtype', type(slot_mapping))} "
                         f"{tuple(getattr(slot_mapping, 'shape', ()))}")
    if slot_mapping.device != k_cache.device:
        raise ValueError(f"write_kv: slot_mapping is on {slot_mapping.device}, the cache on "
                         f"{k_cache.device}")
    slot_mapping = slot_mapping.contiguous()
    if _eager_cpp(backend, k_cache):  # the engine's CPU decode: skip the op dispatch
        (kp, ks), (vp, vs) = _row_args(k), _row_args(v)
        _C.write_kv_cpu(kp, vp, k_cache.data_ptr(), v_cache.data_ptr(), slot_mapping.data_ptr(),
                        k.shape[0], k_cache.shape[2] * k_cache.shape[3] * k_cache.element_size(),
                        ks, vs, k_cache.shape[0] * k_cache.shape[1])
        return
    _write_kv(k, v, k_cache, v_cache, slot_mapping, backend)


def copy_blocks(k_cache, v_cache, src, dst, *, backend: str = "auto") -> None:
    """Copy whole blocks src[i] -> dst[i] in both caches (in place). src, dst: int64 [n] on the
    cache's device; destinations distinct and disjoint from the sources."""
    check_caches("copy_blocks", k_cache, v_cache)
    if not k_cache.is_contiguous() or not v_cache.is_contiguous():
        raise ValueError("copy_blocks: k_cache and v_cache must be contiguous")
    for name, t in (("src", src), ("dst", dst)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"copy_blocks: {name} must be an int64 [n] tensor, got "
                             f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
        if t.device != k_cache.device:
            raise ValueError(f"copy_blocks: {name} is on {t.device}, the cache on {k_cache.device}")
    if src.shape != dst.shape:
        raise ValueError(f"copy_blocks: src {tuple(src.shape)} and dst {tuple(dst.shape)} differ")
    _copy_blocks(k_cache, v_cache, src.contiguous(), dst.contiguous(), backend)
