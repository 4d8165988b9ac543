"""Verdicts: what the grader says about one response, and counting them for training logs.

Every verdict carries one reason:

``correct``      the extracted answer is equivalent to the gold (reward 1.0);
``wrong``        an answer was found and it is not equivalent, or the response hedges between boxed
                 alternatives (``\\boxed{2} or \\boxed{3}``);
``no_answer``    nothing to grade: no box (training mode), an empty box, or reasoning that never finished;
``parse_error``  there is a box but it cannot be read (never closed, over the length or nesting caps, control
                 characters), the answer cannot be parsed, or it was refused by the safety guards;
``timeout``      the symbolic check ran past its deadline (or its memory cap) and was killed.

Only ``correct`` earns reward; every other reason gives 0.0.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

CORRECT = "correct"
WRONG = "wrong"
NO_ANSWER = "no_answer"
PARSE_ERROR = "parse_error"
TIMEOUT = "timeout"
REASONS = (CORRECT, WRONG, NO_ANSWER, PARSE_ERROR, TIMEOUT)


@dataclass(frozen=True)
class Verdict:
    """The grade of one response: ``reward`` is 1.0 iff ``correct``; ``answer`` is the extracted answer
    text (None when nothing could be extracted)."""

    correct: bool
    reward: float
    reason: str
    answer: str | None

    @classmethod
    def of(cls, reason: str, answer: str | None) -> "Verdict":
        if reason not in REASONS:
            raise ValueError(f"unknown verdict reason {reason!r}")
        ok = reason == CORRECT
        return cls(ok, 1.0 if ok else 0.0, reason, answer)


def count_reasons(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """How many verdicts have each reason; every reason is present, zeros included."""
    counts = Counter(v.reason for v in verdicts)
    return {reason: counts.get(reason, 0) for reason in REASONS}


class ReasonCounter:
    """Running counts of verdict reasons, for a trainer to log once per step or per run.

    >>> c = ReasonCounter(); c.update([Verdict.of("correct", "5")]); c.as_dict(prefix="reward/")["reward/correct"]
    1
    """

    def __init__(self) -> None:
        self._counts: Counter = Counter()

    def update(self, verdicts: Iterable[Verdict]) -> None:
        self._counts.update(v.reason for v in verdicts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def as_dict(self, prefix: str = "", fractions: bool = False) -> dict[str, float]:
        """Counts (or fractions of the total when ``fractions``) keyed ``prefix + reason``."""
        total = self.total
        out = {}
        for reason in REASONS:
            n = self._counts.get(reason, 0)
            out[prefix + reason] = (n / total if total else 0.0) if fractions else n
        return out

    def reset(self) -> None:
        self._counts.clear()
