"""Tests for the toy math world: generator, splits, tokenizer, scoring, checkpoint."""
import itertools
import json
import os
import re
from collections import Counter, defaultdict

import pytest

from onerl.toy import score, world
from onerl.toy import tokenizer as toytok

BASE = os.path.join(os.path.dirname(world.__file__), "base")
LINE = re.compile(r"^(?:recheck: )?(\d+) ([+-]) (\d+) = (\d+)$")


def _stream(seed, n):
    return list(itertools.islice(world.pretrain_examples(seed), n))


@pytest.fixture(scope="module")
def docs():
    return _stream(0, 20000)


def _gold_from_text(text):
    """Independent reading of a problem statement."""
    sentences = [s.strip() for s in re.split(r"[.?]", text.replace(world.SUFFIX, "")) if s.strip()]
    value = int(re.search(r"There are (\d+) ", sentences[0]).group(1))
    for s in sentences[1:-1]:
        k = int(re.search(r"(\d+)", s).group(1))
        if "more" in s and s.endswith("are put in"):
            value += k
        elif s.endswith("are taken out"):
            value -= k
        else:
            raise AssertionError(s)
    assert sentences[-1].startswith("How many")
    return value


def _steps(solution):
    return [tuple(int(g) if g.isdigit() else g for g in LINE.match(l).groups())
            for l in solution.split("\n") if LINE.match(l)]


# ----------------------------------------------------------------- world
def test_answers_match_independent_reading(docs):
    rows = world.heldout_set(400) + world.example_pool(64)
    for row in rows:
        gold = _gold_from_text(row["problem"])
        assert gold >= 0 and str(gold) == row["answer"]
        assert row["prompt"] == row["problem"] + world.SUFFIX
    for prob, _, _ in docs[:3000]:
        assert _gold_from_text(prob.prompt) == prob.answer
        assert world.parse_problem(prob.prompt) == prob


def test_dropped_carry_examples():
    assert world.dropped_carry(47, "+", 38) == 75
    assert world.dropped_carry(85, "-", 19) == 74
    assert world.dropped_carry(52, "-", 7) == 55
    assert world.dropped_carry(103, "-", 5) == 102
    assert world.dropped_carry(95, "+", 37) == 122
    assert world.dropped_carry(52, "+", 70) == 122 and not world.needs_carry(52, "+", 70)
    assert world.needs_carry(47, "+", 8) and not world.needs_carry(47, "-", 5)
    assert world.dropped_carry(123, "+", 45) == 168 and not world.needs_carry(123, "+", 45)


def test_every_document_ends_boxed_and_modes_follow_template_mix(docs):
    counts = defaultdict(Counter)
    for prob, mode, sol in docs:
        assert sol.split("\n")[-1].startswith("answer: \\boxed{") and sol.endswith("}")
        assert score.solution_mode(sol) == mode
        counts[prob.template.name][mode] += 1
    assert set(counts) == {t.name for t in world.TEMPLATES}
    for t in world.TEMPLATES:
        total = sum(counts[t.name].values())
        for mode, p in zip(world.MODES, t.mix):
            assert abs(counts[t.name][mode] / total - p) < 0.05, (t.name, mode)
    overall = Counter(m for _, m, _ in docs)
    assert all(overall[m] > 0.15 * len(docs) for m in world.MODES)


def test_careful_solutions_recheck_and_fix(docs):
    slips = firsts = 0
    for prob, mode, sol in docs:
        if mode != "careful":
            continue
        lines = sol.split("\n")
        assert len(lines) == 2 * len(prob.template.ops) + 1
        for first, check, (x, op, y, true) in zip(lines[0::2], lines[1::2], prob.steps()):
            assert not first.startswith("recheck") and check.startswith("recheck: ")
            fx, fop, fy, fres = LINE.match(first).groups()
            cx, cop, cy, cres = LINE.match(check).groups()
            assert (fx, fop, fy) == (cx, cop, cy) == (str(x), op, str(y))
            assert int(cres) == true
            firsts += 1
            slips += int(fres) != true
        assert score.strict_correct(sol, prob.answer)
    assert abs(slips / firsts - world.CAREFUL_SLIP) < 0.03


