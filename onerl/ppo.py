"""PPO with a critic (``algo.name=ppo``), as the 1-shot RLVR paper's PPO runs (verl's defaults).

Each step, after the rollout and the outcome rewards:

1. no-grad forwards over token-budget micro-batches: the critic's values, the reference
   log-probs (when a KL is configured) and the actor's log-probs (when the KL goes into the
   reward, or for several PPO mini-batches / epochs);
2. per-token rewards: the outcome reward on the last response token; with
   ``algo.kl_in_reward`` minus ``kl_coef * KL(old, ref)`` on every token (k1 in the paper's
   setting) and no KL term in the loss; otherwise the KL stays a loss term as in GRPO;
3. GAE (``onerl_kernels.gae_advantages``, gamma = lam = 1 by default), advantages whitened over
   all response tokens of the step (masked mean / unbiased variance, across ranks);
4. the critic update: clipped value loss 0.5 * max((V - R)^2, (clip(V, V_old +- 0.5) - R)^2),
   token-mean, its own AdamW (critic.lr 1e-5) and grad clip (1.0);
5. the actor update: the trainer's clipped policy loss with per-token advantages, unless the
   step is one of the first ``critic.warmup_steps`` (critic only).

Everything engine-free is the GRPO trainer's: micro-batching, FSDP2 sharding (the critic is
sharded like the actor), checkpoints (the critic and its optimizer are saved with the actor in
``step_N/critic/`` and restored on resume).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from onerl_kernels import gae_advantages, reference

from .batching import pack, rows_to_grid
from .critic import gathered, load_critic, load_critic_weights, save_critic
from .trainer import Trainer, resolve_model_path


class PPOTrainer(Trainer):
    def setup(self) -> None:
        cfg, c = self.cfg, self.cfg.critic
        path = resolve_model_path(c.path) if c.path else self.model_path
        self.critic = load_critic(path, cfg.model.dtype, self.device, seed=cfg.trainer.seed)
        self.critic.body.gradient_checkpointing = cfg.model.gradient_checkpointing
        self.dist.shard(self.critic)
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=c.lr,
                                            betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                            weight_decay=c.weight_decay)
        self.critic_skipped = 0

    # ------------------------------------------------------------------ one step

    def learn(self, prompts, responses, rewards) -> dict:
        a = self.cfg.algo
        t0 = time.perf_counter()
        values = self.per_token(self.critic.values, prompts, responses)
        ref = self._frozen_logprobs(self.ref, prompts, responses) if self.ref is not None else None
        on_policy = a.ppo_mini_batches == 1 and a.ppo_epochs == 1
        old = self._frozen_logprobs(self.actor, prompts, responses) \
            if a.kl_in_reward or not on_policy else None
        token_rewards = [torch.zeros(len(r), device=self.device) for r in responses]
        for i, r in enumerate(token_rewards):
            if r.numel():
                r[-1] = float(rewards[i])
        kl_reward = 0.0
        if a.kl_in_reward and ref is not None:
            for i, r in enumerate(token_rewards):
                kl = reference.kl_penalty(old[i], ref[i], a.kl_type)
                r -= a.kl_coef * kl
                kl_reward += float(kl.sum())
        adv, ret = self.advantages(token_rewards, values)
        t1 = time.perf_counter()
        stats = self.update_critic(prompts, responses, values, ret)
        t2 = time.perf_counter()
        if self.step >= self.cfg.critic.warmup_steps:
            stats.update(self.train_on(prompts, responses, adv, old=old,
                                       ref=None if a.kl_in_reward else ref))
            stats["actor_updated"] = 1
        else:
            stats["actor_updated"] = 0
        t3 = time.perf_counter()
        n_tok, v_sum, r_sum, kl_sum = self.dist.sum([
            sum(len(r) for r in responses), sum(float(v.sum()) for v in values),
            sum(float(x.sum()) for x in ret), kl_reward])
        n_tok = max(n_tok, 1)
        return {**stats, "values_mean": v_sum / n_tok, "returns_mean": r_sum / n_tok,
                "kl_penalty": kl_sum / n_tok, "time/ppo_prep_s": t1 - t0,
                "time/critic_s": t2 - t1, "time/actor_s": t3 - t2}

    def advantages(self, token_rewards, values):
        """GAE over the padded [N, T] grid, then whitening over all tokens of the step (every
        rank's, so N processes match one); per-sequence lists of advantages and returns."""
        a = self.cfg.algo
        lens = torch.tensor([len(r) for r in token_rewards], device=self.device)
        if not len(token_rewards):
            return [], []
        r = pad_sequence(token_rewards, batch_first=True)
        v = pad_sequence([x.float() for x in values], batch_first=True)
        mask = torch.arange(r.shape[1], device=self.device)[None] < lens[:, None]
        adv, ret = gae_advantages(r, v, mask, a.gamma, a.lam)
        n, s1, s2 = self.dist.sum([float(mask.sum()), float(adv.sum()), float((adv * adv).sum())])
        mean = s1 / max(n, 1)
        var = (s2 - n * mean * mean) / max(n - 1, 1)
        adv = (adv - mean) / math.sqrt(max(var, 0.0) + 1e-8)
        return ([adv[i, :n_i] for i, n_i in enumerate(lens.tolist())],
                [ret[i, :n_i] for i, n_i in enumerate(lens.tolist())])

    def update_critic(self, prompts, responses, old_values, returns) -> dict:
        """Clipped value loss, token-mean over each mini-batch, one AdamW step per mini-batch."""
        a, c = self.cfg.algo, self.cfg.critic
        lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
        per_mini = max(len(responses) // a.ppo_mini_batches, 1)
        sums, gnorm = {"vf_loss": 0.0, "vf_clipfrac": 0.0}, 0.0
        for _ in range(a.ppo_epochs):
            for m0 in range(0, len(responses), per_mini):
                seqs = list(range(m0, min(m0 + per_mini, len(responses))))
                self.critic_opt.zero_grad(set_to_none=True)
                (n_tok,) = self.dist.sum([sum(len(responses[i]) for i in seqs)])
                sums = {"vf_loss": 0.0, "vf_clipfrac": 0.0}
                for mb_local, real in self.micro_batches([lengths[i] for i in seqs],
                                                         [prompts[i] for i in seqs]):
                    mb = [seqs[j] for j in mb_local]
                    packed = pack([prompts[i] for i in mb], [responses[i] for i in mb], self.device)
                    vpred = self.critic.values(packed)
                    old_v, ret = (rows_to_grid(x, mb, vpred) for x in (old_values, returns))
                    loss, clipfrac = reference.value_loss(vpred, old_v, ret, packed.mask,
                                                          c.cliprange_value, "token-mean")
                    share = int(packed.mask.sum()) / max(n_tok, 1)
                    (loss * (share * self.dist.world * real)).backward()
                    if not real:
                        continue
                    sums["vf_loss"] += loss.item() * share
                    sums["vf_clipfrac"] += clipfrac.item() * share
                sums = dict(zip(sums, self.dist.sum(list(sums.values()))))
                gnorm = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), c.grad_clip)
                if hasattr(gnorm, "full_tensor"):
                    gnorm = gnorm.full_tensor()
                gnorm = float(gnorm)
                if math.isfinite(sums["vf_loss"]) and math.isfinite(gnorm):
                    self.critic_opt.step()
                else:   # guard rail, as for the actor: the critic stays untouched
                    self.critic_opt.zero_grad(set_to_none=True)
                    self.critic_skipped += 1
        return {**sums, "critic_grad_norm": gnorm, "critic_skipped_total": self.critic_skipped}

    # ------------------------------------------------------------------ checkpoints

    def extra_tensors(self):
        return gathered(self.critic)

    def extra_state(self) -> dict:
        return {"critic_optimizer": None if self.dist.enabled else self.critic_opt.state_dict(),
                "critic_skipped": self.critic_skipped}

    def save_extra(self, folder: Path, tensors) -> None:
        save_critic(self.critic, Path(folder) / "critic", tensors)

    def load_extra(self, folder: Path, state: dict) -> None:
        load_critic_weights(self.critic, Path(folder) / "critic")
        self.critic_opt.load_state_dict(state["critic_optimizer"])
        self.critic_skipped = state.get("critic_skipped", 0)
