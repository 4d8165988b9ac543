"""``onerl eval``: score one or more checkpoints on the paper's math benchmarks.

    onerl eval MODEL_OR_CHECKPOINT [MORE ...] --data DIR \\
        [--benchmarks math500,aime24,amc23,minerva_math,olympiadbench,aime25] [--out DIR] \\
        [--recipe NAME] [--template auto|chat|qwen25-math-cot|llama|deepseek-distill] [--n N --temperature T --top-p P --max-tokens M --k K] \\
        [--limit L] [--seed S] [--reflection-words rethink,recheck,recalculate]

A model argument is a Hugging Face model folder, a run folder (its ``checkpoints/step_*`` are all
evaluated, oldest first), a folder of ``step_*`` checkpoints, ``toy`` or a hub id. The benchmark
files are read once; the checkpoints share one model object and one engine (weights are loaded
into the same tensors when the shapes match) and one verifier pool. Decoding and grading follow
:mod:`onerl.benchmarks` (protocol table, templates, pass@k, self-reflection words).

Outputs under ``--out``: ``summary.md`` and ``summary.json`` (per checkpoint and benchmark:
accuracy / avg@n, pass@k when n > 1, mean response length in tokens, truncation rate, reflection
counts, verdict reasons; the average over the evaluated benchmarks) and ``<label>/samples.jsonl``
(one line per response: benchmark, id, sample, prompt, response, extracted answer, gold, correct,
reason, tokens, finish_reason, reflection). Reflection counts are numbers of responses, each of the
n samples of a problem counted on its own (an avg@8 benchmark can count up to 8 per problem).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from . import benchmarks as B
from .templates import decode_responses


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``onerl`` subcommand parser."""
    p = sub.add_parser("eval", help="score checkpoints on the math benchmarks (paper protocol)")
    p.add_argument("models", nargs="+", metavar="MODEL_OR_CHECKPOINT")
    p.add_argument("--data", required=True, help="folder of <benchmark>.jsonl files (problem, answer)")
    p.add_argument("--benchmarks", default=",".join(B.SIX),
                   help="comma-separated names, or 'all' (default: the paper's six)")
    p.add_argument("--out", default="eval_results", help="output folder (default: eval_results)")
    p.add_argument("--recipe", default=None,
                   help="take the template, protocol set and max tokens from a training recipe")
    p.add_argument("--template", default="auto", choices=B.TEMPLATES)
    p.add_argument("--n", type=int, default=None, help="samples per problem (all benchmarks)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-tokens", type=int, default=None, help=f"new tokens (default {B.MAX_TOKENS})")
    p.add_argument("--k", type=int, default=None, help="pass@k when n > 1 (default: k = n)")
    p.add_argument("--limit", type=int, default=None, help="first L problems of each benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reflection-words", default=",".join(B.REFLECTION_WORDS))
    p.add_argument("--dtype", default="auto", help="model dtype (default: the config's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-num-seqs", type=int, default=256, help="sequences decoded together")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(func=main)
    return p


# ---------------------------------------------------------------- checkpoints

def expand_models(specs: list[str]) -> list[tuple[str, str]]:
    """(label, folder) for every checkpoint the arguments name (see the module docstring)."""
    from .trainer import resolve_model_path

    out: list[tuple[str, str]] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir() and not (p / "config.json").is_file():
            root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
            steps = sorted(d for d in root.glob("step_*") if (d / "config.json").is_file())
            if not steps:
                raise FileNotFoundError(f"{spec}: not a model folder (no config.json) and no "
                                        "step_* checkpoints in it or in its checkpoints/")
            out += [(d.name, str(d)) for d in steps]
        else:
            folder = resolve_model_path(spec)
            out.append((Path(folder).name or spec, folder))
    seen: dict[str, int] = {}
    labelled = []
    for label, folder in out:
        seen[label] = seen.get(label, 0) + 1
        labelled.append((label if seen[label] == 1 else f"{label}-{seen[label]}", folder))
    return labelled


