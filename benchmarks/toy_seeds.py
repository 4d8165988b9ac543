"""The toy recipe over several seeds: the main run and its ablations, mean and spread.

    python benchmarks/toy_seeds.py                       # seeds 1-3 x {math reward, format reward}
    python benchmarks/toy_seeds.py --seeds 1 2 3 4 5 --variants math format no-recheck-bonus
    python benchmarks/toy_seeds.py --parallel 2 --out runs/toy_seeds

Each run is a plain ``onerl train --recipe toy`` in its own process (``trainer.seed=S``, one
thread each when ``--parallel`` > 1) writing ``OUT/<variant>_s<S>/summary.json``. The script
prints, per variant, the mean and the spread (min..max and the sample std) of the held-out
figures of those summaries, and writes them all to ``OUT/seeds.json``.

Variants are named sets of config overrides (``VARIANTS``); ``math`` is the recipe unchanged,
``format`` the format-only-reward ablation, ``example:<pool id>`` trains on another pool example.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = {
    "math": [],
    "format": ["algo.reward=format"],
    "entropy": ["algo.entropy_coef=0.001"],
    "ppo": ["algo.name=ppo"],
}
KEYS = ("heldout_strict_before", "heldout_strict_after", "heldout_format_free_before",
        "heldout_format_free_after", "reflection_rate_before", "reflection_rate_after",
        "train_acc_final", "heldout_gain_after_saturation", "wall_s")


def overrides(variant: str) -> list[str]:
    if variant.startswith("example:"):
        return [f'data.train_files=["toy:{variant.split(":", 1)[1]}"]']
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}: use {', '.join(VARIANTS)} or example:<id>")
    return VARIANTS[variant]


def run_one(variant: str, seed: int, out: Path, threads: int) -> dict:
    run_dir = out / f"{variant.replace(':', '_')}_s{seed}"
    onerl = shutil.which("onerl") or str(Path(sys.executable).with_name("onerl"))
    cmd = [onerl, "train", "--recipe", "toy", f"trainer.out_dir={run_dir}",
           f"trainer.seed={seed}", f"trainer.threads={threads}", "trainer.progress=false",
           *overrides(variant)]
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    return json.loads((run_dir / "summary.json").read_text())


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--variants", nargs="+", default=["math", "format"])
    ap.add_argument("--out", default="runs/toy_seeds")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time")
    args = ap.parse_args()
    out = Path(args.out)
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    for v, _ in jobs:
        overrides(v)   # fail on a bad name before any run starts
    threads = 2 if args.parallel == 1 else 1
    t0 = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        sums = list(pool.map(lambda j: run_one(j[0], j[1], out, threads), jobs))
    result = {}
    for v in args.variants:
        rows = [s for (jv, _), s in zip(jobs, sums) if jv == v]
        stats = {k: spread([r[k] for r in rows]) for k in KEYS if all(k in r for r in rows)}
        for name in ("heldout_strict", "heldout_format_free", "reflection_rate"):
            stats[f"{name}_gain"] = spread([r[f"{name}_after"] - r[f"{name}_before"] for r in rows])
        result[v] = stats
    print(f"{len(jobs)} runs in {time.time() - t0:.0f} s; seeds {args.seeds}\n")
    print(f"{'variant':<22}{'metric':<32}{'mean':>8}{'std':>8}{'min':>8}{'max':>8}")
    for v, stats in result.items():
        for k, s in stats.items():
            print(f"{v:<22}{k:<32}{s['mean']:>8.3f}{s['std']:>8.3f}{s['min']:>8.3f}{s['max']:>8.3f}")
    (out / "seeds.json").write_text(json.dumps({"seeds": args.seeds, "variants": result}, indent=1))
    print(f"\n{out / 'seeds.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
