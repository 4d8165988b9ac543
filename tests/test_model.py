"""The decoder against transformers: logits, packed forward, checkpoint round trips, errors."""
import json
import os

import pytest
import torch

from onerl.models import ModelConfig, build, load, save

transformers = pytest.importorskip("transformers")

VOCAB = 96
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
FAMILIES = {
    # Qwen2: q/k/v bias, tied embeddings
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=10000.0, max_position_embeddings=256),
    # Llama: untied head, llama3 rope scaling (positions beyond the original context)
    "llama3": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        rope_theta=500000.0, rope_scaling=LLAMA3, max_position_embeddings=256),
    # Llama: linear rope scaling, attention + MLP biases, tied, plain MHA
    "llama_linear": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
        attention_bias=True, mlp_bias=True, rope_scaling={"rope_type": "linear", "factor": 2.0},
        max_position_embeddings=256),
}


def hf_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES[family](), dtype=torch.float32)
    with torch.no_grad():  # larger than the default init: varied, non-repeating greedy outputs
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids[None]).logits[0]


def assert_close(a, b, rtol=1e-4):
    scale = b.abs().max().clamp(min=1e-6)
    assert ((a - b).abs().max() / scale).item() <= rtol


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    """(transformers model, onerl model loaded from its save_pretrained folder, folder)."""
    hf = hf_model(request.param)
    folder = str(tmp_path_factory.mktemp(request.param))
    hf.save_pretrained(folder)
    return hf, load(folder), folder


def test_logits_match_transformers(pair):
    hf, model, _ = pair
    ids = torch.randint(0, VOCAB, (40,))
    with torch.no_grad():
        ours = model.logits(model(ids))
    assert ours.dtype == torch.float32 and ours.shape == (40, VOCAB)
    assert_close(ours, hf_logits(hf, ids))


def test_packed_forward_equals_separate_forwards(pair):
    _, model, _ = pair
    seqs = [torch.randint(0, VOCAB, (n,)) for n in (7, 1, 23, 12)]
    cu = torch.tensor([0, 7, 8, 31, 43])
    with torch.no_grad():
        packed = model(torch.cat(seqs), cu)
        separate = torch.cat([model(s) for s in seqs])
    assert packed.shape == (43, model.config.hidden_size)
    assert_close(packed, separate, 1e-5)


def test_onerl_save_loads_in_transformers(pair, tmp_path):
    hf, model, folder = pair
    out = str(tmp_path / "ckpt")
    save(model, out, copy_files_from=folder)
    save(model, out, copy_files_from=folder)  # overwriting an existing checkpoint is atomic too
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary folders left behind
    assert "generation_config.json" in os.listdir(out)
    again = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, VOCAB, (30,))
    assert torch.equal(hf_logits(again, ids), hf_logits(hf, ids))
    assert torch.equal(load(out).lm_head_weight, model.lm_head_weight)


def test_lm_head_weight_and_fused_parameters(pair):
    hf, model, _ = pair
    cfg = model.config
    if cfg.tie_word_embeddings:
        assert model.lm_head_weight is model.embed_tokens.weight
    else:
        assert torch.equal(model.lm_head_weight, hf.lm_head.weight)
    # q/k/v and gate/up live in one parameter each; their rows are the HF tensors
    q = hf.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(model.layers[0].self_attn.qkv_proj.weight[:q.shape[0]], q)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())


def test_sharded_checkpoint_and_dtype(tmp_path):
    hf = hf_model("qwen2", seed=1)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    model = load(str(tmp_path))
    ids = torch.randint(0, VOCAB, (12,))
    with torch.no_grad():
        assert_close(model.logits(model(ids)), hf_logits(hf, ids))
    half = load(str(tmp_path), dtype="bfloat16")
    assert half.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():  # bf16 hidden x bf16 head -> fp32 logits, never rounded to bf16
        h = half(ids)
        exact = h.float() @ half.lm_head_weight.float().t()
        torch.testing.assert_close(half.logits(h), exact, rtol=1e-6, atol=1e-6)


def test_gradient_checkpointing_same_gradients():
    cfg = ModelConfig.from_hf(FAMILIES["qwen2"]().to_dict())
    model = build(cfg, seed=3)
    ids, cu = torch.randint(0, VOCAB, (20,)), torch.tensor([0, 8, 20])
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model.logits(model(ids, cu)).logsumexp(-1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(str(tmp_path))
    good = FAMILIES["qwen2"]().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(good))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load(str(tmp_path))
    for field, value, message in (("model_type", "gpt2", "model_type"),
                                  ("hidden_act", "gelu", "hidden_act"),
                                  ("num_key_value_heads", 3, "multiple"),
                                  ("hidden_size", None, "hidden_size")):
        with pytest.raises(ValueError, match=message):
            ModelConfig.from_hf({**good, field: value})
    legacy = {k: v for k, v in good.items() if k != "rope_parameters"}
    with pytest.raises(ValueError, match="rope type"):
        ModelConfig.from_hf({**legacy, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
