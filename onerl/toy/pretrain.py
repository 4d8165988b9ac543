"""Pretrain the toy base model (the shipped ``onerl/toy/base`` checkpoint).

    python -m onerl.toy.pretrain --out onerl/toy/base

The model is a Hugging Face ``Qwen2ForCausalLM`` (hidden 128, 4 layers, 4
query / 2 key-value heads, MLP 384, tied embeddings, ~0.8 M parameters) over
the toy tokenizer.  It is trained from scratch on an endless deterministic
stream of toy-world documents (``world.pretrain_examples``): each document is
the chat-formatted prompt followed by a solution in one of the three modes and
the end-of-turn token.  By default the loss is on every token of the
document except padding (``--loss all``): the prompt tokens are cheap extra
signal -- the noun is repeated inside every problem, which teaches the copy
("induction") circuits the solutions need to restate operands, and in
measurements it made the operand-copying phase transition come earlier.
``--loss assistant`` restricts it to the solution and ``<|im_end|>``.

The model needs many optimizer steps more than many tokens (copying the
operands out of the prompt appears suddenly after ~1000 steps), hence the
small batch of 16 documents.

Batches hold documents of similar length (a chunk of 32 batches is sorted by
length, then the batch order is shuffled) to avoid padding.  Optimiser: AdamW
(betas 0.9/0.95, weight decay 0.1), linear warm-up then cosine decay to 10 %.

Determinism: the data stream, initialisation and batch order come from
``--seed``; ``torch.use_deterministic_algorithms`` is on.  CPU float results
can depend on the thread count, so the run is bit-reproducible for a fixed
``--threads`` (the shipped checkpoint used the defaults).

At the end the checkpoint (config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json) is written to
``--out`` and greedy held-out metrics are printed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch

from . import evaluate, tokenizer as toytok, world

MODEL_SHAPE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2)


def model_config(vocab: dict):
    from transformers import Qwen2Config

    # Documents are < 256 tokens; the nominal context is longer so that prompts from real
    # benchmark files (a byte-level fallback makes them long) still run through `onerl eval`.
    return Qwen2Config(
        vocab_size=len(vocab), max_position_embeddings=4096, rope_theta=10000.0,
        tie_word_embeddings=True, rms_norm_eps=1e-6, use_cache=True,
        bos_token_id=None, eos_token_id=vocab[toytok.EOS], pad_token_id=vocab[toytok.PAD],
        dtype="float32", **MODEL_SHAPE)


def batches(seed: int, batch_size: int, tok, drill_rows: int = 0, chunk: int = 32,
            loss_on: str = "all"):
    """Endless (input_ids, labels) batches of ``batch_size`` documents plus
    ``drill_rows`` arithmetic drill rows; labels are -100 on padding (and on
    document prompts if ``loss_on == "assistant"``)."""
    stream = world.pretrain_examples(seed)
    rng = random.Random(seed + 1)
    drill_rng = random.Random(seed + 2)
    pad = tok.token_to_id(toytok.PAD)
    while True:
        docs = [next(stream) for _ in range(batch_size * chunk)]
        prompts = tok.encode_batch([toytok.render_prompt(p.prompt) for p, _, _ in docs])
        answers = tok.encode_batch([sol + toytok.EOS for _, _, sol in docs])
        seqs = sorted(((p.ids, a.ids) for p, a in zip(prompts, answers)),
                      key=lambda s: len(s[0]) + len(s[1]))
        groups = [seqs[i:i + batch_size] for i in range(0, len(seqs), batch_size)]
        rng.shuffle(groups)
        for group in groups:
            drills = tok.encode_batch([world.drill_text(drill_rng) for _ in range(drill_rows)])
            rows = [(p, a, len(p) if loss_on == "assistant" else 0) for p, a in group]
            rows += [([], d.ids, 0) for d in drills]
            width = max(len(p) + len(a) for p, a, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            for row, (p, a, start) in enumerate(rows):
                ids[row, :len(p) + len(a)] = torch.tensor(p + a)
                labels[row, start:len(p) + len(a)] = ids[row, start:len(p) + len(a)]
            yield ids, labels


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save(model, out: str) -> None:
    from transformers import GenerationConfig

    cfg = model.config
    model.generation_config = GenerationConfig(
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, do_sample=False,
        max_new_tokens=80)
    model.save_pretrained(out)
    # Newer transformers write rope_theta inside rope_parameters; keep the flat
    # key too so that loaders expecting the classic Qwen2 config.json work.
    path = os.path.join(out, "config.json")
    with open(path) as f:
        data = json.load(f)
    data.setdefault("rope_theta", (data.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    toytok.save_tokenizer(out)


def train(args) -> None:
    from transformers import Qwen2ForCausalLM

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    tok = toytok.build_tokenizer()
    config = model_config(tok.get_vocab())
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.3f} M parameters, vocab {config.vocab_size}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    hf_tok = _hf_tokenizer(config) if args.eval_every else None
    data = batches(args.seed, args.batch_size, tok, args.drill_rows, loss_on=args.loss)
    start, tokens, ema = time.time(), 0, None
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        ids, labels = next(data)
        model.train()
        loss = model(input_ids=ids, attention_mask=(ids != config.pad_token_id).long(),
                     labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((ids != config.pad_token_id).sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {ema:.4f}  tokens {tokens / 1e6:.2f}M  "
                  f"{time.time() - start:.0f}s", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            model.eval()
            res = evaluate.evaluate_heldout(model, hf_tok, n=120)
            print(f"  held-out(120) strict {res['strict']:.3f} reflection "
                  f"{res['reflection']:.3f} modes {res['mode_share']}", flush=True)
    model.eval()
    save(model, args.out)
    print(f"saved {args.out} after {time.time() - start:.0f}s of training", flush=True)


def _hf_tokenizer(config):
    """The tokenizer exactly as AutoTokenizer will load it from the checkpoint."""
    import tempfile
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        toytok.save_tokenizer(tmp)
        return AutoTokenizer.from_pretrained(tmp)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m onerl.toy.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--drill-rows", type=int, default=4,
                    help="arithmetic drill rows (9 lines each) added to every batch")
    ap.add_argument("--loss", choices=("all", "assistant"), default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=400, help="held-out problems (0: skip)")
    args = ap.parse_args(argv)
    start = time.time()
    train(args)
    if args.eval_n:
        model, tok = evaluate.load(args.out)
        res = evaluate.evaluate_heldout(model, tok, args.eval_n)
        print(evaluate.format_summary(res))
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
