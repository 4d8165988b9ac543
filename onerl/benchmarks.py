r"""The math benchmarks of the 1-shot RLVR paper: protocol, prompt templates, data files and scores.

Protocol (the Qwen2.5-Math evaluation harness as the paper ran it; every value can be overridden
from ``onerl eval``)::

    benchmark       samples  temperature  reported
    math500         1        0 (greedy)   accuracy
    minerva_math    1        0 (greedy)   accuracy
    olympiadbench   1        0 (greedy)   accuracy
    aime24          8        0.6          avg@8 (mean accuracy over the 8 samples of every problem)
    aime25          8        0.6          avg@8
    amc23           8        0.6          avg@8

with at most 3072 new tokens, top-p 1. When a benchmark draws n > 1 samples, pass@k (the unbiased
estimator ``1 - C(n-c, k) / C(n, k)``, averaged over problems) is reported next to avg@n.

Prompt templates (:mod:`onerl.templates`): ``qwen25-math-cot`` writes the harness's prompt itself
(system turn asking for a boxed answer, then the bare question, no chat-template call), ``llama``
and ``deepseek-distill`` the harness's Llama-3 and R1-Distill prompts; ``chat`` applies the
tokenizer's own chat template to one user turn; ``auto`` picks by the tokenizer's special tokens.

Protocol sets: ``qwen25-math`` (the table above) and ``r1-distill`` (the paper's appendix B.5 for
DeepSeek-R1-Distill-Qwen-1.5B: T 0.6, top-p 0.95, avg@16 on MATH500 / Minerva / OlympiadBench and
avg@64 on AIME24 / AIME25 / AMC23).

Data: ``DIR/<name>.jsonl``, one JSON object per line with ``problem`` and ``answer`` (and
optionally ``id``). Errors name the file and the line.

Self-reflection: a response counts when it contains one of the words (default "rethink",
"recheck", "recalculate"; case-insensitive, starting at a word boundary, so "Rechecking" counts).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from math import comb
from pathlib import Path

from .data import DataError, Row, jsonl_records, to_row
from .templates import (QWEN25_MATH_COT, TEMPLATES, prompt_ids, prompt_text,  # noqa: F401
                        resolve_template)

SIX = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench", "aime25")
MAX_TOKENS = 3072
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>")
REFLECTION_WORDS = ("rethink", "recheck", "recalculate")  # [P] section 3.2.4


@dataclass(frozen=True)
class Protocol:
    """How one benchmark is decoded: ``n`` samples per problem at ``temperature`` (0 = greedy)."""
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = MAX_TOKENS

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def label(self) -> str:
        return "greedy" if self.greedy and self.n == 1 else f"avg@{self.n} T={self.temperature:g}"


PROTOCOLS = {
    "math500": Protocol(1, 0.0), "minerva_math": Protocol(1, 0.0),
    "olympiadbench": Protocol(1, 0.0),
    "aime24": Protocol(8, 0.6), "aime25": Protocol(8, 0.6), "amc23": Protocol(8, 0.6),
}


_R1 = dict(temperature=0.6, top_p=0.95)
PROTOCOL_SETS = {
    "qwen25-math": PROTOCOLS,
    "r1-distill": {**{b: Protocol(16, **_R1) for b in ("math500", "minerva_math", "olympiadbench")},
                   **{b: Protocol(64, **_R1) for b in ("aime24", "aime25", "amc23")}},
}


def protocol_for(name: str, n: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, max_tokens: int | None = None,
                 protocol_set: str = "qwen25-math") -> Protocol:
    """The paper's protocol for ``name`` in ``protocol_set`` (greedy, one sample for unknown
    names), with any explicitly given value replacing the default."""
    if protocol_set not in PROTOCOL_SETS:
        raise ValueError(f"unknown protocol set {protocol_set!r}; one of {', '.join(PROTOCOL_SETS)}")
    base = PROTOCOL_SETS[protocol_set].get(name, Protocol())
    p = Protocol(n if n is not None else base.n,
                 temperature if temperature is not None else base.temperature,
                 top_p if top_p is not None else base.top_p,
                 max_tokens if max_tokens is not None else base.max_tokens)
    if p.n < 1 or p.max_tokens < 1 or p.temperature < 0 or not 0 < p.top_p <= 1:
        raise ValueError(f"{name}: invalid protocol {p} (need n >= 1, max_tokens >= 1, "
                         f"temperature >= 0, 0 < top_p <= 1)")
    if p.n > 1 and p.greedy:
        raise ValueError(f"{name}: {p.n} samples at temperature 0 would all be identical; "
                         "set --temperature > 0 or --n 1")
    return p


def parse_benchmarks(spec: str) -> list[str]:
    """``"math500,aime24"`` -> ``["math500", "aime24"]`` (``"all"`` = the paper's six)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return list(SIX)
    if not names:
        raise ValueError("--benchmarks: no benchmark named")
    if len(set(names)) != len(names):
        raise ValueError(f"--benchmarks: a benchmark is named twice in {spec!r}")
    return names


# ---------------------------------------------------------------- scores

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples: the probability
    that k samples drawn without replacement contain a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def reflection_regex(words=REFLECTION_WORDS) -> re.Pattern:
    """Case-insensitive pattern of the self-reflection words, each starting at a word boundary."""
    words = [w.strip() for w in words if w.strip()]
    if not words:
        raise ValueError("reflection words: the list is empty")
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + ")", re.IGNORECASE)


def count_reflections(texts, words=REFLECTION_WORDS) -> int:
    """How many of ``texts`` contain at least one self-reflection word."""
    pat = reflection_regex(words)
    return sum(1 for t in texts if pat.search(t))


# ---------------------------------------------------------------- data

def load_benchmark(data_dir: str | Path, name: str, limit: int | None = None) -> list[Row]:
    """Rows of ``DIR/<name>.jsonl``; every line must be a JSON object with ``problem`` and
    ``answer``. Raises :class:`onerl.data.DataError` naming the file and line."""
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"benchmark {name!r}: data file not found: {path}")
    rows = []
    for line_no, rec in jsonl_records(path):
        where = f"{path}, line {line_no}"
        for key in ("problem", "answer"):
            if rec.get(key) is None:
                raise DataError(f"{where}: missing field {key!r} (fields: {sorted(rec)})")
        if not isinstance(rec["problem"], str) or not rec["problem"].strip():
            raise DataError(f"{where}: field 'problem' must be non-empty text")
        rows.append(to_row(rec, len(rows), where, "problem", "answer"))
    if not rows:
        raise DataError(f"{path}: empty file (no JSON lines)")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        rows = rows[:limit]
    return rows


# ---------------------------------------------------------------- prompts

def _token_id(tokenizer, token: str) -> int | None:
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def stop_token_ids(tokenizer, folder: str | Path | None = None) -> list[int]:
    """End-of-turn / end-of-text ids: generation_config's eos, the tokenizer's eos and the
    harness's stop tokens (<|im_end|>, <|endoftext|>, </s>) where the vocabulary has them."""
    ids: set[int] = set()
    gen = Path(folder) / "generation_config.json" if folder else None
    if gen is not None and gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for tok in STOP_TOKENS:
        tid = _token_id(tokenizer, tok)
        if tid is not None:
            ids.add(tid)
    return sorted(ids)
