"""The 1-shot RLVR loop (GRPO as the paper's released code runs it).

Each step: the batch (the example duplicated to train_batch_size prompts) -> n responses per
prompt from the engine over the live actor weights -> rewards from the verifier -> group
advantages (each prompt row is its own group) -> per-token log-probs and entropy of the
responses at logits / T through the fused kernel, reference log-probs from the frozen reference
model -> grpo_loss over token-budget micro-batches -> clip -> AdamW. With one mini-batch and one
epoch the update is on-policy, so old log-probs equal the current ones and are not recomputed.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from onerl_kernels import group_advantages, grpo_loss

from . import checkpoint, models
from .batching import cut, micro_batches, pack, response_logprobs, rows_to_grid
from .config import Config
from .data import BatchOrder, Row, load_rows
from .distributed import Dist
from .engine import LLMEngine, seed_for
from .history import AccuracyHistory, tally
from .evaluate import evaluate
from .metrics import MetricsLogger
from .rewarding import Rewarder
from .row_split import RowWorkers
from .templates import decode_responses, prompt_ids, resolve_template

STATS = ("clipfrac", "kl", "entropy", "ppo_kl")   # grpo_loss's metrics, token-weighted over a step


def resolve_model_path(path: str) -> str:
    if path == "toy":
        from .toy.catalog import base_path
        return str(base_path())
    if Path(path).is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(path)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(f"model.path {path!r} is neither a local folder nor a downloadable "
                                f"Hugging Face id ({e})") from None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: Config, resume: bool = False):
        from transformers import AutoTokenizer

        self.cfg, t = cfg, cfg.trainer
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.device = pick_device(t.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.dist = Dist(self.device)
        if resume and self.dist.enabled:
            raise ValueError("--resume is supported for single-process runs only")
        self.out = Path(t.out_dir)
        self.model_path = resolve_model_path(cfg.model.path)
        self.plan = None
        if self.device.type == "cuda":   # refuse early, with the numbers, what cannot fit
            from .plan import check_fits
            props = torch.cuda.get_device_properties(self.device)
            self.plan = check_fits(cfg, self.dist.world, props.total_memory, self.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.template = resolve_template(self.tokenizer, cfg.data.template)
        self.actor = models.load(self.model_path, dtype=cfg.model.dtype, device=self.device)
        self.actor.gradient_checkpointing = cfg.model.gradient_checkpointing
        self.dist.shard(self.actor)
        self.ref = None
        if cfg.algo.kl_type is not None and cfg.algo.kl_coef != 0:
            self.ref = models.load(self.model_path, dtype=cfg.model.ref_dtype, device=self.device)
            self.ref.requires_grad_(False)
            self.dist.shard(self.ref)
        # one process: the engine reads the trainer's parameters (no copy); sharded: a gathered twin
        self.rollout_model = models.build(self.actor.config, self.actor.embed_tokens.weight.dtype,
                                          self.device, init=False) if self.dist.enabled else self.actor
        self.engine = LLMEngine(self.rollout_model, max_num_seqs=min(1024, t.train_batch_size * cfg.rollout.n),
                                max_cache_tokens=cfg.rollout.kv_budget_tokens or
                                (self.plan.kv_suggested_tokens if self.plan else None),
                                row_split=t.row_split)
        self.stop_ids = self._stop_ids()
        self.rows = [r for f in cfg.data.train_files
                     for r in load_rows(f, cfg.data.problem_field, cfg.data.answer_field)]
        if cfg.data.answer_override:   # the wrong-label ablations
            self.rows = [Row(r.id, r.text, cfg.data.answer_override) for r in self.rows]
        self.prompts = [self._prompt(r) for r in self.rows]
        self.order = BatchOrder(len(self.rows), t.train_batch_size, cfg.data.shuffle_seed)
        self.history = AccuracyHistory([r.id for r in self.rows], self.order.per_epoch,
                                       self.out / "acc_history.json") if len(self.rows) > 1 else None
        self.eval_rows = [r for f in t.eval_files for r in load_rows(f)]
        if t.eval_limit:
            self.eval_rows = self.eval_rows[:t.eval_limit]
        self.rewarder = Rewarder(cfg.algo.reward, after_think=cfg.algo.response_after_think)
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.actor.parameters(), lr=o.lr, betas=tuple(o.betas),
                                     eps=o.eps, weight_decay=o.weight_decay)
        self.step = 0
        self.skipped = 0
        self.setup()
        if resume:
            self._resume()
        self.log = MetricsLogger(self.out, t.tensorboard, t.progress, t.total_steps, self.step) \
            if self.dist.main else None

    # ------------------------------------------------------------------ setup helpers

    def setup(self) -> None:
        """Hook for subclasses (PPO builds its critic here), before a resume loads state."""

    def _stop_ids(self) -> list[int]:
        ids = set()
        gen = Path(self.model_path) / "generation_config.json"
        if gen.is_file():
            import json
            eos = json.loads(gen.read_text()).get("eos_token_id")
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def _prompt(self, row) -> list[int]:
        ids = prompt_ids(self.tokenizer, row.text, self.template)
        limit = self.cfg.data.max_prompt_tokens
        if len(ids) > limit:
            raise ValueError(f"prompt of row {row.id} has {len(ids)} tokens > data.max_prompt_tokens"
                             f"={limit}; raise the limit or drop the row")
        return ids

    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        if o.first_step_lr_zero and step == 0:
            return 0.0
        return o.lr * min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else o.lr

    # ------------------------------------------------------------------ one step

    def rollout(self, step: int):
        r = self.cfg.rollout
        start, stop = self.dist.slice(self.cfg.trainer.train_batch_size)
        idx = self.order.batch(step)[start:stop]
        prompts = [self.prompts[i] for i in idx]
        self.dist.gather_into(self.actor, self.rollout_model)
        done = self.engine.generate(prompts, n=r.n, max_new_tokens=r.max_new_tokens,
                                    temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                    stop_token_ids=self.stop_ids, ignore_eos=r.ignore_eos,
                                    seed=seed_for(self.cfg.trainer.seed, step, 0),
                                    use_tqdm=False, index_offset=start)
        row_of = [idx[c.prompt_index] for c in done]
        return prompts, done, [self.rows[i].answer for i in row_of], row_of

    def _logprobs(self, model, prompts, responses, need_entropy=True, grad=True):
        packed = pack(prompts, responses, self.device)
        with torch.set_grad_enabled(grad):
            lp, ent = response_logprobs(model, packed, self.cfg.rollout.temperature, need_entropy)
        return lp, ent, packed.mask

    def learn(self, prompts_rep, responses, rewards) -> dict:
        """From the step's rewards to updated weights (GRPO: group advantages; PPO overrides)."""
        a = self.cfg.algo
        adv = group_advantages(rewards, self.cfg.rollout.n, a.adv_eps, a.adv_std, a.adv_scale)
        ref = None if self.ref is None else self._frozen_logprobs(self.ref, prompts_rep, responses)
        return self.train_on(prompts_rep, responses, adv, ref=ref)

    def train_on(self, prompts_rep, responses, adv, old=None, ref=None) -> dict:
        """One or more optimizer steps on the rollout (several only with PPO mini-batches/epochs).
        adv: [N] per response or a list of per-token [len(response)] tensors; ref: per-token
        reference log-probs for the KL loss (None: no KL term)."""
        a = self.cfg.algo
        n_seq = len(responses)
        lengths = [len(p) + len(r) for p, r in zip(prompts_rep, responses)]
        on_policy = a.ppo_mini_batches == 1 and a.ppo_epochs == 1
        if old is None and not on_policy:
            old = self._frozen_logprobs(self.actor, prompts_rep, responses)
        stats = {"loss": 0.0, "clipfrac": 0.0, "kl": 0.0, "entropy": 0.0, "ppo_kl": 0.0}
        per_mini = n_seq // a.ppo_mini_batches
        for _ in range(a.ppo_epochs):
            for m0 in range(0, n_seq, per_mini):
                seqs = list(range(m0, m0 + per_mini))
                stats_mb, gnorm = self._update(seqs, prompts_rep, responses, adv, old, ref, lengths)
        stats.update(stats_mb)
        stats["grad_norm"] = gnorm
        return stats

    def _frozen_logprobs(self, model, prompts, responses) -> list[torch.Tensor]:
        T = self.cfg.rollout.temperature
        return self.per_token(lambda packed: response_logprobs(model, packed, T, False)[0],
                              prompts, responses)

    def per_token(self, fn, prompts, responses) -> list[torch.Tensor]:
        """``fn(packed)`` -> a [B, T] grid, without grad, over token-budget micro-batches;
        returned as one [len(response)] tensor per sequence."""
        def run(mb, real):
            packed = pack([prompts[i] for i in mb], [responses[i] for i in mb], self.device)
            with torch.no_grad():
                g = fn(packed)
            return [g[j, :len(responses[i])] for j, i in enumerate(mb)] if real else []

        lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
        out = []
        for group in self.thread_groups(self.micro_batches(lengths, prompts), lengths):
            for rows in self._map(run, group, grad=False):
                out += rows
        return out

    def thread_groups(self, mbs: list[tuple[list[int], bool]], lengths: list[int]
                      ) -> list[list[tuple[list[int], bool]]]:
        """Micro-batches as groups run at once: on a CPU with several threads in one process
        (``trainer.row_split``), each micro-batch cut into one part per thread, each part run
        on its own worker thread with one intra-op thread (``onerl.row_split``); otherwise
        groups of one, run on this thread."""
        workers = self._workers()
        if workers is None:
            return [[mb] for mb in mbs]
        return [[(part, real) for part in cut(mb, lengths, workers.n)] for mb, real in mbs]

    def _workers(self) -> RowWorkers | None:
        if not self.cfg.trainer.row_split or self.device.type != "cpu" or self.dist.enabled:
            return None
        return RowWorkers.get()

    def _map(self, fn, group, grad: bool) -> list:
        if len(group) == 1:
            return [fn(*group[0])]
        return self._workers().map(lambda args: fn(*args), group, inference=not grad)

    def accumulate(self, fn, mbs, lengths) -> list:
        """``fn(indices, real)`` -> (scaled loss, info) over the micro-batches; the gradients of
        the scaled losses are added to the actor's ``.grad`` in micro-batch order (the parts of
        a thread group in order too, so results do not depend on thread timing). Returns the
        infos."""
        infos = []
        params = [p for p in self.actor.parameters() if p.requires_grad]
        for group in self.thread_groups(mbs, lengths):
            if len(group) == 1:
                loss, info = fn(*group[0])
                loss.backward()
                infos.append(info)
                continue
            def part(*args):
                loss, info = fn(*args)
                return torch.autograd.grad(loss, params, allow_unused=True), info

            for grads, info in self._map(part, group, grad=True):
                for p, g in zip(params, grads):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad.add_(g)
                infos.append(info)
        return infos

    def micro_batches(self, lengths: list[int], prompts: list[list[int]]
                      ) -> list[tuple[list[int], bool]]:
        """Token-budget micro-batches as (indices, real); across ranks the same number of them
        (``Dist.even``: a pass with real=False only keeps the ranks in step, weight 0)."""
        return self.dist.even(micro_batches(lengths, self.cfg.trainer.micro_batch_tokens, prompts))

    def _update(self, seqs, prompts, responses, adv, old, ref, lengths):
        self.opt.zero_grad(set_to_none=True)
        sums = self.backward(seqs, prompts, responses, adv, old, ref, lengths)
        gnorm = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.optim.grad_clip)
        if hasattr(gnorm, "full_tensor"):
            gnorm = gnorm.full_tensor()
        if not (math.isfinite(sums["loss"]) and torch.isfinite(gnorm)):
            self.opt.zero_grad(set_to_none=True)   # guard rail: the model stays untouched
            self.skipped += 1
            return {**sums, "skipped": 1}, float(gnorm)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.step()
        return {**sums, "skipped": 0}, float(gnorm)

    def backward(self, seqs, prompts, responses, adv, old, ref, lengths) -> dict:
        """Accumulate the gradient of the aggregated loss over sequences ``seqs`` in token-budget
        micro-batches, each weighted so the sum equals the loss over all of them at once."""
        a = self.cfg.algo
        n_tok, n_nonempty = self.dist.sum([sum(len(responses[i]) for i in seqs),
                                           sum(1 for i in seqs if responses[i])])
        world = self.dist.world   # FSDP averages gradients over ranks; the loss is a global sum
        sums = {"loss": 0.0, **dict.fromkeys(STATS, 0.0)}

        def micro(mb_local, real):
            mb = [seqs[j] for j in mb_local]
            lp, ent, mask = self._logprobs(self.actor, [prompts[i] for i in mb],
                                           [responses[i] for i in mb])
            grid = lambda vals: rows_to_grid(vals, mb, lp)  # noqa: E731
            tok = int(mask.sum())
            weight = {"token-mean": tok / max(n_tok, 1),
                      "seq-mean-token-sum-norm": lp.shape[1] / self.cfg.rollout.max_new_tokens
                      }.get(a.loss_agg, sum(1 for i in mb if responses[i]) / max(n_nonempty, 1))
            adv_mb = grid(adv) if isinstance(adv, list) else adv[mb].to(lp.device)
            if not a.policy_gradient:   # ablations without the policy-gradient term
                adv_mb = torch.zeros_like(adv_mb)
            if not a.entropy_coef and ent is not None:
                ent = ent.detach()   # a metric only: no entropy term in the gradient
            loss, m = grpo_loss(lp, None if old is None else grid(old),
                                None if ref is None else grid(ref), adv_mb, mask,
                                ent, clip_low=a.clip_low, clip_high=a.clip_high,
                                clip_dual=a.clip_dual, kl_type=a.kl_type if ref is not None else None,
                                kl_coef=a.kl_coef, entropy_coef=a.entropy_coef, agg=a.loss_agg)
            return loss * (weight * world * real), (real, tok, weight, loss.item(),
                                                    {k: m[k].item() for k in STATS})

        local = [lengths[i] for i in seqs]
        for real, tok, weight, loss, m in self.accumulate(
                micro, self.micro_batches(local, [prompts[i] for i in seqs]), local):
            if not real:
                continue
            share = tok / max(n_tok, 1)
            sums["loss"] += loss * weight
            for k in STATS:
                sums[k] += m[k] * share
        return dict(zip(sums, self.dist.sum(list(sums.values()))))

    def train_step(self) -> dict:
        step = self.step
        t0 = time.perf_counter()
        prompts, done, golds, row_of = self.rollout(step)
        t1 = time.perf_counter()
        texts = decode_responses(self.tokenizer, [c.token_ids for c in done])
        rewards, reward_stats = self.rewarder(texts, golds)
        if self.history is not None:   # per-example accuracy per epoch, for `onerl select`
            self.history.add(step, self.dist.sum(tally(row_of, rewards, len(self.rows))))
            if self.dist.main and (step + 1) % self.order.per_epoch == 0:
                self.history.write()
        t2 = time.perf_counter()
        prompts_rep = [prompts[c.prompt_index] for c in done]
        responses = [c.token_ids for c in done]
        stats = self.learn(prompts_rep, responses, rewards)
        t3 = time.perf_counter()
        keys = sorted(reward_stats)
        n_tokens, n_seq, n_correct, n_trunc, *counts = self.dist.sum(
            [sum(len(x) for x in responses), len(done), float(rewards.sum()),
             sum(c.finish_reason == "length" for c in done)] + [reward_stats[k] for k in keys])
        self.step += 1
        return {"train/acc": n_correct / n_seq, **dict(zip(keys, counts)),
                "response_len": n_tokens / n_seq, "truncated_frac": n_trunc / n_seq,
                **stats, "lr": self.lr_at(step), "skipped_total": self.skipped,
                "time/rollout_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2,
                "time/step_s": t3 - t0, "tokens_per_s": n_tokens / max(t1 - t0, 1e-9)}

    # ------------------------------------------------------------------ eval, checkpoints, run

    def evaluate(self) -> dict:
        """Greedy held-out evaluation on the main process (the others wait with gathered weights)."""
        if not self.eval_rows:
            return {}
        self.dist.gather_into(self.actor, self.rollout_model)
        res = self._evaluate() if self.dist.main else {}
        self.dist.barrier()
        return res

    def _evaluate(self) -> dict:
        if self.rewarder.verifier is None:   # format-reward runs still grade held-out answers
            from .reward import Verifier
            self.rewarder.verifier = Verifier(workers=2).start()
        res = evaluate(self.engine, self.tokenizer, self.eval_rows, self._prompt,
                       self.cfg.trainer.eval_max_new_tokens, self.stop_ids,
                       verifier=self.rewarder.verifier, extra=self._extra_scores())
        return {f"eval/{k}": v for k, v in res.summary.items()}

    def _extra_scores(self) -> dict:
        if all(f.startswith("toy:") for f in self.cfg.trainer.eval_files):
            from .toy.score import format_free_correct
            return {"format_free": format_free_correct}
        return {}

    def save(self) -> Path:
        tensors = models.hf_state_dict(self.actor)      # a collective when sharded
        extra = self.extra_tensors()
        if not self.dist.main:
            return self.out / "checkpoints"
        state = {"step": self.step, "skipped": self.skipped, "rng": checkpoint.rng_state(),
                 "config": self.cfg.to_dict(),
                 "optimizer": None if self.dist.enabled else self.opt.state_dict(),
                 **self.extra_state()}
        if self.history is not None:
            state["acc_history"] = self.history.state()

        def write(folder):
            models.save(self.actor, str(folder), self.model_path, tensors)
            self.save_extra(folder, extra)
        return checkpoint.save(self.out / "checkpoints", self.step, write, state)

    # hooks for models beyond the actor (PPO's critic): gathered on every rank, written by rank 0
    def extra_tensors(self):
        return None

    def extra_state(self) -> dict:
        return {}

    def save_extra(self, folder: Path, tensors) -> None:
        pass

    def load_extra(self, folder: Path, state: dict) -> None:
        pass

    def _resume(self) -> None:
        folder = checkpoint.latest(self.out / "checkpoints")
        if folder is None:
            return
        state = checkpoint.load_state(folder)
        loaded = models.load(str(folder), dtype=self.cfg.model.dtype, device=self.device)
        with torch.no_grad():
            for p, q in zip(self.actor.parameters(), loaded.parameters()):
                p.copy_(q)
        self.opt.load_state_dict(state["optimizer"])
        self.load_extra(folder, state)
        if self.history is not None and "acc_history" in state:
            self.history.load(state["acc_history"])
        checkpoint.set_rng_state(state["rng"])
        self.step, self.skipped = state["step"], state["skipped"]

    def run(self) -> list[dict]:
        t = self.cfg.trainer
        self.out.mkdir(parents=True, exist_ok=True)
        rows = []
        log = (lambda step, m: rows.append(self.log.log(step, m))) if self.log else \
            (lambda step, m: rows.append({"step": step, **m}))
        if self.step == 0 and t.eval_every:
            log(0, self.evaluate())
        while self.step < t.total_steps:
            m = self.train_step()
            if t.eval_every and self.step % t.eval_every == 0:
                m.update(self.evaluate())
            log(self.step, m)
            if t.save_every and (self.step % t.save_every == 0 or self.step == t.total_steps):
                self.save()
        if self.log:
            self.log.close()
        self.rewarder.close()
        return rows




def make_trainer(cfg: Config, resume: bool = False) -> Trainer:
    """The trainer for ``cfg.algo.name``: GRPO (this module) or PPO (``onerl.ppo``)."""
    if cfg.algo.name == "ppo":
        from .ppo import PPOTrainer
        return PPOTrainer(cfg, resume)
    return Trainer(cfg, resume)
