"""Batched decoding and evaluation of a toy checkpoint (CPU friendly).

``python -m onerl.toy.evaluate --model onerl/toy/base`` prints greedy held-out
metrics (strict / format-free accuracy, boxed rate, reflection rate, accuracy
per solution mode and per template).  ``--pool K`` additionally samples K
responses per pool example at ``--temperature`` (default 0.6) and ranks the
pool by how much the careful mode beats the other modes on that example --
the criterion for choosing the toy's 1-shot training example.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from . import score, world


def load(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, tok


def chat_prompt(tok, user_content: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": user_content}], add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def generate(model, tok, prompts, max_new_tokens: int = 80, temperature: float = 0.0,
             seed: int = 0, batch_size: int = 200) -> list:
    """Responses (text after the prompt, cut at end-of-turn) for user prompts."""
    torch.manual_seed(seed)
    tok.padding_side = "left"
    texts = [chat_prompt(tok, p) for p in prompts]
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        kwargs = dict(do_sample=False)
        if temperature > 0:
            kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **kwargs)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += [score.clean(t) for t in tok.batch_decode(new, skip_special_tokens=False)]
    return out


def evaluate_heldout(model, tok, n: int = 400, temperature: float = 0.0, seed: int = 0) -> dict:
    """Metrics on the held-out set; also returns the responses."""
    rows = world.heldout_set(n)
    responses = generate(model, tok, [r["prompt"] for r in rows], temperature=temperature,
                         seed=seed)
    result = score.summarize(responses, [r["answer"] for r in rows],
                             groups=[r["template"] for r in rows])
    result["responses"] = responses
    return result


def pool_report(model, tok, rows, k: int = 16, temperature: float = 0.6, seed: int = 0) -> list:
    """Per pool example: mode shares and strict accuracy per mode over k samples."""
    prompts = [r["prompt"] for r in rows for _ in range(k)]
    responses = generate(model, tok, prompts, temperature=temperature, seed=seed)
    report = []
    for j, row in enumerate(rows):
        stats = defaultdict(list)
        for resp in responses[j * k:(j + 1) * k]:
            stats[score.solution_mode(resp)].append(score.strict_correct(resp, row["answer"]))
        acc = {m: sum(v) / len(v) for m, v in stats.items()}
        others = [ok for m, v in stats.items() if m != "careful" for ok in v]
        other_acc = sum(others) / len(others) if others else 0.0
        report.append({
            "id": row["id"], "template": row["template"], "answer": row["answer"],
            "mode_count": {m: len(v) for m, v in sorted(stats.items())},
            "mode_strict": {m: round(a, 3) for m, a in sorted(acc.items())},
            "all_strict": sum(map(sum, stats.values())) / k,
            "careful_margin": acc.get("careful", 0.0) - other_acc,
        })
    return report


def format_summary(res: dict) -> str:
    lines = [
        f"greedy held-out (n={res['n']}): strict {res['strict']:.3f}  "
        f"format-free {res['format_free']:.3f}  boxed {res['boxed']:.3f}  "
        f"reflection {res['reflection']:.3f}",
        "mode share:  " + "  ".join(f"{m} {v:.2f}" for m, v in res["mode_share"].items()),
        "mode strict: " + "  ".join(f"{m} {v:.2f}" for m, v in res["mode_strict"].items()),
        "template strict: " + "  ".join(
            f"{t.name}{'' if t.in_pool else '*'} {res['group_strict'].get(t.name, float('nan')):.2f}"
            for t in world.TEMPLATES) + "   (* = never in the pool)",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m onerl.toy.evaluate", description=__doc__)
    ap.add_argument("--model", default="onerl/toy/base")
    ap.add_argument("--n", type=int, default=400, help="held-out problems")
    ap.add_argument("--pool", type=int, default=0, help="samples per pool example (0: skip)")
    ap.add_argument("--pool-size", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.6, help="for --pool sampling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--show", type=int, default=0, help="print this many greedy responses")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    res = evaluate_heldout(model, tok, args.n)
    print(format_summary(res))
    for resp in res["responses"][:args.show]:
        print("---\n" + resp)
    if args.pool:
        report = pool_report(model, tok, world.example_pool(args.pool_size), k=args.pool,
                             temperature=args.temperature)
        report.sort(key=lambda r: -r["careful_margin"])
        for r in report:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
