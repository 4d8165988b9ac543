"""onerl's rollout engine against ``transformers`` ``generate``: same model, batch and lengths.

    python benchmarks/bench_engine.py --device cpu            # 4 x 256 Qwen2-style model, fp32
    python benchmarks/bench_engine.py --device cuda [--quick] # Qwen2.5-Math-1.5B shapes, bf16

Weights are random (speed does not depend on them); both sides run the very same tensors.
Lengths are fixed (EOS ignored), sampling at T = 0.6 with top-p/top-k off on both sides.
CPU: 64 distinct prompts x 128 new tokens, 2 threads. GPU: the 1-shot workload, one prompt
copied 128 times x 8 samples x 3072 new tokens (``--quick``: 32 x 8 x 512; prefill_count,
the number of prompt prefills, should be 1 there); transformers cannot hold a KV
cache that large, so on GPU it runs the same batch for at most --hf-new-tokens tokens and its
tokens/s is reported for that (shorter, so cheaper per token) run.
On CPU it also prints the matmul work of the run (the same matmuls on both sides), the time it
needs at the best F.linear rate measured here for the decode shapes, and the K/V bytes the
attention reads: the floor under either side's time.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import linear_rate  # noqa: E402

from onerl.engine import LLMEngine  # noqa: E402
from onerl.models import ModelConfig, build, hf_state_dict  # noqa: E402

CPU_SHAPE = dict(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2)
GPU_SHAPE = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2)


def make_model(shape: dict, dtype: torch.dtype, device: str):
    cfg = ModelConfig.from_hf(dict(model_type="qwen2", tie_word_embeddings=True,
                                   max_position_embeddings=4096, rope_theta=10000.0,
                                   torch_dtype=str(dtype).replace("torch.", ""), **shape))
    return build(cfg, dtype, device, seed=0)


def hf_twin(model, device: str):
    """The same weights in a transformers Qwen2ForCausalLM."""
    from transformers import AutoConfig, AutoModelForCausalLM
    hf_cfg = AutoConfig.for_model(**model.config.to_hf())
    dtype = model.embed_tokens.weight.dtype
    hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype).to(device).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return hf


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_engine(engine, prompts, n, new_tokens, device):
    engine.generate(prompts[:2], n=1, max_new_tokens=4, temperature=0.6, ignore_eos=True)  # warm
    sync(device)
    t = time.perf_counter()
    outs = engine.generate(prompts, n=n, max_new_tokens=new_tokens, temperature=0.6,
                           ignore_eos=True, seed=1)
    sync(device)
    dt = time.perf_counter() - t
    tokens = sum(len(o.token_ids) for o in outs)
    assert tokens == len(prompts) * n * new_tokens
    return tokens / dt, dt


def run_hf(hf, prompts, n, new_tokens, device):
    ids = torch.tensor(prompts, device=device).repeat_interleave(n, 0)
    kw = dict(do_sample=True, temperature=0.6, top_p=1.0, top_k=0, pad_token_id=0,
              eos_token_id=None)
    with torch.inference_mode():
        hf.generate(ids[:2], attention_mask=torch.ones_like(ids[:2]), max_new_tokens=4, **kw)
        sync(device)
        t = time.perf_counter()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, **kw)
        sync(device)
    dt = time.perf_counter() - t
    assert out.shape[1] == ids.shape[1] + new_tokens
    return ids.shape[0] * new_tokens / dt, dt


def decode_work(cfg, batch: int, plen: int, new: int) -> tuple[float, float]:
    """(matmul GFLOP, GB of K/V read by attention) of generating ``new`` tokens for ``batch``
    sequences after ``plen``-token prompts: every token through every projection, the LM head
    for the sampled positions, and each decode step reading its sequences' whole K/V cache."""
    H, D = cfg.hidden_size, cfg.head_dim
    attn = H * D * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)   # q, o; k, v
    body = cfg.num_hidden_layers * (attn + 3 * H * cfg.intermediate_size)
    flop = 2 * batch * ((plen + new - 1) * body + new * cfg.vocab_size * H)
    kv_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * D * 4   # K and V, fp32
    kv = batch * sum(plen + t for t in range(1, new)) * kv_row
    return flop / 1e9, kv / 1e9


