"""``onerl plot RUN_DIR``: PNG curves from metrics.jsonl — training accuracy against held-out
accuracy (the paper's post-saturation picture), self-reflection rate, entropy, response length."""
from __future__ import annotations

from pathlib import Path

from .metrics import read

PANELS = [
    ("accuracy", [("train/acc", "train (sampled, T)"), ("eval/acc_strict", "held-out, strict"),
                  ("eval/acc", "held-out, eval grader"), ("eval/acc_format_free", "held-out, format-free")]),
    ("self-reflection rate (held-out)", [("eval/reflection_rate", "rethink/recheck/recalculate")]),
    ("entropy", [("entropy", "policy entropy (train tokens)")]),
    ("response length", [("response_len", "train"), ("eval/response_len", "held-out")]),
]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read(run_dir)
    out = Path(out or Path(run_dir) / "curves.png")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, series) in zip(axes.flat, PANELS):
        for key, label in series:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"onerl run: {Path(run_dir).resolve().name}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
