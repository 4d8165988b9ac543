"""The rollout engine: greedy parity with transformers, log-probs, sharing, seeds, stops."""
import pytest
import torch

from onerl.block_manager import BlockManager
from onerl.engine import LLMEngine
from onerl.models import load
from onerl.row_split import RowWorkers
from onerl.scheduler import Sequence

transformers = pytest.importorskip("transformers")
from test_model import VOCAB, hf_model  # noqa: E402

PROMPT_LENS = (3, 9, 17, 30)
NEW = 24


@pytest.fixture(scope="module", params=["qwen2", "llama3"])
def family(request, tmp_path_factory):
    """(name, transformers model, onerl model with the same weights, prompts, HF greedy outputs)."""
    hf = hf_model(request.param)
    folder = str(tmp_path_factory.mktemp(request.param))
    hf.save_pretrained(folder)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in PROMPT_LENS]
    greedy = []
    for p in prompts:
        ids = torch.tensor([p])
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
        greedy.append(out[0, len(p):].tolist())
    return request.param, hf, load(folder), prompts, greedy


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    hf = hf_model("qwen2")
    folder = str(tmp_path_factory.mktemp("qwen"))
    hf.save_pretrained(folder)
    return load(folder)


def prompts_of(*lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lens]


def teacher_forced_logp(model, prompt, tokens, temperature):
    ids = torch.tensor(prompt + tokens[:-1])
    with torch.no_grad():
        logits = model.logits(model(ids))[len(prompt) - 1:]
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.mark.parametrize("block_size,cache_tokens", [(16, None), (1, None), (16, 64), (1, 60)])
def test_greedy_matches_transformers(family, block_size, cache_tokens):
    _, _, model, prompts, greedy = family
    engine = LLMEngine(model, block_size=block_size, max_cache_tokens=cache_tokens, max_num_seqs=6)
    outs = engine.generate(prompts, n=2, max_new_tokens=NEW, temperature=0.0, ignore_eos=True)
    assert [(o.prompt_index, o.sample_index) for o in outs] == \
        [(i, j) for i in range(4) for j in range(2)]
    for o in outs:
        assert o.token_ids == greedy[o.prompt_index]
        assert o.finish_reason == "length" and o.logprobs.dtype == torch.float32
    if cache_tokens:
        assert engine.stats["preemptions"] > 0  # the tiny cache forced recompute


def test_sampled_logprobs_equal_teacher_forced(qwen):
    prompts = prompts_of(5, 13, 8)
    engine = LLMEngine(qwen, block_size=4)  # forks share a partial block: copy-on-write
    for t, top_k, top_p in ((0.7, -1, 1.0), (1.0, 20, 0.9)):
        outs = engine.generate(prompts, n=3, max_new_tokens=16, temperature=t, top_k=top_k,
                               top_p=top_p, ignore_eos=True, seed=11)
        assert len({tuple(o.token_ids) for o in outs}) == len(outs)  # samples differ
        for o in outs:
            ref = teacher_forced_logp(qwen, prompts[o.prompt_index], o.token_ids, t)
            assert (o.logprobs - ref).abs().max().item() <= 1e-4


def test_prompt_prefilled_once(qwen):
    a, b = prompts_of(21, 6, seed=3)
    engine = LLMEngine(qwen, max_num_seqs=64, row_split=False)  # (lanes: once per lane)
    outs = engine.generate([a] * 16, n=4, max_new_tokens=4, temperature=1.0, ignore_eos=True,
                           use_tqdm=True)
    assert len(outs) == 64 and engine.stats["prefill_tokens"] == len(a)
    assert len({tuple(o.token_ids) for o in outs}) > 32  # 64 different seeds
    engine.generate([a, b, a, b, a], n=2, max_new_tokens=3, temperature=1.0, ignore_eos=True)
    assert engine.stats["prefill_tokens"] == len(a) + len(b)


def test_same_seed_same_samples_whatever_the_batch(qwen):
    prompts = prompts_of(7, 12, 4, seed=9)
    kw = dict(n=2, max_new_tokens=12, temperature=0.9, ignore_eos=True, seed=7)
    base = LLMEngine(qwen).generate(prompts, **kw)
    alone = LLMEngine(qwen).generate(prompts[:1], **kw)
    assert [o.token_ids for o in alone] == [o.token_ids for o in base[:2]]
    for engine in (LLMEngine(qwen, max_num_seqs=1),
                   LLMEngine(qwen, block_size=2, max_cache_tokens=24)):  # preempts
        outs = engine.generate(prompts, **kw)
        assert [o.token_ids for o in outs] == [o.token_ids for o in base]
        for a, b in zip(outs, base):
            torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-5)
    assert engine.stats["preemptions"] > 0
    other = LLMEngine(qwen).generate(prompts, **{**kw, "seed": 8})
    assert [o.token_ids for o in other] != [o.token_ids for o in base]


