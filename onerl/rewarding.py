"""The trainer's reward: the verifiable math reward (1 correct / 0 otherwise, boxed answers only,
as the paper trains) or the format-only ablation (1 iff a boxed answer can be read).

``after_think``: reasoning models (R1-Distill) write ``...</think>`` and then the answer; only the
text after the last ``</think>`` is graded, and a response without one gets 0 (the paper's code
with ``use_think=True``)."""
from __future__ import annotations

import torch

from .reward import Verifier, count_reasons, format_reward


class Rewarder:
    def __init__(self, kind: str = "math", workers: int = 2, after_think: bool = False):
        if kind not in ("math", "format"):
            raise ValueError(f"reward must be 'math' or 'format', got {kind!r}")
        self.kind, self.after_think = kind, after_think
        self.verifier = Verifier(workers=workers) if kind == "math" else None
        if self.verifier is not None:
            self.verifier.start()  # pay the worker start-up now, not in the first step

    def __call__(self, responses: list[str], golds: list[str]) -> tuple[torch.Tensor, dict]:
        """Rewards fp32 [N] and the counts of each verdict reason (logged per step)."""
        if self.after_think:
            responses = [response_after_think(x) for x in responses]
        if self.kind == "format":
            r = [format_reward(x) for x in responses]
            return torch.tensor(r, dtype=torch.float32), {"reward/format_ok": sum(r)}
        verdicts = self.verifier.score_batch(responses, golds, "train")
        counts = {f"reward/{k}": v for k, v in count_reasons(verdicts).items()}
        return torch.tensor([v.reward for v in verdicts], dtype=torch.float32), counts

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()


def response_after_think(text: str) -> str:
    """The text after the last ``</think>``; "" when there is none (nothing to grade)."""
    head, sep, tail = text.rpartition("</think>")
    return tail if sep else ""
