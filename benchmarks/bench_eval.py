"""``onerl eval`` throughput: the paper's greedy MATH500 protocol (500 problems, 3072 new tokens)
through the whole command (templating, engine, verifier, outputs) on a model of the paper's shapes
with random weights.

    python benchmarks/bench_eval.py [--device cuda] [--shape qwen/qwen2.5-math-1.5b]
        [--problems 500 --max-tokens 3072] [--json out.json]
    python benchmarks/bench_eval.py --tiny            # a tiny model on the CPU (seconds)

The benchmark file is synthetic (``math500.jsonl`` of random-token problems written to a
temporary folder): the real one is not shipped, and with random weights only the lengths matter.
Random weights rarely emit the end token, so nearly every response runs to ``--max-tokens``.
The last line printed is one JSON object (tokens/s = generated tokens / the seconds ``onerl
eval`` reports for the checkpoint; wall_seconds is the whole call).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_rl_step import (model_shape, random_load, shape_parser,  # noqa: E402
                           write_model_folder)

from onerl import eval_cli, models  # noqa: E402


def main() -> None:
    ap = shape_parser(__doc__, "tiny model, few problems (CPU smoke)")
    ap.add_argument("--problems", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = model_shape(args)
    problems = args.problems or (8 if args.tiny else 500)
    max_tokens = args.max_tokens or (32 if args.tiny else 3072)
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    models.load = random_load   # eval's ModelSlot loads through onerl.models.load
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder, data = Path(tmp) / "model", Path(tmp) / "data"
        write_model_folder(folder, shape)
        data.mkdir()
        with open(data / "math500.jsonl", "w") as f:
            for i in range(problems):
                words = " ".join(f"t{rng.randrange(3, shape['vocab_size'])}" for _ in range(60))
                f.write(json.dumps({"problem": words, "answer": str(i)}) + "\n")
        ns = eval_cli.add_parser(argparse.ArgumentParser().add_subparsers()).parse_args([
            str(folder), "--data", str(data), "--benchmarks", "math500", "--out", f"{tmp}/out",
            "--template", "chat", "--max-tokens", str(max_tokens), "--dtype", dtype,
            "--device", args.device, "--max-num-seqs", str(args.max_num_seqs), "--no-progress"])
        t0 = time.perf_counter()
        results = eval_cli.evaluate_checkpoints(ns)
        wall = time.perf_counter() - t0
    res = results[0]
    bench = res["benchmarks"]["math500"]
    tokens = bench["response_len"] * bench["responses"]
    out = {"bench": "eval", "device": args.device, "shape": "tiny" if args.tiny else args.shape,
           "dtype": dtype, "problems": problems, "max_tokens": max_tokens,
           "responses": bench["responses"], "mean_response_len": round(bench["response_len"], 1),
           "eval_seconds": res["seconds"], "wall_seconds": round(wall, 2),
           "tokens_per_s": round(tokens / max(res["seconds"], 1e-9), 1)}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