def test_row_split_lanes_sample_what_one_engine_does(qwen, monkeypatch):
    """On the CPU a call is cut into lanes, one per intra-op thread: engines over slices of the
    KV cache, each run on its own worker thread with one intra-op thread. Same tokens, same
    log-probs as one engine; a prompt is prefilled once per lane."""
    prompts = prompts_of(5, 11, 8, 20, seed=2)
    kw = dict(n=8, max_new_tokens=10, temperature=0.8, ignore_eos=True, seed=3)
    threads = torch.get_num_threads()
    calls, real_map = [], RowWorkers.map
    monkeypatch.setattr(RowWorkers, "map",
                        lambda self, fn, args: calls.append(len(args)) or real_map(self, fn, args))
    torch.set_num_threads(3)   # three lanes of the 32 sequences, whatever this machine's cores
    try:
        engine = LLMEngine(qwen, block_size=4)
        split = engine.generate(prompts, **kw)
        stats = dict(engine.stats)
        kw2 = {**kw, "max_new_tokens": 6, "temperature": 1.1, "seed": 4}
        again = engine.generate(prompts, **kw2)   # the lanes are kept, with this call's settings
        assert torch.get_num_threads() == 3   # the caller's team is left as it was
        workers = RowWorkers.get()
        state = real_map(workers, lambda _: (torch.get_num_threads(),
                                             torch.is_inference_mode_enabled()), range(3))
        one = LLMEngine(qwen, block_size=4, row_split=False)
        whole, whole2 = one.generate(prompts, **kw), one.generate(prompts, **kw2)
        small = LLMEngine(qwen, block_size=4, max_cache_tokens=48)   # a slice holds no sequence
        assert [o.token_ids for o in small.generate(prompts, **kw)] == \
            [o.token_ids for o in whole] and small.stats["lanes"] == 1
    finally:
        torch.set_num_threads(threads)
    assert calls == [3, 3] and stats["lanes"] == 3 and state == [(1, True)] * 3
    # lanes of 10 / 11 / 11 sequences: prompts 0, 1 | 1, 2 | 2, 3 -> prompts 1 and 2 twice
    assert stats["prefill_tokens"] == 5 + 2 * 11 + 2 * 8 + 20
    assert stats["generated_tokens"] == 32 * 10
    assert [o.token_ids for o in split] == [o.token_ids for o in whole]
    assert [o.token_ids for o in again] == [o.token_ids for o in whole2]
    assert all(len(o.token_ids) == 6 for o in again)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-5)
    assert [(s.start, s.stop) for s in workers.slices(20)] == [(0, 10), (10, 20)]
    assert [(s.start, s.stop) for s in workers.slices(7)] == [(0, 7)]


def test_stop_tokens_eos_and_stop_strings(qwen):
    prompt = prompts_of(10, seed=4)[0]
    engine = LLMEngine(qwen)
    greedy = dict(max_new_tokens=20, temperature=0.0)
    full = engine.generate([prompt], ignore_eos=True, **greedy)[0].token_ids
    stop = full[6]
    k = full.index(stop)
    out = engine.generate([prompt], max_new_tokens=20, temperature=0.0, stop_token_ids=[stop])[0]
    assert out.token_ids == full[:k + 1] and out.finish_reason == "stop" and out.stop_reason == stop
    assert len(out.logprobs) == k + 1
    qwen.config.eos_token_id = stop
    try:
        assert engine.generate([prompt], **greedy)[0].token_ids == full[:k + 1]
        free = engine.generate([prompt], max_new_tokens=20, temperature=0.0, ignore_eos=True)[0]
        assert free.token_ids == full and free.finish_reason == "length"
    finally:
        qwen.config.eos_token_id = None

    def detok(ids):
        return "".join(f"<{i}>" for i in ids)
    target = detok(full[8:10])
    k = next(j for j in range(len(full)) if target in detok(full[:j + 1]))
    out = engine.generate([prompt], max_new_tokens=20, temperature=0.0, stop_strings=[target],
                          detokenize=detok)[0]
    assert out.token_ids == full[:k + 1] and out.stop_reason == target
    with pytest.raises(ValueError, match="detokenize"):
        engine.generate([prompt], stop_strings=["x"])