class ModelSlot:
    """One model object and one engine, reused across checkpoints of the same architecture."""

    def __init__(self, dtype: str, device: str, max_num_seqs: int):
        import torch

        self.dtype, self.max_num_seqs = dtype, max_num_seqs
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                                   if device == "auto" else device)
        self.model = self.engine = None
        self.reloads = 0

    @staticmethod
    def _shape_key(cfg) -> dict:
        d = dataclasses.asdict(cfg)
        for k in ("extra", "torch_dtype", "eos_token_id"):
            d.pop(k, None)
        return d

    def load(self, folder: str) -> bool:
        """Make the slot hold ``folder``'s weights; True when they went into the existing model."""
        import torch

        from . import models
        from .engine import LLMEngine

        cfg_path = Path(folder) / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder}: no config.json")
        cfg = models.ModelConfig.from_hf(json.loads(cfg_path.read_text()))
        if self.model is not None and self._shape_key(cfg) == self._shape_key(self.model.config):
            dtype = next(self.model.parameters()).dtype
            fresh = models.load(folder, dtype=dtype, device="cpu")
            with torch.no_grad():
                self.model.load_state_dict(fresh.state_dict())
            del fresh
            self.reloads += 1
            return True
        self.engine = None  # free the old cache before the new model arrives
        self.model = models.load(folder, dtype=self.dtype, device=self.device)
        self.model.requires_grad_(False)
        self.model.eval()
        self.engine = LLMEngine(self.model, max_num_seqs=self.max_num_seqs)
        return False


# ---------------------------------------------------------------- one benchmark

def summarize_benchmark(name: str, records: list[dict], protocol: B.Protocol, k: int | None,
                        n_problems: int) -> dict:
    """Scores of one benchmark from its per-sample records."""
    from .reward import count_reasons
    from .reward.verdict import Verdict

    total = max(len(records), 1)
    acc = sum(r["correct"] for r in records) / total
    out = {"benchmark": name, "problems": n_problems, "n": protocol.n,
           "temperature": protocol.temperature, "top_p": protocol.top_p,
           "max_tokens": protocol.max_tokens, "protocol": protocol.label, "accuracy": acc,
           "response_len": sum(r["tokens"] for r in records) / total,
           "truncation_rate": sum(r["finish_reason"] == "length" for r in records) / total,
           "reflections": sum(r["reflection"] for r in records), "responses": len(records),
           "reasons": count_reasons(Verdict.of(r["reason"], None) for r in records)}
    if protocol.n > 1:
        kk = k or protocol.n
        by_problem: dict[int, list[bool]] = {}
        for r in records:
            by_problem.setdefault(r["problem_index"], []).append(r["correct"])
        out[f"avg@{protocol.n}"] = acc
        out["k"] = kk
        out[f"pass@{kk}"] = sum(B.pass_at_k(len(v), sum(v), kk) for v in by_problem.values()) \
            / max(len(by_problem), 1)
    return out


def run_benchmark(slot: ModelSlot, tokenizer, template: str, stops: list[int], name: str, rows,
                  protocol: B.Protocol, verifier, seed: int, words, progress: bool) -> list[dict]:
    """Generate and grade every (problem, sample) of one benchmark; per-sample records."""
    prompts = []
    for r in rows:
        ids = B.prompt_ids(tokenizer, r.text, template)
        if len(ids) >= slot.engine.max_model_len:
            raise ValueError(f"{name} id {r.id}: the prompt has {len(ids)} tokens, the model's "
                             f"limit is {slot.engine.max_model_len}")
        prompts.append(ids)
    done = slot.engine.generate(prompts, n=protocol.n, max_new_tokens=protocol.max_tokens,
                                temperature=protocol.temperature, top_p=protocol.top_p,
                                stop_token_ids=stops, seed=seed, use_tqdm=progress)
    texts = decode_responses(tokenizer, [c.token_ids for c in done])
    golds = [rows[c.prompt_index].answer for c in done]
    verdicts = verifier.score_batch(texts, golds, "eval")
    pat = B.reflection_regex(words)
    shown = {}
    return [{"benchmark": name, "id": rows[c.prompt_index].id, "sample": c.sample_index,
             "problem_index": c.prompt_index,
             "prompt": shown.setdefault(c.prompt_index, B.prompt_text(
                 rows[c.prompt_index].text, template, tokenizer)),
             "response": t, "answer": v.answer, "gold": g, "correct": bool(v.correct),
             "reason": v.reason, "tokens": len(c.token_ids), "finish_reason": c.finish_reason,
             "reflection": bool(pat.search(t))}
            for c, t, g, v in zip(done, texts, golds, verdicts)]


