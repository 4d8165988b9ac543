"""The toy pool seen through the base model's own samples: which example should be pi1?

    python -m onerl.toy.pool [--model toy] [--k 16] [--out pool_gap.json]

For every pool example, ``k`` responses at the rollout temperature (0.6) from the base model:
their accuracy, how many are in careful mode, and the careful-vs-other gap (accuracy of the
careful responses minus that of the others). An example with a wide gap is one where the
reward separates the behaviour RL should spread (careful checking) from the behaviours it should
drop; the toy's pi1 was picked this way. The paper's own ranking -- the historical variance of
the per-epoch training accuracy -- is ``onerl train --recipe toy-pool`` followed by
``onerl select --history runs/toy_pool/acc_history.json``; the README compares the two.
"""
from __future__ import annotations

import argparse
import json

import torch

from . import score, world


def pool_stats(model_path: str, k: int = 16, temperature: float = 0.6, seed: int = 3) -> list:
    from transformers import AutoTokenizer

    from .. import models
    from ..engine import LLMEngine
    from ..templates import chat_prompt
    from ..trainer import resolve_model_path

    path = resolve_model_path(model_path)
    tok = AutoTokenizer.from_pretrained(path)
    engine = LLMEngine(models.load(path, dtype="float32"), max_num_seqs=1024,
                       max_cache_tokens=1 << 17)
    rows = world.example_pool()
    done = engine.generate([chat_prompt(tok, r["prompt"]) for r in rows], n=k, max_new_tokens=160,
                           temperature=temperature, seed=seed, stop_token_ids=[tok.eos_token_id],
                           use_tqdm=False)
    verdicts = [[] for _ in rows]
    for c in done:
        text = tok.decode(c.token_ids, skip_special_tokens=True)
        verdicts[c.prompt_index].append((score.strict_correct(text, rows[c.prompt_index]["answer"]),
                                         score.solution_mode(text)))
    out = []
    for r, v in zip(rows, verdicts):
        careful = [ok for ok, mode in v if mode == "careful"]
        other = [ok for ok, mode in v if mode != "careful"]
        rate = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        out.append({"id": r["id"], "template": r["template"], "acc": rate([ok for ok, _ in v]),
                    "careful": len(careful), "gap": rate(careful) - rate(other)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m onerl.toy.pool", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy", help="checkpoint folder (default: the toy base)")
    ap.add_argument("--k", type=int, default=16, help="samples per example")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the table as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    stats = pool_stats(args.model, args.k, seed=args.seed)
    # widest gap first; ties: the reward spread acc (1 - acc) -- GRPO's signal -- largest first
    ranked = sorted(stats, key=lambda s: (-s["gap"], -s["acc"] * (1 - s["acc"])))
    print(f"{'rank':>4}  {'id':<14}{'template':<10}{'acc':>6}{'careful':>9}{'gap':>7}")
    for j, s in enumerate(ranked, 1):
        print(f"{j:>4}  {s['id']:<14}{s['template']:<10}{s['acc']:>6.2f}{s['careful']:>9d}"
              f"{s['gap']:>7.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(ranked, f, indent=1)


if __name__ == "__main__":
    main()
