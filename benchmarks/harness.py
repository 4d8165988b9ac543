"""Tiny timing harness shared by the per-op benchmarks.

GPU: CUDA events around each call after warm-up, median of the repeats, peak memory from
torch.cuda.max_memory_allocated above the inputs. CPU: time.perf_counter medians (peak memory
is not tracked on CPU here; the logprobs benchmark measures it in child processes).
Every figure a script prints is a ratio against baselines measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def parse_args(doc: str, extra=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per variant")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: on small ops, waking a second thread costs more "
                         "than it saves on a busy 2-core machine)")
    if extra:
        extra(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def measure(fn, device: str, repeats: int, warmup: int = 3) -> dict:
    """Median milliseconds of fn() and, on CUDA, the peak memory it allocated (MB)."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        return {"ms": statistics.median(times), "peak_mb": round(peak, 1)}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "peak_mb": None}


def report(title: str, rows: list[dict], baseline: str, args, extra: dict | None = None) -> dict:
    """Print a table of variants with their time ratio to ``baseline`` (per shape), then JSON."""
    print(f"\n{title} ({args.device}{', ' + torch.cuda.get_device_name() if args.device.startswith('cuda') else ''})")
    print(f"{'shape':<22}{'variant':<22}{'ms':>10}{'peak MB':>10}{'speedup vs ' + baseline:>22}")
    base = {r["shape"]: r["ms"] for r in rows if r["variant"] == baseline}
    for r in rows:
        r["speedup_vs_" + baseline.replace(" ", "_")] = round(base[r["shape"]] / r["ms"], 3)
        print(f"{r['shape']:<22}{r['variant']:<22}{r['ms']:>10.3f}{str(r['peak_mb']):>10}"
              f"{r['speedup_vs_' + baseline.replace(' ', '_')]:>22.2f}")
    out = {"benchmark": title, "device": args.device, "rows": rows, **(extra or {})}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


def onerl_summary(op: str, device: str, rows: list[dict], baselines: dict[str, str],
                  extra: dict | None = None) -> dict:
    """The one JSON object a benchmark ends with: onerl's ms per shape and its speedup over each
    baseline variant measured for that shape (``baselines`` maps the key written as
    ``speedup_vs_<key>[shape]`` to the variant's name)."""
    summary = {"op": op, "device": device, **(extra or {})}
    by = {(r["shape"], r["variant"]): r["ms"] for r in rows}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        if (shape, "onerl") not in by:
            continue
        ms = by[(shape, "onerl")]
        summary[f"onerl_ms[{shape}]"] = round(ms, 4)
        for key, variant in baselines.items():
            if (shape, variant) in by:
                summary[f"speedup_vs_{key}[{shape}]"] = round(by[(shape, variant)] / ms, 3)
    return summary


def cuda_launches(fn) -> int | None:
    """Number of CUDA kernel launches made by fn() (profiler), None on CPU."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def linear_rate(rows: int, shapes: list[tuple[int, int]], rounds: int = 3, reps: int = 5) -> float:
    """GFLOP/s of fp32 F.linear on [rows, k] x [m, k]^T for each (k, m) of ``shapes`` on this
    machine now: the best of ``rounds`` rounds (the rate the matmuls can reach here), for
    scripts that print how much of a run is matmul."""
    pairs = [(torch.randn(rows, k), torch.randn(m, k)) for k, m in shapes]
    flop, best = 2.0 * reps * rows * sum(k * m for k, m in shapes), 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for x, w in pairs:
            for _ in range(reps):
                torch.nn.functional.linear(x, w)
        best = max(best, flop / (time.perf_counter() - t) / 1e9)
    return best
