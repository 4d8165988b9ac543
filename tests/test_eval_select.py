"""``onerl eval``, ``onerl select`` and ``onerl report``: the benchmark protocol table, pass@k
against brute-force enumeration, prompt templates, self-reflection counting, selection ranks with
ties, data-file errors naming file and line, an end-to-end eval of a tiny random model on
5-problem fixtures (two checkpoints sharing one engine), and a report of a synthetic run."""
import itertools
import json

import pytest
import torch

from onerl import benchmarks as B
from onerl import models
from onerl.cli import main
from onerl.data import DataError
from onerl.select import load_history, rank
from onerl.toy.tokenizer import save_tokenizer

PROBLEMS = [("What is 2 + 3?", "5"), ("Compute 7 times 6.", "42"), ("What is 10 - 4?", "6"),
            ("Half of 18 is what?", "9"), ("What is 3 squared?", "9")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny random Qwen2 checkpoints (same shapes, different weights) with the toy tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    folders = []
    for seed in (0, 1):
        folder = root / f"step_{seed:06d}"
        tok = save_tokenizer(str(folder))
        cfg = models.ModelConfig.from_hf(dict(
            model_type="qwen2", vocab_size=tok.get_vocab_size(), hidden_size=32,
            intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
            eos_token_id=tok.token_to_id("<|im_end|>")))
        models.save(models.build(cfg, torch.float32, seed=seed), str(folder),
                    copy_files_from=str(folder))
        folders.append(folder)
    return root, folders


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- protocol, pass@k, templates

def test_protocol_table_and_overrides():
    for name in ("math500", "minerva_math", "olympiadbench"):
        p = B.protocol_for(name)
        assert (p.n, p.temperature, p.greedy, p.max_tokens) == (1, 0.0, True, 3072)
    for name in ("aime24", "aime25", "amc23"):
        p = B.protocol_for(name)
        assert (p.n, p.temperature, p.greedy, p.label) == (8, 0.6, False, "avg@8 T=0.6")
    assert B.protocol_for("math500", n=4, temperature=1.0).n == 4
    assert B.protocol_for("aime24", n=1, temperature=0.0).greedy
    assert B.protocol_for("aime24", max_tokens=16).max_tokens == 16
    assert B.protocol_for("my_set") == B.Protocol()  # unknown names: greedy, one sample
    with pytest.raises(ValueError, match="identical"):
        B.protocol_for("math500", n=8)
    assert B.parse_benchmarks("all") == list(B.SIX)
    with pytest.raises(ValueError, match="twice"):
        B.parse_benchmarks("math500,math500")


def test_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
                assert B.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert B.pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        B.pass_at_k(4, 1, 5)


def test_templates(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny[1][0]))
    assert B.resolve_template(tok, "auto") == "qwen25-math-cot"
    text = B.prompt_text("What is 1+1?", "qwen25-math-cot")
    assert text == ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                    "within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = B.prompt_ids(tok, "What is 1+1?", "qwen25-math-cot")
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # special tokens kept whole
    assert tok.decode(ids) == text
    stops = B.stop_token_ids(tok, tiny[1][0])
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops
    assert tok.convert_tokens_to_ids("<|endoftext|>") in stops
    with pytest.raises(ValueError, match="unknown template"):
        B.resolve_template(tok, "alpaca")
    with pytest.raises(ValueError, match="template llama needs"):
        B.resolve_template(tok, "llama")


def test_reflection_counting():
    texts = ["Let me RECHECK this.", "Rethinking the setup", "no reflection", "prerecheck",
             "we recalculate and recheck"]
    assert B.count_reflections(texts) == 3
    assert B.count_reflections(texts, ["wait", "recheck"]) == 2
    assert B.count_reflections(["Wait, no."], ["wait"]) == 1
    with pytest.raises(ValueError, match="empty"):
        B.reflection_regex([])


# ---------------------------------------------------------------- data errors

@pytest.mark.parametrize("content, match", [
    ('{"problem": "a", "answer": "1"}\n{"problem": "b"}\n', r"math500\.jsonl, line 2: missing field 'answer'"),
    ('{"problem": "a", "answer": "1"}\n\n{"problem": "b", "answer": 2\n', r"math500\.jsonl, line 3: not valid JSON"),
    ('{"answer": "1"}\n', r"math500\.jsonl, line 1: missing field 'problem'"),
    ("\n\n", r"math500\.jsonl: empty file"),
    ("", r"math500\.jsonl: empty file"),
])
def test_bad_data_files_name_file_and_line(tmp_path, content, match):
    (tmp_path / "math500.jsonl").write_text(content)
    with pytest.raises(DataError, match=match):
        B.load_benchmark(tmp_path, "math500")


