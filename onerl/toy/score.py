"""Scoring toy-world responses.

All functions take the assistant response text (what the model generated after
the prompt).  Anything from the first end-of-turn / end-of-text token on is
ignored.

strict
    The content of the *last* ``\\boxed{...}`` in the response, with
    surrounding whitespace stripped, is exactly the gold integer written in
    decimal (``"66"``; ``"066"``, ``"66.0"`` or a missing box are wrong).  This
    is what the RL reward checks.
format-free
    The response's final answer equals gold, whether or not it is boxed.  The
    final answer is the first rule that applies:

    1. the integer in the last ``\\boxed{N}``;
    2. otherwise the integer after the last ``answer:``;
    3. otherwise the integer after the last ``=`` (e.g. the last step of an
       unfinished solution);
    4. otherwise there is no answer (wrong).
boxed rate
    Fraction of responses containing a ``\\boxed{...}``.
reflection rate
    Fraction of responses that contain any of the self-reflection words of the
    1-shot RLVR paper, ``rethink``, ``recheck``, ``recalculate`` (case
    insensitive).  In the toy world only ``recheck`` occurs.
mode
    ``careful`` if the response rechecks, ``shortcut`` if it has no
    computation line (no ``=``), ``sloppy`` otherwise.
"""
from __future__ import annotations

import re
from collections import defaultdict

REFLECTION_WORDS = ("rethink", "recheck", "recalculate")
STOP_MARKERS = ("<|im_end|>", "<|endoftext|>")

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_BOXED_INT = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_ANSWER_INT = re.compile(r"answer:\s*(?:\\boxed\{\s*)?(-?\d+)")
_EQUALS_INT = re.compile(r"=\s*(-?\d+)")


def clean(response: str) -> str:
    for marker in STOP_MARKERS:
        response = response.split(marker, 1)[0]
    return response


def strict_answer(response: str):
    """The stripped content of the last ``\\boxed{}``, or None."""
    found = _BOXED.findall(clean(response))
    return found[-1].strip() if found else None


def strict_correct(response: str, gold) -> bool:
    return strict_answer(response) == str(gold).strip()


def format_free_answer(response: str):
    """The final answer as an int (see the module docstring), or None."""
    text = clean(response)
    for pattern in (_BOXED_INT, _ANSWER_INT, _EQUALS_INT):
        found = pattern.findall(text)
        if found:
            return int(found[-1])
    return None


def format_free_correct(response: str, gold) -> bool:
    answer = format_free_answer(response)
    return answer is not None and answer == int(str(gold).strip())


def is_boxed(response: str) -> bool:
    return strict_answer(response) is not None


def has_reflection(response: str) -> bool:
    text = clean(response).lower()
    return any(word in text for word in REFLECTION_WORDS)


def reflection_rate(responses) -> float:
    responses = list(responses)
    return sum(map(has_reflection, responses)) / max(len(responses), 1)


def solution_mode(response: str) -> str:
    text = clean(response)
    if has_reflection(text):
        return "careful"
    if "=" not in text:
        return "shortcut"
    return "sloppy"


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(responses, golds, groups=None) -> dict:
    """Aggregate metrics; ``groups`` (e.g. template names) adds per-group accuracy.

    Returns strict, format_free, boxed, reflection (rates over all
    responses), mode_share and mode_strict (strict accuracy within each
    mode), and group_strict if groups were given.
    """
    responses, golds = list(responses), list(golds)
    strict = [strict_correct(r, g) for r, g in zip(responses, golds)]
    modes = [solution_mode(r) for r in responses]
    by_mode, by_group = defaultdict(list), defaultdict(list)
    for i, ok in enumerate(strict):
        by_mode[modes[i]].append(ok)
        if groups is not None:
            by_group[groups[i]].append(ok)
    out = {
        "n": len(responses),
        "strict": _mean(strict),
        "format_free": _mean(format_free_correct(r, g) for r, g in zip(responses, golds)),
        "boxed": _mean(map(is_boxed, responses)),
        "reflection": _mean(map(has_reflection, responses)),
        "mode_share": {m: len(v) / len(responses) for m, v in sorted(by_mode.items())},
        "mode_strict": {m: _mean(v) for m, v in sorted(by_mode.items())},
    }
    if groups is not None:
        out["group_strict"] = {g: _mean(v) for g, v in by_group.items()}
    return out
