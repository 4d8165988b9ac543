"""The GRPO trainer on a tiny random model: the loss path against a plain-torch rendering of the
paper's loss (with transformers' model), parameters move and stay finite, NaN guard, and exact
resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from onerl import models
from onerl.config import build
from onerl.toy.tokenizer import save_tokenizer
from onerl.trainer import Trainer
from onerl_kernels import logprobs_chunked as chunked

TIME_KEYS = ("time/", "tokens_per_s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Qwen2 model folder with the toy tokenizer, and a one-problem JSONL."""
    root = tmp_path_factory.mktemp("tiny")
    folder = root / "model"
    tok = save_tokenizer(str(folder))
    eos = tok.token_to_id("<|im_end|>")
    cfg = models.ModelConfig.from_hf(dict(
        model_type="qwen2", vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True, eos_token_id=eos))
    models.save(models.build(cfg, torch.float32, seed=0), str(folder), copy_files_from=str(folder))
    data = root / "one.jsonl"
    data.write_text(json.dumps({"id": 0, "prompt": "Tom has 12 apples and buys 7 more. How many "
                                "apples does Tom have now?", "answer": "19"}) + "\n")
    return folder, data


def overrides(tiny, out, **extra):
    folder, data = tiny
    kv = {"model.path": str(folder), "model.ref_dtype": "float32", "data.train_files": str(data),
          "trainer.out_dir": str(out), "trainer.train_batch_size": 2, "rollout.n": 4,
          "rollout.max_new_tokens": 12, "trainer.eval_every": 0, "trainer.tensorboard": "false",
          "trainer.progress": "false", "trainer.threads": 1, "optim.lr": 1e-3,
          "trainer.micro_batch_tokens": 64, "trainer.eval_files": "[]", **extra}
    return [f"{k}={v}" for k, v in kv.items()]


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("entropy_coef,shared,threads",
                         [(0.001, False, 1), (0.0, True, 1), (0.001, False, 2), (0.0, True, 2)])