def test_bad_data_file_through_cli(tmp_path, tiny, capsys):
    (tmp_path / "math500.jsonl").write_text('{"problem": "a"}\n')
    rc = main(["eval", str(tiny[1][0]), "--benchmarks", "math500", "--data", str(tmp_path),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "math500.jsonl, line 1: missing field 'answer'" in capsys.readouterr().err
    assert main(["eval", str(tiny[1][0]), "--benchmarks", "aime24", "--data",
                 str(tmp_path)]) == 2
    assert "data file not found" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end

def test_eval_end_to_end_two_checkpoints(tmp_path, tiny, capsys):
    root, folders = tiny
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": i, "problem": p, "answer": a} for i, (p, a) in enumerate(PROBLEMS)]
    write_jsonl(data / "math500.jsonl", rows)
    write_jsonl(data / "aime24.jsonl", rows)
    out = tmp_path / "out"
    rc = main(["eval", str(root), "--benchmarks", "math500,aime24", "--data", str(data),
               "--out", str(out), "--max-tokens", "6", "--k", "4", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "step_000000" in printed and "step_000001" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [c["label"] for c in summary["checkpoints"]] == ["step_000000", "step_000001"]
    assert summary["protocols"]["aime24"]["n"] == 8
    for ck in summary["checkpoints"]:
        m, a = ck["benchmarks"]["math500"], ck["benchmarks"]["aime24"]
        assert (m["responses"], m["n"], m["protocol"]) == (5, 1, "greedy")
        assert (a["responses"], a["n"], a["k"]) == (40, 8, 4)
        assert "pass@4" in a and "avg@8" in a and "pass@4" not in m
        assert 0 <= a["avg@8"] <= a["pass@4"] <= 1
        assert ck["average"] == pytest.approx((m["accuracy"] + a["accuracy"]) / 2)
        assert 0 <= ck["truncation_rate"] <= 1 and ck["response_len"] <= 6
        samples = [json.loads(ln) for ln in (out / ck["label"] / "samples.jsonl").read_text()
                   .splitlines()]
        assert len(samples) == 45
        s = samples[0]
        assert set(s) >= {"benchmark", "id", "prompt", "response", "answer", "correct", "reason",
                          "tokens", "finish_reason"}
        assert s["prompt"].startswith("<|im_start|>system\nPlease reason step by step")
        assert sum(x["finish_reason"] == "length" for x in samples) / 45 == pytest.approx(
            ck["truncation_rate"])
    assert [c["model"] for c in summary["checkpoints"]] == [str(f) for f in folders]
    md = (out / "summary.md").read_text()
    assert "| checkpoint | math500 | aime24 | Avg. (2) |" in md and "reflections" in md


def test_weights_reloaded_into_same_model(tiny):
    from onerl.eval_cli import ModelSlot

    slot = ModelSlot("float32", "cpu", 4)
    assert slot.load(str(tiny[1][0])) is False
    model, engine = slot.model, slot.engine
    assert slot.load(str(tiny[1][1])) is True
    assert slot.model is model and slot.engine is engine
    fresh = models.load(str(tiny[1][1]), dtype=torch.float32)
    assert torch.equal(model.embed_tokens.weight, fresh.embed_tokens.weight)


# ---------------------------------------------------------------- select

HISTORY = {"a": [0, 1, 0, 1], "b": [0.5, 0.5], "c": [0, 1, 0, 1], "d": [0, 0.5, 1],
           "e": [1, 1], "f": [0.25, 0.75]}  # std: a=c=.5 (tie), d=.408, f=.25, b=e=0 (tie)


def test_select_ranks_with_ties(tmp_path, capsys):
    hist = tmp_path / "acc.json"
    hist.write_text(json.dumps(HISTORY))
    loaded = load_history(hist)
    assert [k for k, _ in rank(loaded)] == ["a", "c", "d", "f", "b", "e"]
    assert [k for k, _ in rank(loaded, "var")] == ["a", "c", "d", "f", "b", "e"]
    assert rank(loaded)[2][1] == pytest.approx((1 / 6) ** 0.5)
    rnd = [k for k, _ in rank(loaded, "random", seed=3)]
    assert sorted(rnd) == sorted(HISTORY) and rnd == [k for k, _ in rank(loaded, "random", seed=3)]
    assert main(["select", "--history", str(hist), "--rank", "2"]) == 0
    assert "c  0.500000" in capsys.readouterr().out
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"id": k, "problem": k.upper(), "answer": "1"}
                                                 for k in reversed(list(HISTORY))])
    out = tmp_path / "chosen.jsonl"
    assert main(["select", "--history", str(hist), "--rank", "1,5", "--pool", str(pool),
                 "--out", str(out), "--repeat", "3"]) == 0
    assert [json.loads(ln)["id"] for ln in out.read_text().splitlines()] == ["a"] * 3 + ["b"] * 3
    assert main(["select", "--history", str(hist), "--rank", "7"]) == 2
    assert "ranks 1..6" in capsys.readouterr().err
    hist.write_text('{"a": [0, 1],\n "b": oops}')
    assert main(["select", "--history", str(hist)]) == 2
    assert "acc.json, line 2: not valid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------- report

def test_report_on_synthetic_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for step in range(0, 9):
        row = {"step": step, "train/acc": min(1.0, 0.2 + 0.2 * step), "entropy": 1.0 - 0.05 * step}
        if step % 2 == 0:
            row.update({"eval/acc": [0.1, 0.3, 0.5, 0.4, 0.45][step // 2],
                        "eval/acc_strict": 0.05 * step, "eval/reflection_rate": 0.0})
        lines.append(json.dumps(row))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "best step by held-out accuracy (`eval/acc`): **4**" in md
    assert "saturated (>= 0.95) at step **4**" in md
    assert "| step | acc | acc_strict | reflection_rate |" in md
    assert "| 4 **(best)** | 0.5 |" in md
    assert "![training curves](curves.png)" in md and (run / "curves.png").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
