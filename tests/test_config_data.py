"""Config validation, recipes and overrides; data loading errors; batch order; checkpoints."""
import json

import pytest
import torch

from onerl import checkpoint
from onerl.config import Config, ConfigError, apply, build
from onerl.data import BatchOrder, DataError, load_rows
from onerl.recipes import RECIPES, recipe_config


def test_paper_recipe_defaults_are_the_released_code():
    cfg = recipe_config("pi1-qwen2.5-math-1.5b")
    assert (cfg.trainer.train_batch_size, cfg.rollout.n, cfg.rollout.temperature) == (128, 8, 0.6)
    assert cfg.rollout.max_new_tokens == 3072 and cfg.data.max_prompt_tokens == 1024
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (1e-6, 0.01, 1.0)
    assert cfg.optim.betas == (0.9, 0.999)
    assert (cfg.algo.kl_type, cfg.algo.kl_coef, cfg.algo.entropy_coef) == ("k3", 0.001, 0.001)
    assert (cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.clip_dual) == (0.2, 0.2, None)
    assert cfg.algo.ppo_mini_batches == 1 and cfg.algo.ppo_epochs == 1
    assert cfg.algo.adv_std == "unbiased" and cfg.algo.adv_eps == 1e-6
    assert cfg.trainer.micro_batch_tokens == 24000 and cfg.trainer.save_every == 20


def test_every_recipe_validates():
    for name in RECIPES:
        recipe_config(name).validate()


def test_overrides_yaml_and_types(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("optim:\n  lr: 2.0e-6\nalgo:\n  kl_type: null\n")
    cfg = build("pi1-qwen2.5-math-1.5b", str(y),
                ["trainer.train_batch_size=64", "algo.clip_dual=3", "optim.betas=[0.9,0.99]",
                 "trainer.tensorboard=false", "data.train_files=a.jsonl,b.jsonl"])
    assert cfg.optim.lr == 2e-6 and cfg.algo.kl_type is None and cfg.algo.clip_dual == 3
    assert cfg.trainer.train_batch_size == 64 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.trainer.tensorboard is False and cfg.data.train_files == ["a.jsonl", "b.jsonl"]


@pytest.mark.parametrize("override,match", [
    (["algo.kl_type=k9"], "algo.kl_type"),
    (["rollout.temperature=0"], "rollout.temperature"),
    (["algo.loss_agg=mean"], "algo.loss_agg"),
    (["trainer.nope=1"], "unknown key 'trainer.nope'"),
    (["trainer.train_batch_size=ten"], "expects int"),
    (["algo.ppo_mini_batches=3"], "ppo_mini_batches"),
    (["lr"], "section.key=value"),
    (["algo.name=reinforce"], "algo.name"),
    (["algo.gamma=1.5"], "algo.gamma"),
    (["data.template=auto"], "data.template"),
    (["eval.protocol=vllm"], "eval.protocol"),
    (["critic.cliprange_value=0"], "critic.cliprange_value"),
])
def test_config_errors_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        build("pi1-qwen2.5-math-1.5b", None, override)


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'.*toy"):
        recipe_config("nope")


def test_load_rows_jsonl_and_paper_parquet_shape(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"id": 7, "prompt": "What is 2+2?", "answer": "4"}) + "\n\n" +
                 json.dumps({"prompt": [{"role": "user", "content": "1+1?"}],
                             "reward_model": {"ground_truth": "2"}}) + "\n")
    rows = load_rows(str(p))
    assert [(r.id, r.text, r.answer) for r in rows] == [("7", "What is 2+2?", "4"),
                                                         ("1", "1+1?", "2")]


@pytest.mark.parametrize("content,match", [
    ('{"answer": "4"}\n', r"d.jsonl, row 0: missing field 'prompt'"),
    ('{"prompt": "x"}\n', r"row 0: missing field 'answer'"),
    ('{"prompt": "x", "answer": "1"}\n{bad\n', r"d.jsonl, line 2: not valid JSON"),
    ('{"prompt": "x", "answer": "1"}\n[1, 2]\n', r"d.jsonl, line 2: expected a JSON object, got list"),
    ('', "no rows"),
])
def test_load_rows_errors_name_file_and_row(tmp_path, content, match):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_rows(str(p))
    with pytest.raises(DataError, match="not found"):
        load_rows(str(tmp_path / "missing.jsonl"))


def test_batch_order_duplicates_one_example_and_drops_last():
    one = BatchOrder(1, 128, seed=1)
    assert one.batch(0) == [0] * 128 and one.batch(5) == [0] * 128
    two = BatchOrder(2, 128, seed=1)
    assert sorted(two.batch(3)) == [0] * 64 + [1] * 64
    pool = BatchOrder(1209, 128, seed=1)
    assert pool.per_epoch == 9
    epoch0 = [i for k in range(9) for i in pool.batch(k)]
    assert len(set(epoch0)) == 9 * 128 and pool.batch(9) != pool.batch(0)
    assert pool.batch(4) == BatchOrder(1209, 128, seed=1).batch(4)


def test_checkpoint_is_atomic_and_keeps_latest(tmp_path):
    def write_model(folder):
        folder.mkdir()
        (folder / "model.bin").write_text("w")

    checkpoint.save(tmp_path, 1, write_model, {"step": 1}, keep=2)
    checkpoint.save(tmp_path, 2, write_model, {"step": 2}, keep=2)

    def crash(folder):
        folder.mkdir()
        (folder / "partial").write_text("x")
        raise KeyboardInterrupt("killed during save")

    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 3, crash, {"step": 3})
    latest = checkpoint.latest(tmp_path)
    assert latest.name == "step_000002" and checkpoint.load_state(latest)["step"] == 2
    checkpoint.save(tmp_path, 4, write_model, {"step": 4}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000004"]


def test_rng_state_roundtrip():
    s = checkpoint.rng_state()
    a = torch.rand(3)
    checkpoint.set_rng_state(s)
    assert torch.equal(a, torch.rand(3))


def test_apply_rejects_non_dataclass_section():
    with pytest.raises(ConfigError, match="unknown key 'recipe.x'"):
        apply(Config(), {"recipe.x": 1})
