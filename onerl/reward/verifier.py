"""Scoring responses: extraction, the fast exact paths, a cache, and the symbolic worker pool.

For each (response, gold) pair, :class:`Verifier`:

1. extracts the final answer (:mod:`.extract`; ``no_answer`` / ``parse_error`` / hedges end here);
2. looks up the cache, keyed by (extracted answer, gold) -- the mode only changes extraction;
3. canonicalises both sides (:mod:`.normalize`) and runs :func:`.equiv.equivalent` without a symbolic
   checker: plain numbers, choice letters, text, containers and clear numeric fingerprints are decided here;
4. otherwise checks the safety guards (:mod:`.guards`; refused -> ``parse_error``) and sends the pair to
   the worker pool (:mod:`.pool`), which applies the same rules with math-verify behind them, under a hard
   per-item deadline (``timeout`` on expiry).

Pairs that need the pool are submitted as soon as they are found, so the workers run while this process
keeps going through the batch.  Identical pending pairs in one batch are checked once.  Timeouts are
cached too: a pathological answer repeated across rollouts costs one deadline, not eight.  The cache can
be disabled (``cache_size=0``).  An empty gold matches nothing (reason ``wrong``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

from .equiv import NeedSymbolic, equivalent
from .extract import HEDGED, NO_ANSWER as EXTRACT_NO_ANSWER, OK, extract_answer
from .guards import unsafe_reason
from .normalize import canonical
from .pool import SymbolicPool
from .verdict import CORRECT, NO_ANSWER, PARSE_ERROR, REASONS, WRONG, Verdict

MODES = ("train", "eval")


def _check_str(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


class Verifier:
    """Grades responses against gold answers.  Owns a pool of worker processes (started on first need):
    use it as a context manager or call :meth:`close`.

    ``workers``: symbolic worker processes; ``deadline_s``: hard limit per symbolic item (5 s: the slowest
    legitimate item measured on an overloaded 2-core box took 2.3 s);
    ``cache_size``: entries of the (answer, gold) cache, 0 to disable; ``max_items_per_worker``: recycle
    period; ``memory_mb``: address-space cap of each worker; ``warm_up``: let each new worker run a few
    symbolic checks before taking items (about two seconds per start, so that first items are fast); ``mode``:
    the default mode of :meth:`score` / :meth:`score_batch`.
    """

    def __init__(self, workers: int = 2, deadline_s: float = 5.0, cache_size: int = 100_000,
                 max_items_per_worker: int = 5000, memory_mb: int = 3072, mode: str = "train",
                 warm_up: bool = True):
        self.mode = _check_mode(mode)
        self.pool = SymbolicPool(workers, deadline_s, max_items_per_worker, memory_mb, warm_up)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        self.counts = {"cache_hits": 0, "fast": 0, "symbolic": 0, "guarded": 0}

    # -- public API -------------------------------------------------------------------------------------
    def score(self, response: str, gold: str, mode: str | None = None) -> Verdict:
        """Grade one response (see :func:`onerl.reward.score`)."""
        _check_str(response, "response")
        _check_str(gold, "gold")
        return self._score([response], [gold], _check_mode(mode or self.mode))[0]

    def score_batch(self, responses: Sequence[str], golds: Sequence[str] | str,
                    mode: str | None = None) -> list[Verdict]:
        """Grade many responses; ``golds`` is one gold per response, or a single str for all of them."""
        if isinstance(responses, str) or not hasattr(responses, "__len__"):
            raise TypeError("responses must be a sequence of str")
        if isinstance(golds, str):
            golds = [golds] * len(responses)
        if not hasattr(golds, "__len__") or len(golds) != len(responses):
            raise TypeError("golds must be a str or a sequence of str as long as responses")
        for i, r in enumerate(responses):
            _check_str(r, f"responses[{i}]")
        for i, g in enumerate(golds):
            _check_str(g, f"golds[{i}]")
        return self._score(list(responses), list(golds), _check_mode(mode or self.mode))

    def start(self) -> "Verifier":
        """Start the worker processes now (a trainer can do this before its first step) and wait until
        they are ready; without it they start when the first pair needs them."""
        self.pool.start()
        return self

    def stats(self) -> dict:
        """Counters since creation: decided by cache / fast path / symbolic pool / guards, plus the pool's
        items, timeouts, respawns and slowest item (seconds)."""
        return {**self.counts, **self.pool.stats}

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------
    def _score(self, responses: list[str], golds: list[str], mode: str) -> list[Verdict]:
        with self._lock:
            verdicts: list[Verdict | None] = [None] * len(responses)
            answers: list[str | None] = [None] * len(responses)
            waiting: dict[tuple[str, str], list[int]] = {}   # pairs sent to the pool -> response indices
            keys: list[tuple[str, str]] = []                 # pool key (int) -> pair
            for i, (response, gold) in enumerate(zip(responses, golds)):
                if keys and i % 32 == 0:
                    self._collect(self.pool.poll(), keys, waiting, verdicts, answers)
                found = extract_answer(response, mode)
                answers[i] = found.answer
                if found.status != OK:
                    reason = WRONG if found.status == HEDGED else (
                        NO_ANSWER if found.status == EXTRACT_NO_ANSWER else PARSE_ERROR)
                    verdicts[i] = Verdict.of(reason, found.answer)
                    continue
                key = (found.answer, gold)
                if key in waiting:
                    waiting[key].append(i)
                    continue
                reason = self._cache_get(key)
                if reason is not None:
                    self.counts["cache_hits"] += 1
                    verdicts[i] = Verdict.of(reason, found.answer)
                    continue
                reason, symbolic_pair = self._fast(found.answer, gold)
                if reason is None:
                    waiting[key] = [i]
                    keys.append(key)
                    self.counts["symbolic"] += 1
                    self.pool.submit(len(keys) - 1, *symbolic_pair)
                    continue
                self._cache_put(key, reason)
                verdicts[i] = Verdict.of(reason, found.answer)
            if keys:
                self._collect(self.pool.wait_all(), keys, waiting, verdicts, answers)
            return verdicts  # type: ignore[return-value]

    def _collect(self, done: dict, keys: list, waiting: dict, verdicts: list, answers: list) -> None:
        for pool_key, (reason, _) in done.items():
            key = keys[pool_key]
            self._cache_put(key, reason)
            for i in waiting.pop(key):
                verdicts[i] = Verdict.of(reason, answers[i])

    def _fast(self, answer: str, gold: str) -> tuple[str | None, tuple[str, str] | None]:
        """Decide without sympy if possible: (reason, None), or (None, canonical pair for the pool)."""
        a, g = canonical(answer), canonical(gold)
        if not a or not g:
            self.counts["fast"] += 1
            return (NO_ANSWER if not a else WRONG), None
        try:
            ok = equivalent(a, g)
        except NeedSymbolic:
            if unsafe_reason(a) or unsafe_reason(g):
                self.counts["guarded"] += 1
                return PARSE_ERROR, None
            return None, (a, g)
        self.counts["fast"] += 1
        return (CORRECT if ok else WRONG), None

    def _cache_get(self, key: tuple[str, str]) -> str | None:
        if not self.cache_size:
            return None
        reason = self._cache.get(key)
        if reason is not None:
            self._cache.move_to_end(key)
        return reason

    def _cache_put(self, key: tuple[str, str], reason: str) -> None:
        if not self.cache_size or reason not in REASONS:
            return
        self._cache[key] = reason
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
