"""Per-step metrics: one JSON object per line in ``OUT/metrics.jsonl``, TensorBoard scalars when
``tensorboard`` is installed, and a one-line progress display on the terminal."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    def __init__(self, out_dir: str | Path, tensorboard: bool = True, progress: bool = True,
                 total_steps: int = 0, resume_step: int = 0):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self.progress, self.total = progress, total_steps
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(out_dir) / "tb"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None
        self.t0 = time.time()

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint (a killed run may have some)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, step: int, metrics: dict) -> dict:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, step)
        if self.progress:
            self._print(row)
        return row

    def _print(self, row: dict) -> None:
        keys = [k for k in ("train/acc", "eval/acc_strict", "loss", "response_len", "entropy",
                            "kl", "grad_norm", "time/step_s") if k in row]
        body = "  ".join(f"{k.split('/')[-1]}={row[k]:.4g}" if isinstance(row[k], float)
                         else f"{k.split('/')[-1]}={row[k]}" for k in keys)
        total = f"/{self.total}" if self.total else ""
        print(f"[step {row['step']}{total} | {time.time() - self.t0:6.1f}s] {body}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read(path: str | Path) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"no metrics file at {p}")
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
