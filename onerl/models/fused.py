"""The engine's paged forward on CPU in fp32 with fused C++ row ops (onerl_kernels' CPU build).

Same math as ``Transformer.forward_paged`` over the same parameters (no copy), in fewer, larger
steps: RMSNorm with the residual add folded in (the residual stream is updated in place),
RoPE applied in place to the q and k heads of the fused QKV projection and the k / v rows
written to the paged cache in the same pass, SiLU(gate) * up in one pass, and decode attention
read straight from the QKV buffer (no copies). Matmuls are the model's own ``F.linear`` calls.
Results equal the module path to float rounding (a few ulp: fused multiply-adds and summation
order), and each row is computed alone, so they do not depend on the batch.

``usable(model, ids)`` says whether this path applies: CPU, fp32 weights, the C++ ops built,
no autograd (the engine runs under ``torch.inference_mode()``), not under ``torch.compile``.
Anything else (CUDA, bf16, training) runs ``model.forward_paged``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from onerl_kernels._backend import _C

from .transformer import PagedBatch, Transformer, varlen_attention

_OPS = ("rms_norm_cpu", "rope_write_kv_cpu", "silu_mul_cpu", "paged_attention_cpu")


def usable(model: Transformer, input_ids: torch.Tensor) -> bool:
    w = model.embed_tokens.weight
    return (_C is not None and all(hasattr(_C, op) for op in _OPS)
            and w.device.type == "cpu" and w.dtype == torch.float32
            and input_ids.device.type == "cpu" and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and model.config.head_dim % 2 == 0
            and model.config.head_dim <= 512)


def _rms(x: torch.Tensor, norm, residual: torch.Tensor | None = None) -> torch.Tensor:
    """norm(residual + x) with residual updated in place (or norm(x) when residual is None)."""
    out = torch.empty(x.shape[0], x.shape[1], dtype=torch.float32)
    _C.rms_norm_cpu(x.data_ptr(), x.stride(0), 0 if residual is None else residual.data_ptr(),
                    norm.weight.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], norm.eps)
    return out


def forward_paged(model: Transformer, input_ids: torch.Tensor, positions: torch.Tensor,
                  batch: PagedBatch, kv_cache: list[tuple[torch.Tensor, torch.Tensor]],
                  last_rows: torch.Tensor | None = None) -> torch.Tensor:
    """``model.forward_paged`` (see there) on the fused CPU path; check ``usable`` first.

    last_rows: token rows whose hidden states are wanted (a prefill's last tokens); the last
    layer's output projection and MLP then run on those rows only. Returns hidden [T or
    len(last_rows), H]."""
    cfg = model.config
    T, Hq, Hkv, D = input_ids.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, \
        cfg.head_dim
    rot = model.rotary
    cos, sin = rot.cos, rot.sin
    if not (cos.is_contiguous() and sin.is_contiguous() and cos.dtype == torch.float32):
        raise ValueError("fused forward: the RoPE tables must be contiguous fp32 (rotary.ensure)")
    positions = positions.contiguous()
    slots = batch.slot_mapping.contiguous()
    if positions.dtype != torch.int64 or positions.shape != (T,):
        raise ValueError("fused forward: positions must be int64 [T]")
    x = F.embedding(input_ids, model.embed_tokens.weight)  # the residual stream (updated in place)
    delta = None
    n = len(model.layers)
    for i, (layer, kv) in enumerate(zip(model.layers, kv_cache)):
        attn, mlp = layer.self_attn, layer.mlp
        h = _rms(x if delta is None else delta, layer.input_layernorm,
                 None if delta is None else x)
        qkv = F.linear(h, attn.qkv_proj.weight, attn.qkv_proj.bias)  # [T, (Hq + 2 Hkv) D]
        k_cache, v_cache = kv
        if slots.dtype != torch.int64 or slots.shape != (T,) or not k_cache.is_contiguous() \
                or not v_cache.is_contiguous() or k_cache.dtype != torch.float32:
            raise ValueError("fused forward: slot_mapping must be int64 [T] and the caches "
                             "contiguous fp32")
        _C.rope_write_kv_cpu(qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr(),
                             positions.data_ptr(), cos.shape[0], T, Hq, Hkv, D,
                             k_cache.data_ptr(), v_cache.data_ptr(), slots.data_ptr(),
                             k_cache.shape[0] * k_cache.shape[1])
        q3 = qkv.view(T, Hq + 2 * Hkv, D)
        if batch.is_prefill:
            o = varlen_attention(q3[:, :Hq], q3[:, Hq:Hq + Hkv], q3[:, Hq + Hkv:],
                                 batch.cu_seqlens, batch.max_seqlen, attn.scale).reshape(T, -1)
        else:
            tables, lens = batch.block_tables, batch.seq_lens
            if tables.dtype != torch.int32 or lens.dtype != torch.int32 \
                    or not tables.is_contiguous() or not lens.is_contiguous():
                raise ValueError("fused forward: block_tables / seq_lens must be contiguous int32")
            o = torch.empty(T, Hq * D, dtype=torch.float32)
            _C.paged_attention_cpu(qkv.data_ptr(), qkv.stride(0), D, k_cache.data_ptr(),
                                   v_cache.data_ptr(), tables.data_ptr(), tables.stride(0),
                                   lens.data_ptr(), o.data_ptr(), T, Hq, Hkv, D,
                                   k_cache.shape[1], k_cache.shape[0], tables.shape[1],
                                   attn.scale, 0)
        if i == n - 1 and last_rows is not None:  # only these rows are read after this layer
            o, x = o.index_select(0, last_rows), x.index_select(0, last_rows)
        delta = F.linear(o, attn.o_proj.weight, attn.o_proj.bias)
        h = _rms(delta, layer.post_attention_layernorm, x)
        gu = F.linear(h, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias)
        act = torch.empty(gu.shape[0], gu.shape[1] // 2, dtype=torch.float32)
        _C.silu_mul_cpu(gu.data_ptr(), gu.stride(0), act.data_ptr(), gu.shape[0], act.shape[1])
        delta = F.linear(act, mlp.down_proj.weight, mlp.down_proj.bias)
    if delta is None:  # no layers
        return _rms(x, model.norm)
    return _rms(delta, model.norm, x)
