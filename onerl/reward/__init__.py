r"""The verifiable math reward of onerl: a strict, careful grader for boxed answers.

Quick use::

    from onerl.reward import score, score_batch, format_reward, count_reasons

    score(r"... so the answer is \boxed{\frac{64}{5}}.", "12.8")   # Verdict(correct=True, reward=1.0, ...)
    verdicts = score_batch(responses, golds, mode="train", workers=2, deadline_s=5.0)
    log.update(count_reasons(verdicts))                          # {'correct': .., 'wrong': .., ...}
    format_reward(response)                                      # 1.0 iff a boxed answer can be read

or own the worker pool explicitly (``start()`` spawns the workers up front instead of on first need)::

    with Verifier(workers=2, deadline_s=5.0).start() as verifier:
        verdicts = verifier.score_batch(responses, golds)
        print(verifier.stats())   # cache hits, fast / symbolic / guarded decisions, timeouts, slowest item

Modes: ``train`` grades only a ``\boxed{}`` answer; ``eval`` also accepts an explicit "final answer is ..."
/ "Answer: ..." line when there is no box (never the last number in the text).

The rules live in the module docstrings: extraction (:mod:`.extract`), canonical strings
(:mod:`.normalize`), equivalence (:mod:`.equiv`, :mod:`.numbers`, :mod:`.structure`, :mod:`.approx`),
safety guards (:mod:`.guards`), symbolic checks (:mod:`.symbolic`, run by :mod:`.pool` / :mod:`.worker`),
verdict reasons (:mod:`.verdict`).  Model text is never passed to ``eval``, ``exec``, ``sympify`` or
``parse_expr``.
"""
from __future__ import annotations

import atexit
import threading
from typing import Sequence

from .extract import Extraction, extract_answer
from .verdict import (CORRECT, NO_ANSWER, PARSE_ERROR, REASONS, TIMEOUT, WRONG, ReasonCounter, Verdict,
                      count_reasons)
from .verifier import Verifier, _check_str

__all__ = [
    "score", "score_batch", "format_reward", "extract_answer", "Extraction", "Verifier", "Verdict",
    "count_reasons", "ReasonCounter", "close_default_verifiers", "REASONS", "CORRECT", "WRONG",
    "NO_ANSWER", "PARSE_ERROR", "TIMEOUT",
]

_defaults: dict[tuple[int, float], Verifier] = {}
_defaults_lock = threading.Lock()


def _default_verifier(workers: int, deadline_s: float) -> Verifier:
    key = (int(workers), float(deadline_s))
    with _defaults_lock:
        verifier = _defaults.get(key)
        if verifier is None:
            verifier = _defaults[key] = Verifier(workers=workers, deadline_s=deadline_s)
        return verifier


def close_default_verifiers() -> None:
    """Stop the worker pools behind :func:`score` / :func:`score_batch` (also done at interpreter exit)."""
    with _defaults_lock:
        for verifier in _defaults.values():
            verifier.close()
        _defaults.clear()


atexit.register(close_default_verifiers)


def score(response: str, gold: str, mode: str = "train") -> Verdict:
    """Grade one model ``response`` (the generated text only, not the prompt) against ``gold``."""
    _check_str(response, "response")
    _check_str(gold, "gold")
    return _default_verifier(1, 5.0).score(response, gold, mode)


def score_batch(responses: Sequence[str], golds: Sequence[str] | str, mode: str = "train",
                workers: int = 2, deadline_s: float = 5.0) -> list[Verdict]:
    """Grade many responses in parallel.  ``golds``: one per response, or one str shared by all.
    The pool for each (workers, deadline_s) setting is kept for later calls and closed at exit."""
    return _default_verifier(workers, deadline_s).score_batch(responses, golds, mode)


def format_reward(response: str) -> float:
    """1.0 iff a boxed answer can be extracted from ``response`` (the paper's format-reward ablation).
    Hedged boxes (``\\boxed{2} or \\boxed{3}``), unreadable and empty boxes earn 0."""
    _check_str(response, "response")
    return 1.0 if extract_answer(response, "train").status == "ok" else 0.0
