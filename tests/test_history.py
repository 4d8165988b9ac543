"""Per-example accuracy history on a pool (the input of ``onerl select``): the epoch bookkeeping,
and a trainer run on a 3-example pool whose file ``onerl select`` reads, also across a resume."""
import json

import pytest
import torch

from onerl.config import build
from onerl.history import AccuracyHistory, tally
from onerl.select import load_history, rank
from onerl.trainer import Trainer

from test_trainer import overrides, tiny  # noqa: F401  (the tiny model fixture)


def test_epochs_close_after_their_last_step(tmp_path):
    h = AccuracyHistory(["a", "b"], per_epoch=2, path=tmp_path / "h.json")
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    h.add(0, tally([0, 0, 1, 1], rewards, 2))          # a: 1/2, b: 2/2
    assert h.history == {"a": [], "b": []}
    h.add(1, tally([0, 0, 0, 0], torch.tensor([1.0, 1.0, 1.0, 0.0]), 2))   # a: 3/4 more
    assert h.history == {"a": [4 / 6], "b": [1.0]}
    h.add(2, tally([1, 1], torch.tensor([0.0, 0.0]), 2))   # epoch 2 starts; only b seen
    h.add(3, tally([1, 1], torch.tensor([1.0, 0.0]), 2))
    assert h.history == {"a": [4 / 6], "b": [1.0, 0.25]}   # a not sampled in epoch 2: no entry
    h.write()
    assert json.loads((tmp_path / "h.json").read_text()) == h.history
    assert not (tmp_path / "h.json.tmp").exists()


def test_state_round_trip_keeps_an_unfinished_epoch(tmp_path):
    h = AccuracyHistory(["a"], per_epoch=3, path=tmp_path / "h.json")
    h.add(0, [1.0, 2.0])
    g = AccuracyHistory(["a"], per_epoch=3, path=tmp_path / "h.json")
    g.load(json.loads(json.dumps(h.state())))
    for x in (h, g):
        x.add(1, [0.0, 2.0])
        x.add(2, [2.0, 2.0])
    assert g.history == h.history == {"a": [0.5]}


@pytest.fixture()
def pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"id": f"ex{i}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)}
            for i, (a, b) in enumerate([(12, 7), (30, 5), (8, 9)])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trainer_on_a_pool_writes_the_history_select_reads(tiny, pool, tmp_path):  # noqa: F811
    # 3 rows, batch 3: one step per epoch, every example sampled rollout.n = 4 times each epoch
    kw = {"data.train_files": str(pool), "trainer.train_batch_size": 3, "trainer.total_steps": 3,
          "trainer.save_every": 2}
    cfg = build("toy", None, overrides(tiny, tmp_path / "a", **kw))
    Trainer(cfg).run()
    hist = load_history(tmp_path / "a" / "acc_history.json")
    assert list(hist) == ["ex0", "ex1", "ex2"]
    assert all(len(v) == 3 and all(x in (0, 0.25, 0.5, 0.75, 1.0) for x in v) for v in hist.values())
    assert [k for k, _ in rank(hist, "std", 0)] == sorted(hist, key=lambda k: -torch.tensor(
        hist[k]).std(unbiased=False).item())

    # a run stopped after step 2 (checkpoint) and resumed writes the same history
    cfg_b = build("toy", None, overrides(tiny, tmp_path / "b", **{**kw, "trainer.total_steps": 2}))
    Trainer(cfg_b).run()
    cfg_b = build("toy", None, overrides(tiny, tmp_path / "b", **kw))
    Trainer(cfg_b, resume=True).run()
    assert load_history(tmp_path / "b" / "acc_history.json") == hist