def checkpoint_summary(label: str, folder: str, template: str, per_bench: dict, secs: float) -> dict:
    """Totals over the benchmarks of one checkpoint (the paper's 'Avg.' is the plain mean)."""
    names = list(per_bench)
    n_resp = max(sum(b["responses"] for b in per_bench.values()), 1)
    return {"label": label, "model": folder, "template": template, "benchmarks": per_bench,
            "average": sum(b["accuracy"] for b in per_bench.values()) / max(len(names), 1),
            "average_of": names, "all_six": sorted(names) == sorted(B.SIX),
            "response_len": sum(b["response_len"] * b["responses"] for b in per_bench.values()) / n_resp,
            "truncation_rate": sum(b["truncation_rate"] * b["responses"]
                                   for b in per_bench.values()) / n_resp,
            "reflections": sum(b["reflections"] for b in per_bench.values()),
            "seconds": round(secs, 2)}


# ---------------------------------------------------------------- outputs

def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(results: list[dict], names: list[str]) -> str:
    """The Markdown summary: one row per checkpoint, then per-benchmark details."""
    avg = "Avg. (6)" if sorted(names) == sorted(B.SIX) else f"Avg. ({len(names)})"
    head = ["checkpoint", *names, avg, "mean len", "truncated %", "reflections"]
    lines = ["# onerl eval", "", "Accuracy in % (avg@n where n > 1).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["label"], *(_pct(r["benchmarks"][n]["accuracy"]) for n in names),
                 _pct(r["average"]), f"{r['response_len']:.0f}", _pct(r["truncation_rate"]),
                 str(r["reflections"])]
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        lines += ["", f"## {r['label']}", "", f"model `{r['model']}`, template `{r['template']}`, "
                  f"{r['seconds']:.1f} s", "",
                  "| benchmark | problems | protocol | accuracy % | pass@k % | mean len | "
                  "truncated % | reflections |", "|---|---|---|---|---|---|---|---|"]
        for n in names:
            b = r["benchmarks"][n]
            pk = f"{_pct(b['pass@' + str(b['k'])])} (k={b['k']})" if "k" in b else "-"
            lines.append(f"| {n} | {b['problems']} | {b['protocol']} | {_pct(b['accuracy'])} | "
                         f"{pk} | {b['response_len']:.0f} | {_pct(b['truncation_rate'])} | "
                         f"{b['reflections']} |")
    return "\n".join(lines) + "\n"


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def evaluate_checkpoints(args: argparse.Namespace) -> list[dict]:
    """The work of ``onerl eval`` (see the module docstring); returns the checkpoint summaries."""
    from transformers import AutoTokenizer

    from .reward import Verifier

    names = B.parse_benchmarks(args.benchmarks)
    words = [w for w in args.reflection_words.split(",") if w.strip()]
    B.reflection_regex(words)  # fail early on an empty list
    template_arg, protocol_set, max_tokens = args.template, "qwen25-math", args.max_tokens
    if getattr(args, "recipe", None):
        from .recipes import recipe_config
        ev = recipe_config(args.recipe).eval
        template_arg = ev.template if args.template == "auto" else args.template
        protocol_set = ev.protocol
        max_tokens = ev.max_tokens if max_tokens is None else max_tokens
    protocols = {n: B.protocol_for(n, args.n, args.temperature, args.top_p, max_tokens,
                                   protocol_set) for n in names}
    for n, p in protocols.items():
        if args.k is not None and p.n > 1 and not 1 <= args.k <= p.n:
            raise ValueError(f"--k {args.k}: {n} draws {p.n} samples per problem; need 1 <= k <= n")
    data = {n: B.load_benchmark(args.data, n, args.limit) for n in names}
    checkpoints = expand_models(args.models)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slot = ModelSlot(args.dtype, args.device, args.max_num_seqs)
    results: list[dict] = []
    tokenizer = None
    with Verifier(workers=2).start() as verifier:
        for ci, (label, folder) in enumerate(checkpoints, 1):
            t0 = time.time()
            reused = slot.load(folder)
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
            except Exception as e:  # noqa: BLE001 - a checkpoint without tokenizer files
                if tokenizer is None:
                    raise FileNotFoundError(f"{folder}: cannot load a tokenizer ({e})") from None
            tokenizer.model_max_length = slot.engine.max_model_len  # checked per prompt below
            template = B.resolve_template(tokenizer, template_arg)
            stops = B.stop_token_ids(tokenizer, folder)
            _say(progress, f"[{ci}/{len(checkpoints)} {label}] {folder} "
                           f"({'weights reloaded in place' if reused else 'model loaded'}, "
                           f"template {template})")
            ck_dir = out / label
            ck_dir.mkdir(parents=True, exist_ok=True)
            samples_path = ck_dir / "samples.jsonl"
            samples_path.write_text("")
            per_bench = {}
            for name in names:
                p, rows = protocols[name], data[name]
                tb = time.time()
                _say(progress, f"  {name}: {len(rows)} problems, {p.label}, "
                               f"max {p.max_tokens} tokens")
                recs = run_benchmark(slot, tokenizer, template, stops, name, rows, p, verifier,
                                     args.seed, words, progress)
                with open(samples_path, "a", encoding="utf-8") as f:
                    for r in recs:
                        f.write(json.dumps({k: v for k, v in r.items() if k != "problem_index"},
                                           ensure_ascii=False) + "\n")
                s = per_bench[name] = summarize_benchmark(name, recs, p, args.k, len(rows))
                extra = f" pass@{s['k']}={_pct(s['pass@' + str(s['k'])])}" if "k" in s else ""
                _say(progress, f"  {name}: acc={_pct(s['accuracy'])}%{extra} "
                               f"len={s['response_len']:.0f} trunc={_pct(s['truncation_rate'])}% "
                               f"reflections={s['reflections']} ({time.time() - tb:.1f} s)")
            res = checkpoint_summary(label, folder, template, per_bench, time.time() - t0)
            (ck_dir / "summary.json").write_text(json.dumps(res, indent=1))
            results.append(res)
            (out / "summary.json").write_text(json.dumps({
                "benchmarks": names, "protocols": {n: dataclasses.asdict(p)
                                                   for n, p in protocols.items()},
                "reflection_words": words, "seed": args.seed, "limit": args.limit,
                "checkpoints": results}, indent=1))
            (out / "summary.md").write_text(markdown(results, names))
    return results


def main(args: argparse.Namespace) -> int:
    """``onerl eval`` handler: errors in inputs print one line and return 2."""
    from .data import DataError

    try:
        results = evaluate_checkpoints(args)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"onerl eval: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(markdown(results, B.parse_benchmarks(args.benchmarks)).split("\n## ")[0].rstrip())
    print(f"\nsummary: {out / 'summary.md'} and {out / 'summary.json'}; samples: "
          f"{out}/<checkpoint>/samples.jsonl")
    return 0