def test_weight_update_visible_at_next_generate(qwen):
    prompt = prompts_of(8, seed=2)[0]
    engine = LLMEngine(qwen)
    before = engine.generate([prompt], max_new_tokens=10, temperature=0.0, ignore_eos=True)[0]
    w = qwen.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-3.0)  # an in-place update, like an optimizer step
        after = engine.generate([prompt], max_new_tokens=10, temperature=0.0, ignore_eos=True)[0]
        assert after.token_ids != before.token_ids
        ref = teacher_forced_logp(qwen, prompt, after.token_ids, 1.0)
        assert (after.logprobs - ref).abs().max().item() <= 1e-4
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_static_decode_buffers_path(family):
    """cuda_graphs=True on a CPU runs the padded static-buffer decode path without capture."""
    _, _, model, prompts, greedy = family
    engine = LLMEngine(model, cuda_graphs=True, max_num_seqs=6, block_size=8)
    outs = engine.generate(prompts, n=2, max_new_tokens=NEW, temperature=0.0, ignore_eos=True)
    assert all(o.token_ids == greedy[o.prompt_index] for o in outs)


def test_length_abort_and_errors(qwen):
    engine = LLMEngine(qwen, max_model_len=20, block_size=4, max_cache_tokens=16)
    out = engine.generate(prompts_of(10), max_new_tokens=50, temperature=0.0, ignore_eos=True)[0]
    assert out.finish_reason == "abort" and 10 + len(out.token_ids) == 17  # 16 cached + 1 sampled
    engine = LLMEngine(qwen, max_model_len=20)
    out = engine.generate(prompts_of(10), max_new_tokens=50, temperature=0.0, ignore_eos=True)[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 10
    with pytest.raises(ValueError, match="max_model_len"):
        engine.generate(prompts_of(20))
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]])
    with pytest.raises(ValueError, match="outside"):
        engine.generate([[VOCAB]])


def test_block_manager_fork_copy_on_write_free():
    cache = torch.arange(2 * 2 * 4 * 2 * 1 * 1, dtype=torch.float32).view(2, 2, 4, 2, 1, 1)
    bm = BlockManager(num_blocks=4, block_size=2, max_blocks_per_seq=4, cache=cache.clone())
    parent = Sequence([1, 2, 3], 0, 0, 0)
    bm.allocate(parent)  # 3 tokens -> blocks 0, 1 (block 1 half full)
    child = Sequence([1, 2, 3], 0, 1, 0)
    bm.fork(parent, child)
    assert bm.ref[:2] == [2, 2] and bm.num_free == 2
    child.token_ids.append(4)  # position 3 lands in the shared, partial block 1 -> private copy
    slot = bm.append_slot(child)
    assert child.block_table == [0, 2] and slot == 2 * 2 + 1 and bm.ref[:3] == [2, 1, 1]
    bm.flush_copies()
    assert torch.equal(bm.cache[:, :, 2], cache[:, :, 1])
    parent.token_ids.append(5)  # the parent now owns block 1 alone: no copy
    assert bm.append_slot(parent) == 1 * 2 + 1 and not bm.copies
    parent.token_ids.append(6)  # position 4 opens a new block
    assert bm.can_append(parent) and bm.append_slot(parent) == 3 * 2 and bm.num_free == 0
    assert not bm.can_append(child) or len(child.token_ids) % 2 == 0
    assert bm.block_tables([parent, child], 2).tolist() == [[0, 1], [0, 2]]
    bm.free(parent)
    bm.free(child)
    assert bm.num_free == 4 and bm.ref == [0, 0, 0, 0]


def test_block_manager_holds_copy_sources_until_the_copy():
    bm = BlockManager(num_blocks=5, block_size=2, max_blocks_per_seq=4)
    parent, a, b = (Sequence([1, 2, 3], 0, j, 0) for j in range(3))
    bm.allocate(parent)
    bm.fork(parent, a)
    bm.fork(parent, b)
    a.token_ids.append(4)
    bm.append_slot(a)  # copy-on-write 1 -> 2 pending
    assert bm.copies == [(1, 2)]
    bm.free(parent)
    bm.free(b)  # block 1 is unreferenced now, but the pending copy still reads it
    assert 1 not in bm.free_ids and bm.num_free == 2
    bm.flush_copies()
    assert 1 in bm.free_ids and bm.num_free == 3
