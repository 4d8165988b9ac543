"""Per-example training accuracy per epoch: the input of ``onerl select`` (historical variance).

When the trainer runs on a pool of several examples, every rollout adds each sampled response's
verdict to its example's tally; at the end of an epoch (one pass over the pool) each example's
accuracy is appended to its list and ``RUN_DIR/acc_history.json`` is rewritten atomically, as
``{"<example id>": [acc_epoch_1, acc_epoch_2, ...], ...}`` in pool order -- the format
``onerl select --history`` reads. The tally of an unfinished epoch travels in the checkpoint, so
a resumed run writes the same file as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class AccuracyHistory:
    def __init__(self, ids: list[str], per_epoch: int, path: Path):
        self.ids, self.per_epoch, self.path = [str(i) for i in ids], per_epoch, path
        self.history: dict[str, list[float]] = {i: [] for i in self.ids}
        self.correct = [0.0] * len(ids)
        self.total = [0.0] * len(ids)

    def add(self, step: int, counts: list[float]) -> None:
        """Step ``step``'s (0-based) tallies, ``counts`` = correct per example then total per
        example (already summed over ranks). Closes the epoch after its last step."""
        n = len(self.ids)
        for i in range(n):
            self.correct[i] += counts[i]
            self.total[i] += counts[n + i]
        if (step + 1) % self.per_epoch == 0:
            for i, key in enumerate(self.ids):
                if self.total[i]:
                    self.history[key].append(self.correct[i] / self.total[i])
            self.correct, self.total = [0.0] * n, [0.0] * n

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.history))
        os.replace(tmp, self.path)

    def state(self) -> dict:
        return {"history": self.history, "correct": self.correct, "total": self.total}

    def load(self, state: dict) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.correct, self.total = list(state["correct"]), list(state["total"])


def tally(row_of_seq: list[int], rewards, n_rows: int) -> list[float]:
    """Correct-then-total counts per example from one rank's responses."""
    counts = [0.0] * (2 * n_rows)
    for i, r in zip(row_of_seq, rewards.tolist()):
        counts[i] += float(r > 0)
        counts[n_rows + i] += 1.0
    return counts
