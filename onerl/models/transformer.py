"""One compact decoder for the Qwen2 and Llama families, with two forwards over one set of weights.

* ``Transformer.forward(input_ids, cu_seqlens)``: the packed variable-length training forward.
  input_ids [T] holds several sequences back to back (no padding), cu_seqlens [S+1] their
  boundaries; returns final hidden states [T, H]. The LM head is applied by the caller
  (``model.lm_head_weight``; ``model.logits(hidden)`` for convenience). Given ``positions`` and
  an ``attend`` function instead, it runs any other token layout (``onerl.prefix``: a prompt
  shared by several sequences computed once).
* ``Transformer.forward_paged(input_ids, positions, batch, kv_cache)``: the engine's forward over
  a paged KV cache (``onerl.engine``): a prefill writes the K/V of whole sequences and attends
  causally among them; a decode step writes one token per sequence and attends through block
  tables with ``paged_attention``.

The q/k/v and gate/up projections are stored fused (``qkv_proj``, ``gate_up_proj``): the fused
tensors ARE the parameters (one matmul each in both forwards, identical elementwise optimizer
math); ``onerl.models.checkpoint`` splits them into Hugging Face names on save and joins them on
load. On the CPU the four projections run through ``onerl.models.linear`` (oneDNN for
fp32 training shapes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from onerl_kernels import paged_attention, write_kv

from . import fused_grad
from .linear import Linear

try:  # flash-attn is optional; used for the packed forward on CUDA when installed
    from flash_attn import flash_attn_varlen_func
except ImportError:  # pragma: no cover - not installed on the development machines
    flash_attn_varlen_func = None

_MM_OUT_DTYPE: dict[str, bool] = {}  # device type -> torch.mm(..., out_dtype=fp32) works there
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    """The subset of a Hugging Face config.json the decoder needs (``extra`` keeps the rest)."""
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    torch_dtype: str = "float32"
    eos_token_id: int | list[int] | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_hf(cls, d: dict) -> "ModelConfig":
        """Build from a config.json dict (legacy ``rope_theta``/``rope_scaling`` or the newer
        ``rope_parameters``). Raises ValueError naming the field that is missing or unsupported."""
        mt = d.get("model_type")
        if mt not in ARCHITECTURES:
            raise ValueError(f"config.json: model_type must be one of {tuple(ARCHITECTURES)}, "
                             f"got {mt!r}")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads"):
            if not isinstance(d.get(key), int) or d[key] <= 0:
                raise ValueError(f"config.json: {key} must be a positive integer, "
                                 f"got {d.get(key)!r}")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act must be 'silu', got {d['hidden_act']!r}")
        if d.get("use_sliding_window", False):
            raise ValueError("config.json: use_sliding_window=true is not supported")
        hq = d["num_attention_heads"]
        hkv = d.get("num_key_value_heads") or hq
        if hq % hkv:
            raise ValueError(f"config.json: num_attention_heads ({hq}) must be a multiple of "
                             f"num_key_value_heads ({hkv})")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise ValueError(f"config.json: rope type {kind!r} is not supported "
                             f"(one of {ROPE_TYPES})")
        bias = bool(d.get("attention_bias", mt == "qwen2"))
        dtype = str(d.get("torch_dtype") or d.get("dtype") or "float32").replace("torch.", "")
        known = {f for f in cls.__dataclass_fields__} | {
            "rope_parameters", "attention_bias", "num_key_value_heads", "dtype", "architectures"}
        return cls(
            model_type=mt, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=hq, num_key_value_heads=hkv,
            head_dim=d.get("head_dim") or d["hidden_size"] // hq,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=theta,
            rope_scaling=None if kind == "default" else {**rope, "rope_type": kind},
            qkv_bias=bias, o_bias=bias and mt == "llama", mlp_bias=bool(d.get("mlp_bias", False)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            torch_dtype=dtype,
            eos_token_id=d.get("eos_token_id"),
            extra={k: v for k, v in d.items() if k not in known})

    def to_hf(self) -> dict:
        """config.json contents (legacy rope keys: transformers 4.x, 5.x and vLLM all read them)."""
        d = dict(self.extra)
        d.update(architectures=[ARCHITECTURES[self.model_type]], model_type=self.model_type,
                 vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                 intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                 num_attention_heads=self.num_attention_heads,
                 num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
                 max_position_embeddings=self.max_position_embeddings, hidden_act="silu",
                 rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
                 rope_scaling=self.rope_scaling, tie_word_embeddings=self.tie_word_embeddings,
                 torch_dtype=self.torch_dtype, eos_token_id=self.eos_token_id)
        if self.model_type == "llama":
            d.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        return d

    @property
    def dtype(self) -> torch.dtype:
        dt = getattr(torch, self.torch_dtype, None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"config.json: unknown torch_dtype {self.torch_dtype!r}")
        return dt


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies [head_dim/2] (fp32) for the config's RoPE type."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    s = cfg.rope_scaling
    if s is None:
        return inv
    factor = float(s["factor"])
    if s["rope_type"] == "linear":
        return inv / factor
    # llama3: long wavelengths are divided by factor, short ones kept, a smooth ramp in between
    lo, hi = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    ctx = float(s.get("original_max_position_embeddings", cfg.max_position_embeddings))
    wavelen = 2 * math.pi / inv
    ramp = ((ctx / wavelen - lo) / (hi - lo)).clamp(0.0, 1.0)
    smooth = (1 - ramp) * inv / factor + ramp * inv
    keep_or_smooth = torch.where(wavelen < ctx / hi, inv, smooth)
    return torch.where(wavelen > ctx / lo, inv / factor, keep_or_smooth)


class Rotary(nn.Module):
    """cos/sin tables [max_pos, head_dim] in the model dtype, grown on demand (not saved)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, self.cos, self.sin = cfg, None, None

    def ensure(self, n: int, device, dtype) -> None:
        if self.cos is not None and self.cos.shape[0] >= n and self.cos.device == device \
                and self.cos.dtype == dtype:
            return
        n = max(n, 256, 1 << (n - 1).bit_length())
        with torch.inference_mode(False):  # normal tensors even when first built by the engine
            freqs = torch.outer(torch.arange(n, dtype=torch.float32), rope_inv_freq(self.cfg))
            emb = torch.cat([freqs, freqs], dim=-1).to(device)
            self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, positions: torch.Tensor):
        """positions [T] -> cos, sin [T, 1, D] (index_select: far cheaper than [] on CPU)."""
        return (self.cos.index_select(0, positions).unsqueeze(1),
                self.sin.index_select(0, positions).unsqueeze(1))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D]; cos/sin [T, 1, D]: x * cos + rotate_half(x) * sin."""
    if fused_grad.applies(x, cos, sin) and not (cos.requires_grad or sin.requires_grad):
        return fused_grad.rope(x, cos, sin)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_grad.applies(x, self.weight):   # CPU fp32: one C++ pass per row, both ways
            return fused_grad.rms_norm(x, self.weight, self.eps)
        h = x.to(torch.promote_types(x.dtype, torch.float32))   # fp32 math (fp64 stays fp64)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def varlen_attention(q, k, v, cu_seqlens: torch.Tensor, max_seqlen: int, scale: float):
    """Causal attention within each packed sequence. q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D].

    flash-attn varlen on CUDA when installed; otherwise one SDPA call over the sequences right-
    padded to max_seqlen (with right padding a causal mask never lets a real query see a pad key,
    so no extra mask is needed; padded rows are dropped)."""
    T, Hq, D = q.shape
    if flash_attn_varlen_func is not None and q.is_cuda:
        cu = cu_seqlens.to(torch.int32)
        return flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, softmax_scale=scale,
                                      causal=True)
    gqa = dict(enable_gqa=True) if k.shape[1] != Hq else {}
    S = cu_seqlens.numel() - 1
    if S == 1:
        o = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                           is_causal=True, scale=scale, **gqa)
        return o.transpose(0, 1)
    starts = cu_seqlens[:-1]
    seq = torch.repeat_interleave(torch.arange(S, device=q.device), cu_seqlens.diff(),
                                  output_size=T)
    dest = seq * max_seqlen + torch.arange(T, device=q.device) - starts[seq]

    def pad(x):
        out = x.new_zeros(S * max_seqlen, *x.shape[1:])
        return out.index_copy(0, dest, x).view(S, max_seqlen, *x.shape[1:]).transpose(1, 2)

    o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True, scale=scale, **gqa)
    return o.transpose(1, 2).reshape(S * max_seqlen, Hq, D).index_select(0, dest)


@dataclass
class PagedBatch:
    """What a paged forward needs besides tokens (built by the engine; shapes for T tokens, B seqs).

    prefill: slot_mapping [T], cu_seqlens [B+1], max_seqlen (whole sequences from position 0).
    decode: slot_mapping [B], block_tables int32 [B, max_blocks], seq_lens int32 [B] (incl. the
    current token)."""
    is_prefill: bool
    slot_mapping: torch.Tensor
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    block_tables: torch.Tensor | None = None
    seq_lens: torch.Tensor | None = None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hq, self.hkv, self.d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.scale = self.d ** -0.5
        self.qkv_proj = Linear(cfg.hidden_size, (self.hq + 2 * self.hkv) * self.d,
                               bias=cfg.qkv_bias)
        self.o_proj = Linear(self.hq * self.d, cfg.hidden_size, bias=cfg.o_bias)

    def _qkv(self, x, cos, sin):
        """x [T, H] -> q [T, Hq, D], k, v [T, Hkv, D] (RoPE applied to q and k in one pass)."""
        qkv = self.qkv_proj(x).view(x.shape[0], self.hq + 2 * self.hkv, self.d)
        qk = apply_rope(qkv[:, :self.hq + self.hkv], cos, sin)
        return qk[:, :self.hq], qk[:, self.hq:], qkv[:, self.hq + self.hkv:]

    def forward(self, x, cos, sin, attend):
        """Training forward; ``attend(q, k, v, scale)`` is the attention over the token layout."""
        q, k, v = self._qkv(x, cos, sin)
        o = attend(q, k, v, self.scale)
        return self.o_proj(o.reshape(x.shape[0], -1))

    def forward_paged(self, x, cos, sin, batch: PagedBatch, kv):
        q, k, v = self._qkv(x, cos, sin)
        write_kv(k, v, kv[0], kv[1], batch.slot_mapping)
        if batch.is_prefill:
            o = varlen_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, self.scale)
        else:
            o = paged_attention(q, kv[0], kv[1], batch.block_tables, batch.seq_lens, self.scale)
        return self.o_proj(o.reshape(x.shape[0], -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):
        gu = self.gate_up_proj(x)
        if fused_grad.applies(gu):
            return self.down_proj(fused_grad.silu_mul(gu))
        gate, up = gu.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, *attn_args, paged: bool = False):
        attn = self.self_attn.forward_paged if paged else self.self_attn
        x = x + attn(self.input_layernorm(x), cos, sin, *attn_args)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Qwen2 / Llama decoder. Parameters are plain tensors the trainer optimizes in place; the
    engine reads the same tensors (no copy)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else \
            nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg)
        self.gradient_checkpointing = False

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, H]: the LM head (the embedding matrix when tied)."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> fp32 logits [..., V]. Low-precision inputs are multiplied with fp32
        accumulation and an fp32 result (never rounded to bf16), as the trainer's kernel does."""
        w = self.lm_head_weight
        if hidden.dtype == torch.float32:
            return F.linear(hidden, w)
        flat = hidden.reshape(-1, hidden.shape[-1])
        if _MM_OUT_DTYPE.get(flat.device.type, True):
            try:
                return torch.mm(flat, w.t(), out_dtype=torch.float32).view(*hidden.shape[:-1], -1)
            except (TypeError, RuntimeError, NotImplementedError):
                _MM_OUT_DTYPE[flat.device.type] = False
        return F.linear(hidden.float(), w.float())

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, positions: torch.Tensor | None = None,
                attend=None) -> torch.Tensor:
        """Packed training forward. input_ids [T] (or [1, T]), cu_seqlens int [S+1] with
        cu_seqlens[0] = 0 and cu_seqlens[-1] = T (None: one sequence). Returns hidden [T, H].

        Any other token layout: ``positions`` [T] (all < max_seqlen) and ``attend(q [T, Hq, D],
        k, v [T, Hkv, D], scale) -> [T, Hq, D]``, which says who sees whom (``onerl.prefix``: a
        prompt shared by several sequences computed once); cu_seqlens is then unused."""
        ids = input_ids.reshape(-1)
        T = ids.numel()
        if attend is None:
            if cu_seqlens is None:
                cu_seqlens = torch.tensor([0, T], device=ids.device)
            lens = cu_seqlens.diff()
            if max_seqlen is None:
                max_seqlen = int(lens.max()) if T else 0
            seq = torch.repeat_interleave(torch.arange(lens.numel(), device=ids.device), lens,
                                          output_size=T)
            positions = torch.arange(T, device=ids.device) - cu_seqlens[seq]

            def attend(q, k, v, scale):
                return varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale)
        x = self.embed_tokens(ids)
        self.rotary.ensure(max_seqlen, x.device, x.dtype)
        cos, sin = self.rotary(positions)
        for layer in self.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, attend, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attend)
        return self.norm(x)

    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: PagedBatch,
                      kv_cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Engine forward: input_ids/positions [T]; kv_cache[layer] = (k, v) each
        [num_blocks, block_size, Hkv, D]. Returns hidden [T, H]. Call ``rotary.ensure`` first
        (the engine does, for its maximum length)."""
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(positions)
        for layer, kv in zip(self.layers, kv_cache):
            x = layer(x, cos, sin, batch, kv, paged=True)
        return self.norm(x)
