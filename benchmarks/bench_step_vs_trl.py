"""One GRPO step of onerl's ``Trainer`` against TRL's ``GRPOTrainer`` on the CPU, and their losses
on one identical batch.

    pip install -c constraints.txt "trl==1.16.0" accelerate datasets   # the optional extra "bench"
    python benchmarks/bench_step_vs_trl.py                 # warm-up + 3 timed steps per side
    python benchmarks/bench_step_vs_trl.py --steps 5 --json out.json
    python benchmarks/bench_step_vs_trl.py --only onerl --profile    # where onerl's step goes

Both sides start from the same saved weights: a random Qwen2 (hidden 256, 4 layers, MLP 512,
4 query / 2 key-value heads, vocabulary 2048 tied, ~2.9 M parameters, fp32) with the toy
tokenizer, and train on one math problem: 16 prompts x 8 samples x 64 new tokens at T = 0.6
(top-p / top-k off), the math-verifier reward, group advantages (unbiased std, eps 1e-4),
clipped GRPO loss (0.2) with the k3 KL to a frozen fp32 reference (coef 0.001) and no entropy
bonus, sequence-mean of token-means, AdamW (lr 1e-6, betas 0.9/0.999, eps 1e-8, no weight decay,
constant lr), grad clip 1.0, one optimizer step per rollout.

Fixed response lengths: onerl's ``Trainer`` does not expose the engine's ``ignore_eos``, so the
weights make end-of-text impossible instead. Embedding dimension 0 is +1 for every real token
and -8 for the special tokens and the padded vocabulary ids (>= the tokenizer's 426 ordinary
tokens); through the tied LM head those ids get a log-probability below -60 at T = 0.6, so
neither side ever samples them and every response is 64 tokens (the mean lengths are printed).

Reward: both sides run the same work, onerl's math verifier (``onerl.rewarding.Rewarder("math")``
on the decoded responses, gold "19"); TRL gets it as a plain reward function.

TRL settings that differ from its defaults and are set here to compute the same math:
loss_type="grpo" (default "dapo"), beta=0.001 with use_bias_correction_kl=False,
activation_checkpointing=False, bf16=False (TRL would autocast to bf16 even on a CPU),
optim="adamw_torch", lr_scheduler_type="constant", use_cpu=True, no vLLM. onerl settings that
differ from its defaults: algo.entropy_coef=0, algo.adv_eps=1e-4, algo.loss_agg=
seq-mean-token-mean (TRL's "grpo"; equal to token-mean when all lengths are equal),
model.ref_dtype=float32, optim.weight_decay=0.

Timing: wall time of each step, median of --steps steps after one warm-up step per side, one
process, --threads threads. The steps are interleaved (one onerl step after each timed TRL
step), so both sides see the same load on a shared machine; the median of the per-pair ratios
and the process CPU time per step (all threads) are printed too, as checks on noise. onerl's
split comes from its metrics (rollout / reward / train, train including the reference forward);
TRL's from wrappers around its methods (rollout = transformers' generate, reward = the reward
function, ref+prep = the reference forward and bookkeeping in _generate_and_score_completions,
train = the rest of the step: policy forward, backward, clip, AdamW).

Matmul work: the GFLOP of each side's step (``gemm_work``: onerl runs the shared prompt once,
TRL once per sequence) and this machine's F.linear rate at the step's shapes, measured after the
steps, give each side's pure-matmul time: how much of a step is matmul and how much is not.

Loss check: 4 different prompts x 8 fixed responses (lengths 16-64, random ordinary tokens),
fixed 0/1 rewards (one group all equal), a policy that differs from the reference by a small
perturbation. TRL runs its own pipeline on that batch (``_generate_and_score_completions`` with
generation replaced by the fixed responses and a reward function returning the fixed rewards:
its prompt tokenization, advantages and reference log-probs) and then ``compute_loss``; onerl runs
``group_advantages`` and ``Trainer.backward`` (``response_logprobs`` + ``grpo_loss`` over packed
micro-batches). Compared: advantages, per-token log-probs, the loss and the gradient of the tied
embedding, once on-policy (as in the step) and once with given old log-probs (ratio != 1,
clipping active). Definitions that still differ, inactive here: onerl clamps k3 to [-10, 10]
and log-ratios to [-20, 20], TRL does neither; TRL divides by the gradient-accumulation count
(1 here). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import linear_rate  # noqa: E402

from onerl import models  # noqa: E402
from onerl.config import build  # noqa: E402
from onerl.data import chat_prompt  # noqa: E402
from onerl.rewarding import Rewarder  # noqa: E402
from onerl.toy.tokenizer import EOS, save_tokenizer  # noqa: E402
from onerl.toy.world import SUFFIX  # noqa: E402
from onerl_kernels import group_advantages  # noqa: E402

SHAPE = dict(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2)
PROBLEM = ("Tom has 12 apples and buys 7 more. How many apples does Tom have now?" + SUFFIX, "19")
CHECK_PROBLEMS = [PROBLEM,
                  ("Ann reads 15 pages a day. How many pages does she read in 4 days?" + SUFFIX,
                   "60"),
                  ("There are 47 birds and 38 fly away. How many birds are left?" + SUFFIX, "9"),
                  ("What is 6 times 7?" + SUFFIX, "42")]
PROMPTS, G, NEW_TOKENS, TEMPERATURE, LR = 16, 8, 64, 0.6, 1e-6
CLIP, KL_COEF, ADV_EPS = 0.2, 0.001, 1e-4


# ---------------------------------------------------------------------------------- the world


def make_world(root: Path) -> dict:
    """Model folders (initial weights; a perturbed policy for the loss check), the data file."""
    base = root / "model"
    tok = save_tokenizer(str(base))
    n_plain = min(tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", EOS))
    assert n_plain == tok.get_vocab_size() - 3, "the special tokens are expected last"
    cfg = models.ModelConfig.from_hf(dict(model_type="qwen2", max_position_embeddings=512,
                                          tie_word_embeddings=True, rope_theta=10000.0,
                                          eos_token_id=tok.token_to_id(EOS),
                                          torch_dtype="float32", **SHAPE))
    model = models.build(cfg, torch.float32, seed=0)
    with torch.no_grad():  # no special / padded id can ever be sampled (see the module doc)
        model.embed_tokens.weight[:, 0] = 1.0
        model.embed_tokens.weight[n_plain:, 0] = -8.0
    models.save(model, str(base), copy_files_from=str(base))
    n_params = sum(p.numel() for p in model.parameters())

    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
    policy = root / "policy"
    models.save(model, str(policy), copy_files_from=str(base))

    data = root / "one.jsonl"
    data.write_text(json.dumps({"id": 0, "prompt": PROBLEM[0], "answer": PROBLEM[1]}) + "\n")
    return dict(model=str(base), policy=str(policy), data=str(data), n_params=n_params,
                n_plain=n_plain)


# ---------------------------------------------------------------------------------- onerl


def onerl_trainer(world: dict, out: Path, threads: int):
    from onerl.trainer import Trainer
    kv = {"model.path": world["model"], "model.dtype": "float32", "model.ref_dtype": "float32",
          "data.train_files": world["data"], "rollout.n": G, "rollout.max_new_tokens": NEW_TOKENS,
          "rollout.temperature": TEMPERATURE, "rollout.top_p": 1.0, "rollout.top_k": -1,
          "rollout.kv_budget_tokens": 65536, "algo.reward": "math", "algo.kl_type": "k3",
          "algo.kl_coef": KL_COEF, "algo.entropy_coef": 0.0, "algo.adv_eps": ADV_EPS,
          "algo.adv_std": "unbiased", "algo.adv_scale": "group", "algo.clip_low": CLIP,
          "algo.clip_high": CLIP, "algo.loss_agg": "seq-mean-token-mean", "optim.lr": LR,
          "optim.weight_decay": 0.0, "optim.grad_clip": 1.0, "optim.warmup_steps": 0,
          "optim.first_step_lr_zero": "false", "trainer.train_batch_size": PROMPTS,
          "trainer.micro_batch_tokens": 16384, "trainer.eval_every": 0, "trainer.save_every": 0,
          "trainer.eval_files": "[]", "trainer.tensorboard": "false", "trainer.progress": "false",
          "trainer.threads": threads, "trainer.device": "cpu", "trainer.seed": 1,
          "trainer.out_dir": str(out)}
    return Trainer(build("toy", None, [f"{k}={v}" for k, v in kv.items()]))


def onerl_step(tr, i: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    m = tr.train_step()
    m["wall_s"], m["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    print(f"  onerl step {i}{' (warm-up)' if i == 0 else ''}: {m['wall_s']:.3f} s "
          f"[cpu {m['cpu_s']:.3f} s] (rollout {m['time/rollout_s']:.3f}, reward "
          f"{m['time/reward_s']:.3f}, train {m['time/train_s']:.3f}), mean response "
          f"{m['response_len']:.1f} tokens", flush=True)
    return m


def summary(rows: list[dict], rollout: str, reward: str, train: str, ref: str | None) -> dict:
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return dict(step_s=med("wall_s"), min_s=min(r["wall_s"] for r in rows),
                max_s=max(r["wall_s"] for r in rows), cpu_s=med("cpu_s"), rollout_s=med(rollout),
                reward_s=med(reward), ref_s=med(ref) if ref else None, train_s=med(train),
                response_len=float(statistics.mean(r["response_len"] for r in rows)))


def profile_onerl(tr, top: int = 25) -> None:
    """One more step under cProfile (Python view) and torch.profiler (operator view)."""
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    tr.train_step()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
    print("\n--- cProfile of one onerl step (cumulative) ---")
    print("\n".join(s.getvalue().splitlines()[:top + 12]))
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    print("\n--- cProfile of one onerl step (own time) ---")
    print("\n".join(s.getvalue().splitlines()[:top + 12]))
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as p:
        tr.train_step()
    print("\n--- torch.profiler of one onerl step (self CPU time) ---")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


# ---------------------------------------------------------------------------------- TRL


class _State:
    """What the TRL reward function and the timing wrappers share."""
    rewarder: Rewarder | None = None
    fixed_rewards: list[float] | None = None


def math_reward(prompts, completions, answer, **kwargs):
    """onerl's math verifier, the same call the onerl Trainer makes (or fixed rewards)."""
    if _State.fixed_rewards is not None:
        return list(_State.fixed_rewards)
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    rewards, _ = _State.rewarder(texts, list(answer))
    return rewards.tolist()


