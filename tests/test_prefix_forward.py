"""The shared-prompt training forward (onerl.prefix) against the plain packed forward: log-probs,
entropies and every parameter's gradient, on tiny random Qwen2 and Llama models."""
import pytest
import torch

from onerl import prefix
from onerl.batching import pack, response_logprobs
from onerl.models import ModelConfig, build

VOCAB = 61
CONFIGS = {
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
                  rope_theta=500000.0),
}


def model_of(name: str, dtype: torch.dtype, seed: int = 0):
    cfg = ModelConfig.from_hf(dict(vocab_size=VOCAB, max_position_embeddings=128,
                                   **CONFIGS[name]))
    model = build(cfg, dtype, seed=seed)
    with torch.no_grad():   # larger than the default init: non-trivial attention patterns
        for p in model.parameters():
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
            seed += 1
    return model


def batch(prompt_lens: list[int], group_sizes: list[int], resp_lens: list[int], seed: int = 0,
          interleave: bool = True):
    """Groups of sequences with identical prompts (some groups of equal prompt length),
    responses of the given lengths (cycled); rows interleaved across groups when asked."""
    g = torch.Generator().manual_seed(seed)
    tok = lambda n: torch.randint(0, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    uniq = [tok(n) for n in prompt_lens]
    seqs = [(gi, k) for gi, size in enumerate(group_sizes) for k in range(size)]
    if interleave:
        seqs.sort(key=lambda s: (s[1], s[0]))
    prompts = [uniq[gi] for gi, _ in seqs]
    responses = [tok(resp_lens[i % len(resp_lens)]) for i in range(len(seqs))]
    return prompts, responses


def logprobs_and_grads(model, prompts, responses, share: bool, need_entropy: bool = True):
    model.zero_grad(set_to_none=True)
    packed = pack(prompts, responses, torch.device("cpu"))
    lp, ent = response_logprobs(model, packed, 0.7, need_entropy, share_prefix=share)
    w = torch.linspace(-1.0, 2.0, lp.numel(), dtype=lp.dtype).view_as(lp)
    loss = (lp * w).sum() + (0.3 * ent.sum() if need_entropy else 0.0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return lp.detach(), None if ent is None else ent.detach(), grads, packed.mask


CASES = {
    # 1-shot: one prompt, every row; lengths include 1 (no response input) and 2
    "one_group": ([13], [7], [9, 1, 4, 2, 11, 1, 6]),
    # several groups, two share a prompt length (one bucket), a singleton group
    "groups": ([5, 9, 5, 3], [3, 4, 2, 1], [1, 6, 3, 8, 2]),
    # prompt of one token; responses all of length 1 (no response inputs at all)
    "short": ([1, 4], [3, 2], [1]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_shared_prompt_equals_plain_path(name, case, dtype, tol):
    model = model_of(name, dtype)
    prompts, responses = batch(*CASES[case])
    assert prefix.build(prompts, responses, "cpu") is not None
    lp0, ent0, g0, mask = logprobs_and_grads(model, prompts, responses, share=False)
    lp1, ent1, g1, _ = logprobs_and_grads(model, prompts, responses, share=True)
    assert lp1.dtype == lp0.dtype and lp1.shape == lp0.shape
    assert torch.equal(lp1[~mask], torch.zeros_like(lp1[~mask]))
    scale = lambda t: t.abs().max().clamp(min=1.0)  # noqa: E731
    assert ((lp1 - lp0).abs().max() / scale(lp0)).item() <= tol
    assert ((ent1 - ent0).abs().max() / scale(ent0)).item() <= tol
    for n, g in g0.items():
        assert ((g1[n] - g).abs().max() / scale(g)).item() <= tol, n


def test_frozen_forward_and_gradient_checkpointing():
    model = model_of("qwen2", torch.float64, seed=3)
    prompts, responses = batch([7, 7], [4, 3], [5, 1, 3], seed=1)
    with torch.no_grad():
        packed = pack(prompts, responses, torch.device("cpu"))
        lp0 = response_logprobs(model, packed, 0.6, False, share_prefix=False)[0]
        lp1 = response_logprobs(model, packed, 0.6, False, share_prefix=True)[0]
    assert (lp1 - lp0).abs().max().item() <= 1e-10
    _, _, g0, _ = logprobs_and_grads(model, prompts, responses, share=True)
    model.gradient_checkpointing = True
    _, _, g1, _ = logprobs_and_grads(model, prompts, responses, share=True)
    for n, g in g0.items():
        assert (g1[n] - g).abs().max().item() <= 1e-10, n


def test_layout_falls_back_when_nothing_is_shared():
    assert prefix.build([[1, 2], [3]], [[4], [5, 6]], "cpu") is None      # distinct prompts
    assert prefix.build([[], []], [[4], [5, 6]], "cpu") is None           # empty prompts
    shared = prefix.build([[1, 2, 3]] * 3 + [[9]], [[4, 5], [6], [], [7, 8, 9]], "cpu")
    assert shared.input_ids.tolist() == [1, 2, 3, 9, 4, 7, 8]             # prompts once, no last
    assert shared.positions.tolist() == [0, 1, 2, 0, 3, 1, 2]
    assert shared.src.tolist() == [2, 4, 2, 3, 5, 6]                     # pack's target order
    assert [b.prompt_len for b in shared.buckets] == [1, 3]


def test_micro_batches_count_a_shared_prompt_once(monkeypatch):
    from onerl import batching
    # 1-shot shape: one 50-token prompt, responses of 10..19 tokens
    prompts = [[7] * 50] * 40
    lengths = [50 + 10 + i % 10 for i in range(40)]
    plain = batching.micro_batches(lengths, 300)
    shared = batching.micro_batches(lengths, 300, prompts)
    computed = lambda g: 50 + sum(lengths[i] - 50 for i in g)  # noqa: E731  (prompt once)
    for groups, cost in ((plain, lambda g: sum(lengths[i] for i in g)), (shared, computed)):
        assert [i for g in groups for i in g] == list(range(40))   # every sequence, in order
        assert all(cost(g) <= 300 for g in groups)
        assert all(cost(g + [g[-1] + 1]) > 300 for g in groups[:-1])   # filled greedily
    assert len(plain) == 10 and len(shared) == 3
    # two prompts interleaved: each counted once per group (35 + 55, then 5 per sequence)
    two = [[1] * 50 if i % 2 else [2] * 30 for i in range(10)]
    assert batching.micro_batches([len(p) + 5 for p in two], 120, two) == [
        list(range(8)), [8, 9]]
    # a sequence longer than the budget still gets a group; the sharing switch turns it off
    assert batching.micro_batches([500, 10], 300, [[1], [1]]) == [[0], [1]]
    monkeypatch.setattr(batching, "SHARE_PREFIX", False)
    assert batching.micro_batches(lengths, 300, prompts) == plain


def test_even_out_gives_every_rank_the_same_count():
    from onerl.batching import even_out
    groups = [[0, 1, 2, 3], [4], [5, 6]]
    assert even_out(groups, 3) == [(g, True) for g in groups]
    four = even_out(groups, 4)   # the largest group split in halves, order kept
    assert four == [([0, 1], True), ([2, 3], True), ([4], True), ([5, 6], True)]
    seven = even_out(groups, 9)  # split down to single sequences, then repeated passes
    assert [g for g, real in seven if real] == [[i] for i in range(7)]
    assert seven[7:] == [([6], False)] * 2


def test_cut_gives_runs_of_about_equal_length_in_order():
    from onerl.batching import cut
    lengths = [11, 12, 1, 1, 100, 10, 1, 1]
    assert cut([0, 1], lengths, 2) == [[0], [1]]
    assert cut([2, 3, 4, 5], lengths, 2) == [[2, 3, 4], [5]]    # 102 | 10: closest to 56
    assert cut([2, 3, 4, 5, 6], lengths, 3) == [[2, 3], [4], [5, 6]]
    assert cut([3], lengths, 4) == [[3]] and cut([], lengths, 2) == []
    assert cut(list(range(128)), [124] * 128, 2) == [list(range(64)), list(range(64, 128))]