def decode_shapes(cfg) -> list[tuple[int, int]]:
    """(in, out) features of a decode step's linears: qkv, o, gate_up, down, LM head."""
    H, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    qkv = D * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    return [(H, qkv), (D * cfg.num_attention_heads, H), (H, 2 * I), (I, H), (H, cfg.vocab_size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="a shorter run")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--hf-new-tokens", type=int, default=None,
                    help="transformers run length (GPU default: min(new tokens, 256))")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--repeats", type=int, default=None,
                    help="alternating runs of each side; best and median reported "
                         "(default: 3 on CPU, 1 on GPU)")
    args = ap.parse_args()
    dev = args.device
    torch.manual_seed(0)
    if dev == "cpu":
        torch.set_num_threads(args.threads)
        model = make_model(CPU_SHAPE, torch.float32, dev)
        n, count = 1, 64
        plen, new = args.prompt_len or 32, args.new_tokens or (32 if args.quick else 128)
        engine = LLMEngine(model, max_num_seqs=count, max_model_len=plen + new + 8)
    else:
        model = make_model(GPU_SHAPE, torch.bfloat16, dev)
        n, count = (8, 32) if args.quick else (8, 128)  # the 1-shot batch: 128 copies x 8
        plen, new = args.prompt_len or 160, args.new_tokens or (512 if args.quick else 3072)
        engine = LLMEngine(model, max_num_seqs=1024, max_model_len=plen + new + 8)
    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (count, plen)).tolist()
    if dev == "cuda":  # one training example duplicated to fill the batch
        prompts = prompts[:1] * count
    hf = None if args.skip_hf else hf_twin(model, dev)
    hf_new = args.hf_new_tokens or (new if dev == "cpu" else min(new, 256))
    repeats = args.repeats or (3 if dev == "cpu" else 1)
    runs, hf_runs = [], []
    for r in range(repeats):  # alternate the two so that machine noise hits both alike
        runs.append(run_engine(engine, prompts, n, new, dev))
        print(f"onerl engine: {runs[-1][0]:,.0f} tokens/s ({runs[-1][1]:.2f} s)", flush=True)
        if hf is not None:
            hf_runs.append(run_hf(hf, prompts, n, hf_new, dev))
            print(f"transformers generate: {hf_runs[-1][0]:,.0f} tokens/s ({hf_runs[-1][1]:.2f} s, "
                  f"{hf_new} new tokens)", flush=True)
    tps, secs = max(runs)
    stats = dict(engine.stats)
    result = dict(device=dev, tokens_per_s=round(tps, 1), engine_seconds=round(secs, 3),
                  batch=count * n, prompt_len=plen, new_tokens=new, best_of=repeats,
                  threads=torch.get_num_threads() if dev == "cpu" else None,
                  prefill_count=stats["prefill_tokens"] / plen, steps=stats["steps"],
                  preemptions=stats["preemptions"])
    med = statistics.median(r[0] for r in runs)
    result["tokens_per_s_median"] = round(med, 1)
    if hf_runs:
        hf_tps, hf_med = max(hf_runs)[0], statistics.median(r[0] for r in hf_runs)
        result.update(hf_tokens_per_s=round(hf_tps, 1), hf_tokens_per_s_median=round(hf_med, 1),
                      hf_new_tokens=hf_new, speedup_vs_hf_generate=round(tps / hf_tps, 2),
                      speedup_median=round(med / hf_med, 2))
    if dev == "cpu":  # how much of each side's time the matmuls alone need
        gflop, kv_gb = decode_work(model.config, count * n, plen, new)
        rate = linear_rate(count * n, decode_shapes(model.config), reps=20)
        result.update(matmul_gflop=round(gflop, 2), kv_read_gb=round(kv_gb, 2),
                      linear_gflops=round(rate, 1), matmul_s=round(gflop / rate, 3))
        hf_note = (f", {100 * gflop / rate / (count * n * new / hf_tps):.0f} % of transformers'"
                   if hf_runs else "")
        print(f"matmul work {gflop:.1f} GFLOP = {gflop / rate:.2f} s at F.linear's best rate for "
              f"{count * n} rows here ({rate:.0f} GFLOP/s): {100 * gflop / rate / secs:.0f} % of "
              f"the engine's time{hf_note}; attention reads {kv_gb:.2f} GB of K/V", flush=True)
    if dev == "cuda":
        few = torch.randint(0, vocab, (32, plen)).tolist()
        engine.generate(few, max_new_tokens=130, temperature=0.6, ignore_eos=True)
        st = engine.stats
        result["decode_step_ms_bs32"] = round(1000 * st["seconds"] / st["steps"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
