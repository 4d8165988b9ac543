"""Memory planning: does a recipe fit on N GPUs of G GB, and with which budgets?

    onerl plan --recipe pi1-qwen2.5-math-1.5b --gpus 8 --gpu-mem 80 [section.key=value ...]

Per GPU, in bytes (P parameters, b the actor's dtype size, N GPUs; FSDP2 shards over N):

    actor parameters, gradients      P b / N each
    AdamW state                      2 P b / N           (two moments in the parameter dtype)
    FSDP2 gather buffers (N > 1)     (root + 2 layers) b (embeddings / head held for the
                                     forward, one layer gathered plus one prefetched)
    rollout copy (N > 1)             P b                 (the engine decodes with full weights)
    reference model (KL)             P b_ref / N (+ its gather buffers)
    critic (PPO)                     like the actor: 4 P b / N (+ gather buffers)
    KV cache                         2 L Hkv D b per token; the minimum is one group of
                                     n x (prompt + response) tokens, the whole rollout is
                                     (batch / N) n response tokens + (batch / N) prompts
    activations per micro-batch      M b (L H + A) with gradient checkpointing, M b L A without,
                                     A = 6 H + 2 Hq D + 3 Hkv D + 4 I (saved per token and layer),
                                     + 2 M H 4 + 512 MiB for the fused log-prob head

M = max(trainer.micro_batch_tokens, the longest sequence). Usable memory per GPU is 92 % of it
less 1 GiB (CUDA context, allocator slack). The run fits when everything above with the minimum
KV cache is within it; the suggestions are the largest micro-batch (multiple of 1024 tokens)
that fits and the KV budget left beside the configured micro-batch (capped at the whole rollout).
The trainer runs the same check at start-up on CUDA and sizes the KV cache from it.

Model shapes come from a local folder's config.json, the toy model, or the table below.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, ConfigError

GiB = 1024 ** 3
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_Q = dict(model_type="qwen2", num_hidden_layers=28, max_position_embeddings=4096)
KNOWN_MODELS = {  # the Hugging Face config.json numbers of the paper's models
    "qwen/qwen2.5-math-1.5b": dict(_Q, hidden_size=1536, num_attention_heads=12,
                                   num_key_value_heads=2, intermediate_size=8960,
                                   vocab_size=151936, tie_word_embeddings=True),
    "qwen/qwen2.5-math-7b": dict(_Q, hidden_size=3584, num_attention_heads=28,
                                 num_key_value_heads=4, intermediate_size=18944,
                                 vocab_size=152064, tie_word_embeddings=False),
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": dict(
        _Q, hidden_size=1536, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936, tie_word_embeddings=False,
        max_position_embeddings=131072),
    "meta-llama/llama-3.2-3b-instruct": dict(
        model_type="llama", hidden_size=3072, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, intermediate_size=8192, vocab_size=128256,
        tie_word_embeddings=True, max_position_embeddings=131072),
}


def model_shape(path: str) -> dict:
    """config.json-style dict of the model at ``path`` (folder, ``toy`` or a known id)."""
    if path == "toy":
        from .toy.catalog import base_path
        path = str(base_path())
    cfg_file = Path(path) / "config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text())
    if path.lower() in KNOWN_MODELS:
        return dict(KNOWN_MODELS[path.lower()])
    raise ConfigError(f"plan: the shape of model {path!r} is unknown; pass a local model folder "
                      f"(config.json) or one of: {', '.join(KNOWN_MODELS)}")


def param_counts(d: dict) -> tuple[int, int, int]:
    """(total, per decoder layer, root = embeddings + untied head + final norm) parameters."""
    H, L, I, V = d["hidden_size"], d["num_hidden_layers"], d["intermediate_size"], d["vocab_size"]
    hq = d["num_attention_heads"]
    hkv = d.get("num_key_value_heads") or hq
    D = d.get("head_dim") or H // hq
    qkv_bias = d.get("attention_bias", d["model_type"] == "qwen2")
    o_bias = qkv_bias and d["model_type"] == "llama"
    mlp_bias = d.get("mlp_bias", False)
    layer = (H * (hq + 2 * hkv) * D + (hq + 2 * hkv) * D * qkv_bias + hq * D * H + H * o_bias
             + 3 * H * I + (2 * I + H) * mlp_bias + 2 * H)
    root = V * H * (1 if d.get("tie_word_embeddings") else 2) + H
    return L * layer + root, layer, root


@dataclass
class Plan:
    gpus: int
    gpu_gb: float
    usable: float
    terms: dict[str, float] = field(default_factory=dict)   # name -> bytes per GPU (static)
    activations: float = 0.0
    kv_min: float = 0.0
    kv_per_token: float = 0.0
    kv_full_tokens: int = 0
    kv_suggested_tokens: int = 0
    micro_batch_tokens: int = 0
    suggested_micro_batch_tokens: int = 0
    params: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.terms.values()) + self.activations + self.kv_min

    @property
    def fits(self) -> bool:
        return self.total <= self.usable


def _activation_bytes(d: dict, tokens: int, b: int, checkpointing: bool) -> float:
    H, L, I = d["hidden_size"], d["num_hidden_layers"], d["intermediate_size"]
    hq = d["num_attention_heads"]
    hkv = d.get("num_key_value_heads") or hq
    D = d.get("head_dim") or H // hq
    per_layer = 6 * H + 2 * hq * D + 3 * hkv * D + 4 * I
    per_token = (L * H + per_layer) if checkpointing else L * per_layer
    return tokens * b * per_token + 2 * tokens * H * 4 + 512 * 2 ** 20


def make_plan(cfg: Config, gpus: int, gpu_bytes: float, model_dir: str | None = None) -> Plan:
    """The plan of ``cfg`` on ``gpus`` GPUs of ``gpu_bytes``; the model's shape from
    ``model_dir`` (a downloaded folder) or ``cfg.model.path``."""
    if gpus < 1 or gpu_bytes <= 0:
        raise ConfigError("plan: need --gpus >= 1 and --gpu-mem > 0")
    d = model_shape(model_dir or cfg.model.path)
    P, layer, root = param_counts(d)
    b, b_ref = _DTYPE_BYTES[cfg.model.dtype], _DTYPE_BYTES.get(cfg.model.ref_dtype, 2)
    N, sharded = gpus, gpus > 1
    plan = Plan(gpus, gpu_bytes / 1e9, 0.92 * gpu_bytes - GiB, params=P)
    gather = (root + 2 * layer) if sharded else 0
    t = plan.terms
    t["actor parameters"] = P * b / N
    t["actor gradients"] = P * b / N
    t["AdamW state (2 moments)"] = 2 * P * b / N
    if sharded:
        t["FSDP2 gather buffers"] = gather * b
        t["rollout copy of the actor (full)"] = P * b
    a, r = cfg.algo, cfg.rollout
    if a.kl_type is not None and a.kl_coef != 0:
        t["reference model"] = P * b_ref / N + gather * b_ref
    if a.name == "ppo":
        t["critic (params, grads, AdamW)"] = 4 * P * b / N + gather * b
    hkv = d.get("num_key_value_heads") or d["num_attention_heads"]
    D = d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
    plan.kv_per_token = 2 * d["num_hidden_layers"] * hkv * D * b
    seq = cfg.data.max_prompt_tokens + r.max_new_tokens
    rows = max(cfg.trainer.train_batch_size // N, 1)
    plan.kv_full_tokens = rows * r.n * r.max_new_tokens + rows * cfg.data.max_prompt_tokens
    kv_min_tokens = r.kv_budget_tokens or min(r.n * seq, plan.kv_full_tokens)
    plan.kv_min = kv_min_tokens * plan.kv_per_token
    ckpt = cfg.model.gradient_checkpointing
    plan.micro_batch_tokens = max(cfg.trainer.micro_batch_tokens, seq)
    plan.activations = _activation_bytes(d, plan.micro_batch_tokens, b, ckpt)
    static = sum(t.values())
    m = 0
    while m + 1024 <= 1 << 20 and static + plan.kv_min + \
            _activation_bytes(d, m + 1024, b, ckpt) <= plan.usable:
        m += 1024
    plan.suggested_micro_batch_tokens = m
    room = plan.usable - static - plan.activations
    plan.kv_suggested_tokens = max(0, min(plan.kv_full_tokens, int(room // plan.kv_per_token)))
    if m and m < seq:
        plan.notes.append(f"the longest sequence ({seq} tokens) needs a micro-batch of its own "
                          f"larger than the {m} tokens that fit")
    if not ckpt and not plan.fits:
        plan.notes.append("model.gradient_checkpointing=true would cut activation memory")
    if plan.fits and plan.kv_suggested_tokens < plan.kv_full_tokens:
        plan.notes.append("the KV cache cannot hold the whole rollout at once: the engine will "
                          "preempt and recompute (slower, same results)")
    return plan


def _gb(x: float) -> str:
    return f"{x / 1e9:7.2f}"


def format_plan(cfg: Config, plan: Plan) -> str:
    name = cfg.recipe + (f" --ablation {cfg.ablation}" if cfg.ablation else "")
    size = f"{plan.params / 1e9:.2f} B" if plan.params >= 1e8 else f"{plan.params / 1e6:.2f} M"
    lines = [f"recipe {name or '(custom)'}: {cfg.model.path} ({size} "
             f"parameters, actor {cfg.model.dtype}, {cfg.algo.name}) on {plan.gpus} x "
             f"{plan.gpu_gb:g} GB", f"  per GPU (GB; usable {plan.usable / 1e9:.1f})"]
    lines += [f"  {_gb(v)}  {k}" for k, v in plan.terms.items()]
    ck = "on" if cfg.model.gradient_checkpointing else "off"
    lines += [f"  {_gb(plan.activations)}  activations, micro-batch {plan.micro_batch_tokens} "
              f"tokens (gradient checkpointing {ck})",
              f"  {_gb(plan.kv_min)}  KV cache, minimum ({int(plan.kv_min / plan.kv_per_token)} "
              f"tokens at {plan.kv_per_token / 1024:.0f} KiB)",
              f"  {_gb(plan.total)}  total -> " + ("FITS" if plan.fits else
                                                   f"DOES NOT FIT (short by "
                                                   f"{(plan.total - plan.usable) / 1e9:.1f} GB)")]
    if plan.fits:
        full_gb = plan.kv_full_tokens * plan.kv_per_token / 1e9
        lines.append(f"  suggested: trainer.micro_batch_tokens<={plan.suggested_micro_batch_tokens}"
                     f", rollout.kv_budget_tokens={plan.kv_suggested_tokens} (whole rollout "
                     f"{plan.kv_full_tokens} tokens = {full_gb:.1f} GB)")
    else:
        big = sorted(plan.terms.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  largest terms: " + ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in big)
                     + f"; activations {plan.activations / 1e9:.1f} GB")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def check_fits(cfg: Config, gpus: int, gpu_bytes: float, model_dir: str | None = None) -> Plan:
    """The trainer's start-up check: the plan, or a ConfigError that shows it."""
    plan = make_plan(cfg, gpus, gpu_bytes, model_dir)
    if not plan.fits:
        raise ConfigError("this configuration cannot fit in GPU memory:\n" + format_plan(cfg, plan)
                          + "\n(more GPUs, gradient checkpointing, a smaller "
                          "trainer.micro_batch_tokens or rollout.kv_budget_tokens may help)")
    return plan


def main(args) -> int:
    from .config import build
    try:
        cfg = build(args.recipe, args.config, args.overrides, args.ablation)
        plan = make_plan(cfg, args.gpus, args.gpu_mem * 1e9)
    except ConfigError as e:
        print(f"onerl: {e}", file=sys.stderr)
        return 2
    print(format_plan(cfg, plan))
    return 0 if plan.fits else 1
