"""``onerl report RUN_DIR``: a Markdown page ``RUN_DIR/report.md`` for a training run.

It reads ``RUN_DIR/metrics.jsonl`` and writes:

* a table of the held-out metrics (``eval/*``) at every evaluated step;
* the best step by held-out accuracy (``eval/acc``, else ``eval/acc_strict``, else the first
  ``eval/acc*`` key present);
* the train-accuracy saturation step: the first step whose ``train/acc`` reaches the threshold
  (default 0.95), and how held-out accuracy moved after it (the paper's post-saturation
  generalization);
* the PNG curves drawn by :func:`onerl.plot.plot_run`, embedded by relative path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .metrics import read

ACC_KEYS = ("eval/acc", "eval/acc_strict", "eval/acc_format_free")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``report`` on the ``onerl`` subcommand parser."""
    p = sub.add_parser("report", help="Markdown report of a training run (RUN_DIR/report.md)")
    p.add_argument("run_dir")
    p.add_argument("--saturation", type=float, default=0.95,
                   help="train accuracy counted as saturated (default 0.95)")
    p.add_argument("--no-plot", action="store_true", help="do not draw / embed the PNG curves")
    p.set_defaults(func=main)
    return p


def eval_rows(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """The ``eval/*`` keys (first-seen order) and the rows that carry any of them."""
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k.startswith("eval/") and isinstance(v, (int, float)) and k not in keys:
                keys.append(k)
    return keys, [r for r in rows if any(k in r for k in keys)]


def accuracy_key(keys: list[str]) -> str | None:
    """The held-out accuracy used to pick the best step."""
    for k in ACC_KEYS:
        if k in keys:
            return k
    return next((k for k in keys if k.startswith("eval/acc")), None)


def best_step(rows: list[dict], key: str) -> tuple[int, float] | None:
    """(step, value) of the highest ``key``; the earliest step wins ties."""
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    if not pts:
        return None
    return max(pts, key=lambda p: (p[1], -p[0]))


def saturation_step(rows: list[dict], threshold: float) -> int | None:
    """First step whose ``train/acc`` is at least ``threshold``."""
    return next((r["step"] for r in rows
                 if isinstance(r.get("train/acc"), (int, float)) and r["train/acc"] >= threshold),
                None)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def build_report(run_dir: str | Path, saturation: float = 0.95, plot: bool = True) -> str:
    """The Markdown text (and the PNG next to it when ``plot``)."""
    run = Path(run_dir)
    rows = read(run)
    if not rows:
        raise ValueError(f"{run / 'metrics.jsonl'}: no metrics lines")
    keys, evals = eval_rows(rows)
    last = max(r.get("step", 0) for r in rows)
    lines = [f"# Run report: {run.resolve().name}", "",
             f"{len(rows)} metrics lines, last step {last}, {len(evals)} evaluated step(s).", ""]
    acc = accuracy_key(keys)
    best = best_step(evals, acc) if acc else None
    sat = saturation_step(rows, saturation)
    lines.append("## Summary")
    lines.append("")
    if best:
        first = next(r[acc] for r in evals if acc in r)
        lines.append(f"- best step by held-out accuracy (`{acc}`): **{best[0]}** "
                     f"({best[1]:.4g}; first evaluation {first:.4g})")
    else:
        lines.append("- no held-out accuracy logged (set trainer.eval_every and eval files)")
    trains = [r["train/acc"] for r in rows if isinstance(r.get("train/acc"), (int, float))]
    if sat is not None:
        lines.append(f"- train accuracy saturated (>= {saturation:g}) at step **{sat}**")
        if acc:
            before = [r[acc] for r in evals if acc in r and r["step"] <= sat]
            after = [r[acc] for r in evals if acc in r and r["step"] > sat]
            if before and after:
                lines.append(f"- held-out `{acc}` at saturation {before[-1]:.4g}, best after it "
                             f"{max(after):.4g}, last {after[-1]:.4g} (post-saturation change "
                             f"{after[-1] - before[-1]:+.4g})")
    elif trains:
        lines.append(f"- train accuracy never reached {saturation:g} (max {max(trains):.4g})")
    else:
        lines.append("- no train accuracy logged")
    lines.append("")
    if evals:
        cols = ["step", *keys]
        lines += ["## Held-out metrics per evaluated step", "",
                  "| " + " | ".join(c.removeprefix("eval/") for c in cols) + " |",
                  "|" + "---|" * len(cols)]
        for r in evals:
            mark = " **(best)**" if best and r["step"] == best[0] else ""
            lines.append("| " + " | ".join([str(r["step"]) + mark, *(_fmt(r.get(k)) for k in keys)])
                         + " |")
        lines.append("")
    if plot:
        from .plot import plot_run

        png = plot_run(run)
        rel = png.relative_to(run) if png.is_relative_to(run) else png
        lines += ["## Curves", "", f"![training curves]({rel.as_posix()})", ""]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``onerl report`` handler."""
    try:
        text = build_report(args.run_dir, args.saturation, plot=not args.no_plot)
    except (FileNotFoundError, ValueError) as e:
        print(f"onerl report: {e}", file=sys.stderr)
        return 2
    out = Path(args.run_dir) / "report.md"
    out.write_text(text)
    print(out)
    return 0