def test_sloppy_errors_at_configured_rate(docs):
    wrong = carry_steps = 0
    for prob, mode, sol in docs:
        if mode != "sloppy":
            continue
        value = prob.numbers[0]
        for (x, op, y, written), y_true in zip(_steps(sol), prob.numbers[1:]):
            assert x == value and y == y_true
            true = world.apply_op(x, op, y)
            if world.needs_carry(x, op, y):
                carry_steps += 1
                wrong += written != true
                assert written in (true, world.dropped_carry(x, op, y))
            else:
                assert written == true
            value = written
        assert score.format_free_answer(sol) == value
    assert carry_steps > 2000
    assert abs(wrong / carry_steps - world.SLOPPY_ERROR) < 0.03


def test_shortcuts_have_no_steps_and_are_rarely_right(docs):
    shortcut = [(p, s) for p, m, s in docs if m == "shortcut"]
    assert all("=" not in s and "\n" not in s for _, s in shortcut)
    lucky = sum(score.strict_correct(s, p.answer) for p, s in shortcut) / len(shortcut)
    assert lucky < 0.08


def test_determinism():
    assert _stream(0, 300) == _stream(0, 300)
    assert _stream(0, 300) != _stream(1, 300)
    assert world.heldout_set(50) == world.heldout_set(50)
    assert world.example_pool(64) == world.example_pool(64)
    assert world.example_pool(64, seed=2) != world.example_pool(64)


def test_splits_are_disjoint(docs):
    held = world.heldout_problems(400)
    pool = world.example_pool(64)
    held_keys = {p.key for p in held}
    pool_keys = {world.parse_problem(r["prompt"]).key for r in pool}
    train_keys = {p.key for p, _, _ in docs}
    assert len(held_keys) == 400 and len(pool_keys) == 64
    assert not held_keys & pool_keys
    assert not train_keys & (held_keys | pool_keys)
    assert {p.template.name for p in held} == {t.name for t in world.TEMPLATES}
    pool_templates = {r["template"] for r in pool}
    assert pool_templates == {t.name for t in world.TEMPLATES if t.in_pool}
    assert len({t.name for t in world.TEMPLATES} - pool_templates) >= 3
    assert [r["id"] for r in pool] == [f"toy-pool-{i:03d}" for i in range(64)]


def test_jsonl_cli(tmp_path):
    out = tmp_path / "one.jsonl"
    world.main(["example", "--id", "toy-pool-005", "--out", str(out)])
    (row,) = world.read_jsonl(str(out))
    assert row == world.example_pool(64)[5]
    assert {"id", "problem", "answer", "prompt"} <= set(row)
    world.main(["heldout", "--n", "20", "--out", str(out)])
    assert [json.loads(l)["id"] for l in open(out)] == [f"toy-test-{i:03d}" for i in range(20)]


# ----------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    """Loaded next to a qwen2 config, as AutoTokenizer sees a checkpoint."""
    from transformers import AutoTokenizer, Qwen2Config

    path = tmp_path_factory.mktemp("tok")
    Qwen2Config(vocab_size=toytok.build_tokenizer().get_vocab_size()).save_pretrained(str(path))
    toytok.save_tokenizer(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def test_tokenizer_round_trips_documents(docs, hf_tok):
    raw = toytok.build_tokenizer()
    texts = [toytok.render_document(p.prompt, s) for p, _, s in docs[:3000]]
    for text, enc in zip(texts, raw.encode_batch(texts)):
        assert raw.decode(enc.ids, skip_special_tokens=False) == text
    for text in texts[:300]:
        ids = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text).ids      # the loader keeps the training pipeline
        assert hf_tok.decode(ids) == text
    # every word of the world is one token; numbers are spelled digit by digit
    plain = [re.sub(r"<\|[a-z_]+\|>", "\n", text) for text in texts[:300]]
    words = {w for text in plain for w in re.findall(r"[A-Za-z]+", text)}
    assert {"recheck", "answer", "apples", "boxed"} <= words
    for word in words:
        assert len(raw.encode(" " + word).ids) == 1 or len(raw.encode(word).ids) == 1, word
    pieces = [hf_tok.decode([i]) for i in hf_tok("47 + 38 = 85", add_special_tokens=False)["input_ids"]]
    assert pieces == ["4", "7", " +", " ", "3", "8", " =", " ", "8", "5"]
    assert len(hf_tok) < 512
    odd = "caf\u00e9 \u2603\ttabs"         # bytes outside the world still round-trip
    assert hf_tok.decode(hf_tok(odd)["input_ids"]) == odd


