"""PPO with a critic on a tiny random model (CPU): the paper's PPO recipe runs and moves both
models, GAE + whitening on hand-made numbers, the KL-in-reward placement, critic warm-up, and
resume restores the actor, the critic and both optimizers."""
import json

import pytest
import torch
from test_trainer import overrides, tiny  # noqa: F401  (the tiny model fixture)

from onerl import models
from onerl.config import build
from onerl.critic import HEAD_FILE, load_critic
from onerl.ppo import PPOTrainer
from onerl.trainer import make_trainer

TIME_KEYS = ("time/", "tokens_per_s")


def ppo_cfg(tiny, out, **extra):  # noqa: F811
    kw = {"trainer.micro_batch_tokens": 48, "critic.lr": 1e-3, **extra}
    return build("pi1-qwen2.5-math-1.5b-ppo", None, overrides(tiny, out, **kw))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_ppo_recipe_smoke_moves_actor_and_critic(tiny, tmp_path):  # noqa: F811
    cfg = ppo_cfg(tiny, tmp_path, **{"trainer.total_steps": 2, "trainer.save_every": 2})
    assert cfg.algo.name == "ppo" and cfg.algo.kl_in_reward and cfg.algo.kl_type == "k1"
    assert cfg.model.gradient_checkpointing
    tr = make_trainer(cfg)
    assert isinstance(tr, PPOTrainer) and tr.ref is not None
    actor0, critic0 = _params(tr.actor), _params(tr.critic)
    rows = tr.run()
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("loss", "grad_norm", "vf_loss", "vf_clipfrac", "critic_grad_norm",
                  "values_mean", "returns_mean", "kl_penalty", "time/critic_s", "time/actor_s"):
            assert torch.isfinite(torch.tensor(float(r[k]))), k
        assert r["skipped"] == 0 and r["critic_skipped_total"] == 0 and r["actor_updated"] == 1
        assert r["kl"] == 0.0, "with the KL in the reward the loss has no KL term"
    assert all(not torch.equal(a, b) for a, b in zip(actor0, tr.actor.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(critic0, tr.critic.parameters()))
    ck = tmp_path / "checkpoints" / "step_000002"
    assert (ck / "critic" / "config.json").is_file() and (ck / "critic" / HEAD_FILE).is_file()
    saved = load_critic(str(ck / "critic"), "float32", "cpu")
    for p, q in zip(tr.critic.parameters(), saved.parameters()):
        assert torch.equal(p, q)
    state = torch.load(ck / "trainer_state.pt", weights_only=False)
    assert state["critic_optimizer"]["state"], "the critic's AdamW moments are checkpointed"


def test_gae_whitening_and_kl_in_reward_by_hand(tiny, tmp_path):  # noqa: F811
    tr = make_trainer(ppo_cfg(tiny, tmp_path))
    rewards = [torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0])]
    values = [torch.tensor([0.5, 0.25, 0.0]), torch.tensor([1.0, -1.0])]
    adv, ret = tr.advantages(rewards, values)
    # gamma = lam = 1: returns = reward to go, advantages = returns - values, then whitened
    assert torch.equal(ret[0], torch.ones(3)) and torch.equal(ret[1], torch.zeros(2))
    raw = torch.tensor([0.5, 0.75, 1.0, -1.0, 1.0], dtype=torch.float64)
    want = (raw - raw.mean()) / (raw.var() + 1e-8).sqrt()
    torch.testing.assert_close(torch.cat(adv).double(), want, rtol=1e-6, atol=1e-6)

    # the reward penalty: k1 = old - ref on every token, coefficient 0.001, outcome on the last
    seen = {}
    tr.advantages = lambda r, v: (seen.setdefault("r", r), (r, r))[1]
    tr.update_critic = lambda *a: {}
    tr.train_on = lambda *a, **k: seen.update(ref=k["ref"], old=k["old"]) or {}
    prompts, responses = [[3, 4, 5]] * 2, [[6, 7, 8], [9]]
    tr.learn(prompts, responses, torch.tensor([1.0, 0.0]))
    old = tr._frozen_logprobs(tr.actor, prompts, responses)
    ref = tr._frozen_logprobs(tr.ref, prompts, responses)
    for i, r in enumerate(seen["r"]):
        want = -0.001 * (old[i] - ref[i])
        want[-1] += [1.0, 0.0][i]
        torch.testing.assert_close(r, want)
    assert seen["ref"] is None and seen["old"] is not None


def test_critic_warmup_trains_only_the_critic(tiny, tmp_path):  # noqa: F811
    cfg = ppo_cfg(tiny, tmp_path, **{"critic.warmup_steps": 1, "algo.kl_in_reward": "false",
                                     "algo.kl_type": "k3", "trainer.total_steps": 1,
                                     "trainer.save_every": 0})
    tr = make_trainer(cfg)
    actor0, critic0 = _params(tr.actor), _params(tr.critic)
    (row,) = tr.run()
    assert row["actor_updated"] == 0
    assert all(torch.equal(a, b) for a, b in zip(actor0, tr.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic0, tr.critic.parameters()))


def _metrics(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in r.items() if not k.startswith(TIME_KEYS)} for r in rows]


def test_resume_restores_actor_critic_and_optimizers(tiny, tmp_path):  # noqa: F811
    full, split = tmp_path / "full", tmp_path / "split"
    kw = {"trainer.save_every": 1, "trainer.total_steps": 3}
    a = make_trainer(ppo_cfg(tiny, full, **kw))
    a.run()
    make_trainer(ppo_cfg(tiny, split, **{**kw, "trainer.total_steps": 1})).run()
    b = make_trainer(ppo_cfg(tiny, split, **kw), resume=True)
    assert b.step == 1
    b.run()
    assert _metrics(split) == _metrics(full)
    for p, q in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.equal(p, q)
    ck = models.load(str(split / "checkpoints" / "step_000003"), dtype="float32")
    assert all(torch.equal(p, q) for p, q in zip(ck.parameters(), a.actor.parameters()))


def test_ppo_config_validation():
    with pytest.raises(Exception, match="algo.kl_in_reward"):
        build("pi1-qwen2.5-math-1.5b", None, ["algo.kl_in_reward=true"])
    with pytest.raises(Exception, match="algo.name"):
        build("pi1-qwen2.5-math-1.5b", None, ["algo.name=reinforce"])
    with pytest.raises(Exception, match="algo.kl_type"):
        build("pi1-qwen2.5-math-1.5b-ppo", None, ["algo.kl_type=none"])


def test_ppo_two_gloo_processes_match_one_process(tiny, tmp_path):  # noqa: F811
    """FSDP2 shards the critic like the actor: 2 CPU processes equal 1 on the same batch."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {"trainer.total_steps": 1, "trainer.save_every": 1, "trainer.train_batch_size": 4,
          "critic.lr": 1e-3}
    one, two = tmp_path / "one", tmp_path / "two"
    args = lambda out: ["train", "--recipe", "pi1-qwen2.5-math-1.5b-ppo",  # noqa: E731
                        *overrides(tiny, out, **kw)]
    subprocess.run([sys.executable, "-m", "onerl", *args(one)], check=True, env=env,
                   capture_output=True, timeout=300)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29519", "-m", "onerl", *args(two)], env=env,
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    m1, m2 = _metrics(one)[-1], _metrics(two)[-1]
    for k in ("loss", "vf_loss", "values_mean", "returns_mean"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-7), k
    a = load_critic(str(one / "checkpoints" / "step_000001" / "critic"), "float32", "cpu")
    b = load_critic(str(two / "checkpoints" / "step_000001" / "critic"), "float32", "cpu")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