def test_loss_path_equals_plain_torch_recipe(tiny, tmp_path, monkeypatch, keep_threads,
                                             entropy_coef, shared, threads):
    """recipe.md §2 in plain torch: token-mean of -A*ratio + 0.001*k3 - c*H at logits/0.6,
    computed with transformers' Qwen2 on unpacked sequences; the trainer packs sequences into
    several token-budget micro-batches and uses the fused kernels. shared: all sequences have
    one prompt (the 1-shot case: shared-prompt forward, micro-batches counting it once) and
    c = 0 (the entropy is then a metric only, left out of the backward). threads 2: each
    micro-batch is cut into two parts run at once on the row-split workers (onerl.row_split),
    their gradients added in order."""
    from transformers import AutoModelForCausalLM

    cfg = build("toy", None, overrides(tiny, tmp_path, **{"algo.entropy_coef": entropy_coef,
                                                          "trainer.micro_batch_tokens": 24,
                                                          "trainer.threads": threads}))
    tr = Trainer(cfg)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 30, (n,), generator=g).tolist() for n in (5, 9, 7, 5)]
    if shared:
        prompts = [prompts[1]] * 4
    responses = [torch.randint(3, 30, (n,), generator=g).tolist() for n in (6, 3, 11, 1)]
    adv = torch.tensor([1.5, -0.5, 0.25, -1.0])
    with torch.no_grad():  # make the reference differ from the actor so the KL term matters
        for p in tr.ref.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    ref = tr._frozen_logprobs(tr.ref, prompts, responses)
    tr.opt.zero_grad()
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    seen = []   # the entropy gradient each logprobs backward receives
    real_bwd = chunked.hidden_backward
    monkeypatch.setattr(chunked, "hidden_backward",
                        lambda g_lp, g_ent, *a: seen.append(g_ent) or real_bwd(g_lp, g_ent, *a))
    sums = tr.backward(list(range(4)), prompts, responses, adv, None, ref, lengths)
    # micro-batches of <= 24 tokens: 2 (shared: 4 if the prompt counted 4x), in 2 parts each
    assert len(seen) == 2 * threads
    assert all((g is None) == (entropy_coef == 0) for g in seen)
    got = tr.actor.embed_tokens.weight.grad.clone()

    hf = AutoModelForCausalLM.from_pretrained(str(tiny[0]), dtype=torch.float32)
    hf_ref = AutoModelForCausalLM.from_pretrained(str(tiny[0]), dtype=torch.float32)
    hf_ref.model.load_state_dict({k.replace("model.", "", 1): v for k, v in
                                  models.hf_state_dict(tr.ref).items() if k.startswith("model.")})
    T = 0.6
    terms = []
    for p, r, a in zip(prompts, responses, adv):
        ids = torch.tensor([p + r])
        logits = hf(ids).logits[0, len(p) - 1:-1] / T
        with torch.no_grad():
            ref_lp = torch.log_softmax(hf_ref(ids).logits[0, len(p) - 1:-1] / T, -1)
        logp_all = torch.log_softmax(logits, -1)
        tgt = torch.tensor(r)[:, None]
        lp = logp_all.gather(1, tgt)[:, 0]
        rlp = ref_lp.gather(1, tgt)[:, 0]
        ent = -(logp_all.exp() * logp_all).sum(-1)
        ratio = torch.exp(lp - lp.detach())
        pg = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
        k3 = (torch.exp(rlp - lp) - (rlp - lp) - 1).clamp(-10, 10)
        terms.append(pg + 0.001 * k3 - entropy_coef * ent)
    loss = torch.cat(terms).mean()
    loss.backward()
    want = hf.model.embed_tokens.weight.grad
    assert sums["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_steps_change_parameters_and_stay_finite(tiny, tmp_path):
    cfg = build("toy", None, overrides(tiny, tmp_path, **{"trainer.total_steps": 2,
                                                          "trainer.save_every": 2}))
    tr = Trainer(cfg)
    before = [p.detach().clone() for p in tr.actor.parameters()]
    rows = tr.run()
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("loss", "grad_norm", "entropy", "kl", "response_len"):
            assert torch.isfinite(torch.tensor(float(r[k]))), k
        assert r["skipped"] == 0
    moved = sum(not torch.equal(b, p) for b, p in zip(before, tr.actor.parameters()))
    assert moved == len(before)
    ck = tmp_path / "checkpoints" / "step_000002"
    reloaded = models.load(str(ck), dtype="float32")
    for p, q in zip(tr.actor.parameters(), reloaded.parameters()):
        assert torch.equal(p, q)
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(str(ck))  # the checkpoint is a HF model folder


def test_nan_loss_skips_the_step_and_keeps_the_model(tiny, tmp_path):
    tr = Trainer(build("toy", None, overrides(tiny, tmp_path)))
    before = [p.detach().clone() for p in tr.actor.parameters()]
    prompts, responses = [[3, 4, 5]] * 2, [[6, 7], [8]]
    stats, _ = tr._update([0, 1], prompts, responses, torch.tensor([float("nan"), 1.0]), None,
                          None, [5, 4])
    assert stats["skipped"] == 1 and tr.skipped == 1
    assert all(torch.equal(b, p) for b, p in zip(before, tr.actor.parameters()))


def test_prompt_longer_than_limit_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(ValueError, match="data.max_prompt_tokens"):
        Trainer(build("toy", None, overrides(tiny, tmp_path, **{"data.max_prompt_tokens": 4})))


def _train_cmd(tiny, out, *extra):
    return [sys.executable, "-m", "onerl.cli", "train", *extra,
            *overrides(tiny, out, **{"trainer.total_steps": 4, "trainer.save_every": 1})]


def _metrics(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in r.items() if not k.startswith(TIME_KEYS)} for r in rows]


def test_resume_after_sigkill_reproduces_the_run(tiny, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(tiny, full), check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(_train_cmd(tiny, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and marker.read_text().strip() >= "step_000002":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.read_text().strip() < "step_000004", "the run finished before it was killed"
    subprocess.run(_train_cmd(tiny, killed, "--resume"), check=True, env=env,
                   capture_output=True, timeout=300)
    assert _metrics(killed) == _metrics(full)


def test_two_gloo_processes_match_one_process(tiny, tmp_path):
    """torchrun with 2 CPU processes (FSDP2, gloo): the first step's loss and updated weights
    equal a 1-process run on the same global batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {"trainer.total_steps": 1, "trainer.save_every": 1, "trainer.train_batch_size": 4,
          "algo.entropy_coef": 0.001}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "onerl", "train", *overrides(tiny, one, **kw)],
                   check=True, env=env, capture_output=True, timeout=300)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29517", "-m", "onerl", "train",
                          *overrides(tiny, two, **kw)], env=env, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    m1, m2 = _metrics(one)[-1], _metrics(two)[-1]
    assert m1["response_len"] == m2["response_len"] and m1["train/acc"] == m2["train/acc"]
    assert m2["loss"] == pytest.approx(m1["loss"], rel=1e-5, abs=1e-7)
    a = models.load(str(one / "checkpoints" / "step_000001"), dtype="float32")
    b = models.load(str(two / "checkpoints" / "step_000001"), dtype="float32")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