def test_chat_template(hf_tok):
    prompt = world.heldout_set(1)[0]["prompt"]
    rendered = hf_tok.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, tokenize=False)
    assert rendered == ("<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n")
    assert rendered == toytok.render_prompt(prompt)
    assert prompt.endswith("output the final answer within \\boxed{}.")
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.pad_token == "<|endoftext|>"


# ----------------------------------------------------------------- checkpoint
@pytest.mark.skipif(not os.path.exists(os.path.join(BASE, "model.safetensors")),
                    reason="shipped checkpoint not built yet")
def test_shipped_checkpoint_loads_and_answers_boxed():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from onerl.toy import evaluate

    size = sum(os.path.getsize(os.path.join(BASE, f)) for f in os.listdir(BASE))
    assert size < 5e6
    tok = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForCausalLM.from_pretrained(BASE)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.2e6
    assert GenerationConfig.from_pretrained(BASE).eos_token_id == tok.eos_token_id
    torch.set_num_threads(1)
    rows = world.heldout_set(8)
    responses = evaluate.generate(model, tok, [r["prompt"] for r in rows])
    assert all(score.is_boxed(r) for r in responses)


# ----------------------------------------------------------------- scoring
def test_score_hand_written_cases():
    careful = "47 + 38 = 75\nrecheck: 47 + 38 = 85\n85 - 19 = 66\nrecheck: 85 - 19 = 66\nanswer: \\boxed{66}"
    assert score.strict_correct(careful, 66) and score.strict_correct(careful, "66")
    assert score.format_free_correct(careful, 66)
    assert score.has_reflection(careful) and score.solution_mode(careful) == "careful"
    unboxed = "47 + 38 = 85\n85 - 19 = 66\nanswer: 66"
    assert not score.strict_correct(unboxed, 66) and score.format_free_correct(unboxed, 66)
    assert score.solution_mode(unboxed) == "sloppy" and not score.is_boxed(unboxed)
    truncated = "47 + 38 = 85\n85 - 19 = 66\nansw"
    assert score.format_free_answer(truncated) == 66
    assert score.strict_answer("answer: \\boxed{ 12 }") == "12"
    assert not score.strict_correct("answer: \\boxed{012}", 12)
    assert score.format_free_correct("answer: \\boxed{012}", 12)
    assert score.strict_answer("\\boxed{3} then \\boxed{4}") == "4"
    assert score.strict_correct("answer: \\boxed{5}<|im_end|>\\boxed{6}", 5)
    assert score.format_free_answer("no numbers here") is None
    assert score.solution_mode("answer: \\boxed{90}") == "shortcut"
    for word in ("Let me rethink.", "RECALCULATE: 1 + 1 = 2"):
        assert score.has_reflection(word)
    assert score.reflection_rate([careful, unboxed, "x"]) == pytest.approx(1 / 3)
    summary = score.summarize([careful, unboxed, "answer: \\boxed{7}"], [66, 66, 8],
                              groups=["a", "a", "b"])
    assert summary["strict"] == pytest.approx(1 / 3)
    assert summary["format_free"] == pytest.approx(2 / 3)
    assert summary["boxed"] == pytest.approx(2 / 3)
    assert summary["mode_strict"] == {"careful": 1.0, "shortcut": 0.0, "sloppy": 0.0}
    assert summary["group_strict"] == {"a": 0.5, "b": 0.0}
