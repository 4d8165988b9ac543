"""Hugging Face checkpoint folders <-> ``Transformer``.

A folder holds config.json and either model.safetensors or shards listed in
model.safetensors.index.json. Parameter names are the Hugging Face ones
(``model.layers.3.self_attn.q_proj.weight``, ...); the fused ``qkv_proj`` / ``gate_up_proj``
parameters are filled slice by slice on load and split on save. ``save`` writes into a temporary
sibling folder and renames it into place, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .transformer import ModelConfig, Transformer

WEIGHTS, INDEX, CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_names(model: Transformer) -> dict[str, tuple[torch.Tensor, int, int]]:
    """HF tensor name -> (our parameter, first row, number of rows) of the slice it occupies."""
    cfg = model.config
    q, kv, i = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim, \
        cfg.intermediate_size
    out = {"model.embed_tokens.weight": (model.embed_tokens.weight, 0, cfg.vocab_size),
           "model.norm.weight": (model.norm.weight, 0, cfg.hidden_size)}
    if model.lm_head is not None:
        out["lm_head.weight"] = (model.lm_head.weight, 0, cfg.vocab_size)
    for n, layer in enumerate(model.layers):
        p = f"model.layers.{n}."
        a, m = layer.self_attn, layer.mlp
        for kind in ("weight", "bias"):
            fused = getattr(a.qkv_proj, kind)
            if fused is not None:
                for name, off, rows in (("q", 0, q), ("k", q, kv), ("v", q + kv, kv)):
                    out[f"{p}self_attn.{name}_proj.{kind}"] = (fused, off, rows)
            for name, mod in (("self_attn.o_proj", a.o_proj), ("mlp.down_proj", m.down_proj)):
                if getattr(mod, kind) is not None:
                    t = getattr(mod, kind)
                    out[f"{p}{name}.{kind}"] = (t, 0, t.shape[0])
            fused = getattr(m.gate_up_proj, kind)
            if fused is not None:
                out[f"{p}mlp.gate_proj.{kind}"] = (fused, 0, i)
                out[f"{p}mlp.up_proj.{kind}"] = (fused, i, i)
        out[p + "input_layernorm.weight"] = (layer.input_layernorm.weight, 0, cfg.hidden_size)
        out[p + "post_attention_layernorm.weight"] = (layer.post_attention_layernorm.weight, 0,
                                                      cfg.hidden_size)
    return out


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(cfg: ModelConfig, dtype: torch.dtype | None = None, device="cpu",
          init: bool = True, seed: int | None = None) -> Transformer:
    """A model for ``cfg`` on ``device`` without a CPU detour; ``init`` draws random weights
    (normal std 0.02, zero biases, unit norms; ``seed`` makes them reproducible), else leaves
    them uninitialised for a load."""
    dtype = dtype or cfg.dtype
    with _default_dtype(dtype), torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    if init:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else torch.initial_seed())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02, generator=gen)
    return model


def _resolve_dtype(dtype, cfg: ModelConfig) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return cfg.dtype
    if isinstance(dtype, str):
        dt = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return dt
    return dtype


def load(folder: str, dtype: torch.dtype | str | None = None, device="cpu") -> Transformer:
    """Read a checkpoint folder. dtype: None/'auto' = the config's torch_dtype."""
    cfg_path = os.path.join(folder, CONFIG)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{folder}: no {CONFIG}")
    with open(cfg_path) as f:
        cfg = ModelConfig.from_hf(json.load(f))
    if os.path.isfile(os.path.join(folder, INDEX)):
        with open(os.path.join(folder, INDEX)) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(folder, WEIGHTS)):
        files = [WEIGHTS]
    else:
        raise FileNotFoundError(f"{folder}: neither {WEIGHTS} nor {INDEX} found")
    model = build(cfg, _resolve_dtype(dtype, cfg), device, init=False)
    targets, seen = hf_names(model), set()
    with torch.no_grad():
        for fname in files:
            path = os.path.join(folder, fname)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{folder}: shard {fname} listed in {INDEX} is missing")
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    if name not in targets:
                        if name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight"
                                                                and cfg.tie_word_embeddings):
                            continue
                        raise ValueError(f"{path}: unexpected tensor {name!r} for a "
                                         f"{cfg.model_type} model with this config")
                    param, off, rows = targets[name]
                    t = f.get_tensor(name)
                    want = (rows, *param.shape[1:])
                    if tuple(t.shape) != want:
                        raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, config "
                                         f"implies {want}")
                    param[off:off + rows].copy_(t)
                    seen.add(name)
    missing = sorted(set(targets) - seen)
    if missing:
        raise ValueError(f"{folder}: {len(missing)} tensors missing from the checkpoint, e.g. "
                         f"{missing[:3]}")
    return model


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """HF-named, contiguous, unshared CPU tensors (FSDP DTensors are gathered)."""
    out = {}
    for name, (param, off, rows) in hf_names(model).items():
        t = param.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out[name] = t[off:off + rows].to("cpu", copy=True).contiguous()
    return out


def save(model: Transformer, folder: str, copy_files_from: str | None = None,
         state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write config.json + model.safetensors to ``folder`` atomically (temp dir + rename).

    copy_files_from: a checkpoint folder whose other files (tokenizer, generation config, ...)
    are copied along; weight and config files there are never copied. state_dict: the HF-named
    tensors when already gathered (sharded training: every rank gathers, one rank writes)."""
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(folder) + "-", dir=parent)
    try:
        if copy_files_from:
            for fname in os.listdir(copy_files_from):
                src = os.path.join(copy_files_from, fname)
                weights = fname.startswith("model.safetensors") or fname.endswith(".safetensors")
                if os.path.isfile(src) and fname != CONFIG and not weights:
                    shutil.copy2(src, os.path.join(tmp, fname))
        cfg = model.config.to_hf()
        cfg["torch_dtype"] = str(model.embed_tokens.weight.dtype).replace("torch.", "")
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        tensors = state_dict if state_dict is not None else hf_state_dict(model)
        save_file(tensors, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(folder) + "-", dir=parent)
            os.rename(folder, os.path.join(old, "ckpt"))
        os.rename(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