def trl_trainer(world: dict, out: Path, steps: int):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=PROMPTS * G,
        num_generations=G, max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_p=1.0,
        top_k=0, loss_type="grpo", scale_rewards="group", beta=KL_COEF,
        use_bias_correction_kl=False, num_iterations=1, epsilon=CLIP, learning_rate=LR,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, bf16=False,
        fp16=False, activation_checkpointing=False, use_cpu=True, use_vllm=False,
        report_to="none", logging_strategy="no", save_strategy="no", disable_tqdm=True, seed=1,
        shuffle_dataset=False, model_init_kwargs={"dtype": torch.float32})
    rows = [{"prompt": [{"role": "user", "content": PROBLEM[0]}], "answer": PROBLEM[1]}] * PROMPTS
    tok = AutoTokenizer.from_pretrained(world["model"])
    trainer = GRPOTrainer(model=world["model"], reward_funcs=math_reward, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    assert not trainer.args.gradient_checkpointing and not trainer.args.bf16
    assert trainer.model.dtype == torch.float32 and trainer.ref_model.dtype == torch.float32
    return trainer


def bench_trl(trainer, steps: int, after_step=None) -> list[dict]:
    """Warm-up + ``steps`` TRL steps; ``after_step(i)`` runs after timed step i (outside it)."""
    from transformers import TrainerCallback

    cur = {"gen": 0.0, "reward": 0.0, "score": 0.0, "lens": []}
    log = []

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            res = fn(*a, **kw)
            cur[name] += time.perf_counter() - t0
            if name == "gen":
                cur["lens"] += [len(c) for c in res[0]]
            return res
        return wrapper

    trainer._generate_single_turn = timed("gen", trainer._generate_single_turn)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    score = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = timed("score", score)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            cur.update(gen=0.0, reward=0.0, score=0.0, lens=[], t0=time.perf_counter(),
                       c0=time.process_time())

        def on_step_end(self, args, state, control, **kw):
            wall = time.perf_counter() - cur["t0"]
            r = dict(wall_s=wall, cpu_s=time.process_time() - cur["c0"], rollout_s=cur["gen"],
                     reward_s=cur["reward"],
                     ref_s=cur["score"] - cur["gen"] - cur["reward"], train_s=wall - cur["score"],
                     response_len=statistics.mean(cur["lens"]))
            i = len(log)
            print(f"  TRL step {i}{' (warm-up)' if i == 0 else ''}: {wall:.3f} s "
                  f"[cpu {r['cpu_s']:.3f} s] "
                  f"(rollout {r['rollout_s']:.3f}, reward {r['reward_s']:.3f}, ref+prep "
                  f"{r['ref_s']:.3f}, train {r['train_s']:.3f}), mean response "
                  f"{r['response_len']:.1f} tokens", flush=True)
            log.append(r)
            if i and after_step is not None:
                after_step(i)

    trainer.add_callback(StepTimer())
    trainer.train()
    assert len(log) == steps + 1, f"expected {steps + 1} TRL steps, got {len(log)}"
    return log[1:]


# ---------------------------------------------------------------------------------- loss check


def fixed_batch(n_plain: int):
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(16, NEW_TOKENS + 1, (len(CHECK_PROBLEMS) * G,), generator=g).tolist()
    lengths[0] = NEW_TOKENS
    responses = [torch.randint(0, n_plain, (n,), generator=g).tolist() for n in lengths]
    rewards = torch.randint(0, 2, (len(CHECK_PROBLEMS) * G,), generator=g).float()
    rewards[G:2 * G] = 1.0  # one group with equal rewards: zero advantage, zero std
    rewards[0], rewards[1] = 1.0, 0.0
    return responses, rewards


def loss_check(tr, trainer, world: dict) -> dict:
    """The same batch through TRL's loss path and onerl's; see the module doc."""
    from safetensors.torch import load_file

    responses, rewards = fixed_batch(world["n_plain"])
    prompts = [chat_prompt(tr.tokenizer, p) for p, _ in CHECK_PROBLEMS]
    prompts_rep = [prompts[i // G] for i in range(len(responses))]
    n = len(responses)

    # Identical weights on both sides: the perturbed policy, the initial reference.
    policy = models.load(world["policy"], dtype="float32")
    with torch.no_grad():
        for p, q in zip(tr.actor.parameters(), policy.parameters()):
            p.copy_(q)
    missing, unexpected = trainer.model.load_state_dict(
        load_file(os.path.join(world["policy"], "model.safetensors")), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    assert torch.equal(trainer.model.lm_head.weight, trainer.model.model.embed_tokens.weight)

    # ---- TRL: its own pipeline on the fixed responses and rewards
    seen_prompts = []

    def fixed_generation(prompt_ids, *a, **kw):
        seen_prompts.extend(prompt_ids)
        return [list(r) for r in responses], None

    rows = [{"prompt": [{"role": "user", "content": p}], "answer": a}
            for p, a in CHECK_PROBLEMS for _ in range(G)]
    gen_before = trainer._generate_single_turn
    trainer._generate_single_turn = fixed_generation
    _State.fixed_rewards = rewards.tolist()
    trainer.model.train()
    if not getattr(trainer, "current_gradient_accumulation_steps", None):
        trainer.current_gradient_accumulation_steps = 1
    try:
        batch = trainer._generate_and_score_completions(rows)
    finally:
        trainer._generate_single_turn, _State.fixed_rewards = gen_before, None
    assert [list(p) for p in seen_prompts] == prompts_rep, "TRL and onerl tokenize differently"
    C = batch["completion_ids"].shape[1]

    def trl_loss(extra: dict):
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, {**batch, **extra})
        loss.backward()
        return loss.item(), trainer.model.model.embed_tokens.weight.grad.clone()

    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        am = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        trl_lp, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, am, C)

    # ---- onerl: group_advantages + Trainer.backward (response_logprobs + grpo_loss)
    adv = group_advantages(rewards, G, ADV_EPS, "unbiased", "group")
    ref = tr._frozen_logprobs(tr.ref, prompts_rep, responses)
    lengths = [len(p) + len(r) for p, r in zip(prompts_rep, responses)]
    with torch.no_grad():
        lp, _, mask = tr._logprobs(tr.actor, prompts_rep, responses, need_entropy=False, grad=False)

    def onerl_loss(old):
        tr.opt.zero_grad(set_to_none=True)
        sums = tr.backward(list(range(n)), prompts_rep, responses, adv, old, ref, lengths)
        return sums["loss"], tr.actor.embed_tokens.weight.grad.clone()

    m = batch["completion_mask"].bool()
    out = {"check_sequences": n, "check_tokens": int(m.sum()),
           "adv_max_abs_diff": (adv - batch["advantages"]).abs().max().item(),
           "logp_max_abs_diff": (lp[:, :C][m] - trl_lp[m]).abs().max().item(),
           "ref_logp_max_abs_diff": max(
               (ref[i] - batch["ref_per_token_logps"][i, :len(r)]).abs().max().item()
               for i, r in enumerate(responses))}

    g = torch.Generator().manual_seed(3)
    noise = (torch.rand(lp.shape, generator=g) - 0.5) * 0.6    # ratios in about [0.74, 1.35]
    old_grid = (lp + noise) * mask
    old = [old_grid[i, :len(r)] for i, r in enumerate(responses)]
    for tag, trl_extra, onerl_old in (("", {}, None),
                                      ("_clip", {"old_per_token_logps": old_grid[:, :C]}, old)):
        lt, gt = trl_loss(trl_extra)
        lo, go = onerl_loss(onerl_old)
        out.update({f"loss{tag}_onerl": lo, f"loss{tag}_trl": lt,
                    f"loss{tag}_abs_diff": abs(lo - lt),
                    f"grad{tag}_rel_diff": ((go - gt).norm() / gt.norm()).item()})
    ratio = torch.exp(lp - old_grid)[mask]
    out["clip_frac"] = ((ratio < 1 - CLIP) | (ratio > 1 + CLIP)).float().mean().item()
    return out


# ---------------------------------------------------------------------------------- GEMM work


def gemm_work(prompt_len: int) -> dict:
    """Matmul GFLOP one step needs on each side (attention scores left out: < 2 % here).

    Per token the decoder body costs 2 * body and the LM head 2 * V * H. onerl: the prompt is
    prefilled once and the 1-shot rows run it once per micro-batch (shared-prompt forward);
    logits only where a token is predicted. TRL: every sequence carries its prompt through
    generate's prefill, the reference forward and the policy forward (logits of the completion
    only). Backward = 2 x forward on both sides."""
    H, I, L, V = (SHAPE[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                     "vocab_size"))
    D = H // SHAPE["num_attention_heads"]
    body = L * (H * D * (SHAPE["num_attention_heads"] * 2 + 2 * SHAPE["num_key_value_heads"])
                + 3 * H * I)
    n, resp, head = PROMPTS * G, NEW_TOKENS, V * H
    decode = n * (resp - 1) * (body + head)          # tokens 2..R of every response
    onerl_fwd = (prompt_len + n * (resp - 1)) * body + n * resp * head
    trl_fwd = n * (prompt_len + resp - 1) * body + n * resp * head
    return {"onerl": 2e-9 * (prompt_len * body + n * head + decode + 4 * onerl_fwd),
            "trl": 2e-9 * (n * prompt_len * body + n * head + decode + 4 * trl_fwd)}


def gemm_rate() -> float:
    """F.linear's best rate at the step's large shapes (all response tokens as rows)."""
    return linear_rate(PROMPTS * G * NEW_TOKENS,
                       [(SHAPE["hidden_size"], 2 * SHAPE["intermediate_size"]),
                        (SHAPE["intermediate_size"], SHAPE["hidden_size"]),
                        (SHAPE["hidden_size"], SHAPE["vocab_size"])], reps=3)


# ---------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("both", "onerl", "trl"), default="both",
                    help="one side only (no speedup, no loss check)")
    ap.add_argument("--profile", action="store_true", help="profile one extra onerl step")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    do_onerl, do_trl = args.only in ("both", "onerl"), args.only in ("both", "trl")

    res: dict = {"benchmark": "grpo step vs trl", "device": "cpu", "threads": args.threads,
                 "steps": args.steps, "prompts": PROMPTS, "generations": G,
                 "max_new_tokens": NEW_TOKENS, "torch": torch.__version__}
    sides, check = {}, None
    with tempfile.TemporaryDirectory(prefix="bench_step_vs_trl-") as tmp:
        root = Path(tmp)
        world = make_world(root)
        res["model_params"] = world["n_params"]
        print(f"model: Qwen2 {SHAPE}, {world['n_params'] / 1e6:.2f} M params, fp32; "
              f"{PROMPTS} prompts x {G} samples x {NEW_TOKENS} tokens, {args.threads} threads",
              flush=True)
        tr = trainer = None
        _State.rewarder = Rewarder("math")
        try:
            onerl_rows = []
            if do_onerl:
                tr = onerl_trainer(world, root / "onerl", args.threads)
                res["prompt_tokens"] = len(tr.prompts[0])
                onerl_step(tr, 0)
            if do_trl:
                import transformers
                import trl
                res.update(trl=trl.__version__, transformers=transformers.__version__)
                trainer = trl_trainer(world, root / "trl", args.steps + 1)
                # With both sides, one onerl step follows each timed TRL step, so the two see the
                # same load on a shared machine (paired measurements).
                pair = (lambda i: onerl_rows.append(onerl_step(tr, i))) if do_onerl else None
                trl_rows = bench_trl(trainer, args.steps, pair)
                sides["TRL"] = summary(trl_rows, "rollout_s", "reward_s", "train_s", "ref_s")
            else:
                onerl_rows = [onerl_step(tr, i) for i in range(1, args.steps + 1)]
            if do_onerl:
                sides["onerl"] = summary(onerl_rows, "time/rollout_s", "time/reward_s",
                                         "time/train_s", None)
                if args.profile:
                    profile_onerl(tr)
            if do_onerl and do_trl:
                check = loss_check(tr, trainer, world)
        finally:
            _State.rewarder.close()
            if tr is not None:
                tr.rewarder.close()

    print(f"\n{'side':<8}{'step s':>9}{'min s':>8}{'max s':>8}{'cpu s':>8}{'rollout':>9}"
          f"{'reward':>8}{'ref+prep':>10}{'train':>8}{'resp len':>10}")
    for name in ("onerl", "TRL"):
        if name in sides:
            r = sides[name]
            ref_s = "-" if r["ref_s"] is None else f"{r['ref_s']:.3f}"
            print(f"{name:<8}{r['step_s']:>9.3f}{r['min_s']:>8.3f}{r['max_s']:>8.3f}"
                  f"{r['cpu_s']:>8.3f}{r['rollout_s']:>9.3f}{r['reward_s']:>8.3f}{ref_s:>10}"
                  f"{r['train_s']:>8.3f}{r['response_len']:>10.1f}")
    for name, key in (("onerl", "onerl"), ("TRL", "trl")):
        if name in sides:
            r = sides[name]
            res.update({f"{key}_step_s": r["step_s"], f"{key}_cpu_s": r["cpu_s"],
                        f"{key}_rollout_s": r["rollout_s"], f"{key}_reward_s": r["reward_s"],
                        f"{key}_train_s": r["train_s"], f"{key}_response_len": r["response_len"]})
            if r["ref_s"] is not None:
                res[f"{key}_ref_s"] = r["ref_s"]
    if len(sides) == 2:
        o, t = sides["onerl"], sides["TRL"]
        res["speedup_vs_trl"] = t["step_s"] / o["step_s"]
        res["speedup_paired_median"] = statistics.median(
            a["wall_s"] / b["wall_s"] for a, b in zip(trl_rows, onerl_rows))
        res["cpu_speedup_vs_trl"] = t["cpu_s"] / o["cpu_s"]
        res["rollout_speedup_vs_trl"] = t["rollout_s"] / o["rollout_s"]
        res["train_speedup_vs_trl"] = (t["train_s"] + t["ref_s"]) / o["train_s"]
        print(f"\nspeedup_vs_trl {res['speedup_vs_trl']:.2f}x wall (paired median "
              f"{res['speedup_paired_median']:.2f}x; rollout {res['rollout_speedup_vs_trl']:.2f}x, "
              f"ref + train {res['train_speedup_vs_trl']:.2f}x), "
              f"{res['cpu_speedup_vs_trl']:.2f}x in process CPU time")
    if "prompt_tokens" in res:
        work, rate = gemm_work(res["prompt_tokens"]), gemm_rate()
        res.update(onerl_gemm_gflop=work["onerl"], trl_gemm_gflop=work["trl"],
                   gemm_gflops=rate)
        line = [f"{name} {work[key]:.0f} GFLOP = {work[key] / rate:.2f} s at that rate"
                + (f" ({100 * work[key] / rate / sides[name]['step_s']:.0f} % of its step)"
                   if name in sides else "") for name, key in (("onerl", "onerl"), ("TRL", "trl"))]
        print(f"\nmatmul work per step (F.linear here, best of 3: {rate:.0f} GFLOP/s): "
              + "; ".join(line))
    if check is not None:
        res.update(check)
        c = check
        print(f"\nloss check ({c['check_sequences']} sequences, {c['check_tokens']} tokens): "
              f"advantages max |diff| {c['adv_max_abs_diff']:.2e}, log-probs max |diff| "
              f"{c['logp_max_abs_diff']:.2e}, ref log-probs {c['ref_logp_max_abs_diff']:.2e}")
        print(f"  on-policy:      onerl {c['loss_onerl']:+.9f}  TRL {c['loss_trl']:+.9f}  "
              f"|diff| {c['loss_abs_diff']:.2e}  grad rel diff {c['grad_rel_diff']:.2e}")
        print(f"  old log-probs:  onerl {c['loss_clip_onerl']:+.9f}  TRL {c['loss_clip_trl']:+.9f}"
              f"  |diff| {c['loss_clip_abs_diff']:.2e}  grad rel diff "
              f"{c['grad_clip_rel_diff']:.2e}  (clip fraction {c['clip_frac']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
