"""The model's linear layers on the CPU: F.linear (MKL) vs onerl.models.linear (oneDNN for fp32
with many rows), forward and forward + backward, at the projection shapes of the benchmark model
of bench_step_vs_trl.py (hidden 256, MLP 512, 4 + 2 + 2 heads of 64).

    python benchmarks/bench_linear.py [--threads 1] [--rows 128,1024,4096] [--json out.json]

Rows 4096 is one of the trainer's two micro-batch parts there (each run on its own thread with
one intra-op thread: --threads 1); 128 a decode step, where onerl.models.linear calls F.linear
(MIN_ROWS) and the oneDNN row shows why. Each variant's time is the sum over the four projections; the speedup is F.linear's
time over onerl's, measured in the same run. The last line is JSON.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from harness import measure, onerl_summary, parse_args, report

from onerl.models import linear as onerl_linear

SHAPES = [(256, 512), (256, 256), (256, 1024), (512, 256)]   # (K, N): qkv, o, gate_up, down


def chain(fn, xs, ws, bs, backward: bool):
    def run():
        for x, w, b in zip(xs, ws, bs):
            y = fn(x, w, b)
            if backward:
                y.backward(torch.ones_like(y))
    return run


def oneDNN(x, w, b):
    """onerl.models.linear's oneDNN path whatever the rows (below MIN_ROWS onerl itself calls
    F.linear: these rows show why)."""
    return onerl_linear._Linear.apply(x, w, b)


def main():
    args = parse_args(__doc__, lambda ap: ap.add_argument("--rows", default="128,1024,4096"))
    if args.device != "cpu":
        raise SystemExit("bench_linear: the oneDNN path is CPU-only; run with --device cpu")
    rows, repeats = [], args.repeats or 10
    for M in (int(m) for m in args.rows.split(",")):
        g = torch.Generator().manual_seed(M)
        xs = [torch.randn(M, k, generator=g).requires_grad_() for k, _ in SHAPES]
        ws = [(0.05 * torch.randn(n, k, generator=g)).requires_grad_() for k, n in SHAPES]
        bs = [torch.randn(n, generator=g).requires_grad_() if i == 0 else None
              for i, (_, n) in enumerate(SHAPES)]
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            with torch.set_grad_enabled(backward):
                for name, fn in (("F.linear", F.linear), ("onerl", oneDNN)):
                    r = measure(chain(fn, xs, ws, bs, backward), "cpu", repeats)
                    rows.append({"shape": f"M={M} {mode}", "variant": name, **r})
    report("linear layers (sum of the 4 projections)", rows, "F.linear", args,
           {"threads": torch.get_num_threads(), "min_rows": onerl_linear.MIN_ROWS})
    print(onerl_summary("linear", "cpu", rows, {"F.linear": "F.linear"},
                        {"threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
