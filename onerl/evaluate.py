"""Greedy evaluation of a model on (problem, answer) rows through the engine.

Scores: ``acc_strict`` with the training verifier (boxed answers only), ``acc`` with the eval
verifier (also an explicit "final answer" line), ``boxed_rate``, ``reflection_rate`` (responses
containing "rethink", "recheck" or "recalculate", the paper's self-reflection words) and the mean
response length. Per-sample outputs are kept for writing to disk.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .benchmarks import REFLECTION_WORDS  # the paper's self-reflection words
from .reward import Verifier, format_reward
from .templates import decode_responses

REFLECTION = re.compile(r"\b(" + "|".join(REFLECTION_WORDS) + ")", re.IGNORECASE)


@dataclass
class EvalResult:
    summary: dict
    samples: list[dict] = field(default_factory=list)


def evaluate(engine, tokenizer, rows, make_prompt, max_new_tokens: int, stop_ids, *,
             temperature: float = 0.0, n: int = 1, seed: int = 0, verifier: Verifier | None = None,
             extra: dict | None = None) -> EvalResult:
    """``extra``: more accuracies, name -> correct(response, gold) (e.g. the toy's format-free
    score), reported as ``acc_<name>``."""
    prompts = [make_prompt(r) for r in rows]
    done = engine.generate(prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                           stop_token_ids=stop_ids, seed=seed, use_tqdm=False)
    texts = decode_responses(tokenizer, [c.token_ids for c in done])
    golds = [rows[c.prompt_index].answer for c in done]
    own = verifier is None
    verifier = verifier or Verifier(workers=2)
    try:
        strict = verifier.score_batch(texts, golds, "train")
        lenient = verifier.score_batch(texts, golds, "eval")
    finally:
        if own:
            verifier.close()
    samples = [{"id": rows[c.prompt_index].id, "sample": c.sample_index, "response": t, "gold": g,
                "answer": s.answer, "correct_strict": s.correct, "correct": e.correct,
                "reason": s.reason, "tokens": len(c.token_ids)}
               for c, t, g, s, e in zip(done, texts, golds, strict, lenient)]
    k = max(len(done), 1)
    summary = {
        "acc_strict": sum(s.correct for s in strict) / k,
        "acc": sum(e.correct for e in lenient) / k,
        "boxed_rate": sum(format_reward(t) for t in texts) / k,
        "reflection_rate": sum(bool(REFLECTION.search(t)) for t in texts) / k,
        "response_len": sum(len(c.token_ids) for c in done) / k,
    }
    for name, correct in (extra or {}).items():
        summary[f"acc_{name}"] = sum(bool(correct(t, g)) for t, g in zip(texts, golds)) / k
    return EvalResult(summary, samples)
