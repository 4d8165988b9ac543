"""The engine's fused CPU forward (onerl.models.fused) against the module path it replaces."""
import pytest
import torch

from onerl.models import ModelConfig, PagedBatch, build
from onerl.models import fused

SHAPES = {
    "qwen2": dict(model_type="qwen2", vocab_size=80, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "llama": dict(model_type="llama", vocab_size=80, hidden_size=48, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
                  head_dim=24),
}


def caches(model, num_blocks, bs):
    cfg = model.config
    return [(torch.zeros(num_blocks, bs, cfg.num_key_value_heads, cfg.head_dim),
             torch.zeros(num_blocks, bs, cfg.num_key_value_heads, cfg.head_dim))
            for _ in range(cfg.num_hidden_layers)]


@pytest.mark.parametrize("family", list(SHAPES))
def test_fused_prefill_and_decode_match_module_path(family):
    cfg = ModelConfig.from_hf(dict(SHAPES[family], max_position_embeddings=64))
    model = build(cfg, torch.float32, "cpu", seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    bs, lens = 4, [5, 9, 3]
    model.rotary.ensure(64, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (sum(lens),), generator=g)
    cu = torch.tensor([0, 5, 14, 17])
    pos = torch.cat([torch.arange(n) for n in lens])
    tables = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32)
    slots = torch.cat([tables[i].long()[torch.arange(n) // bs] * bs + torch.arange(n) % bs
                       for i, n in enumerate(lens)])
    ref_kv, got_kv = caches(model, 9, bs), caches(model, 9, bs)
    with torch.inference_mode():
        assert fused.usable(model, ids)
        batch = PagedBatch(True, slots, cu_seqlens=cu, max_seqlen=9)
        want = model.forward_paged(ids, pos, batch, ref_kv)
        got = fused.forward_paged(model, ids, pos, batch, got_kv)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        last = fused.forward_paged(model, ids, pos, batch, caches(model, 9, bs),
                                   last_rows=cu[1:] - 1)
        torch.testing.assert_close(last, want[cu[1:] - 1], rtol=1e-5, atol=1e-5)
        for (a, b), (c, d) in zip(got_kv, ref_kv):
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b, d, rtol=1e-5, atol=1e-6)
        # one decode step (a pad row with slot -1 and length 0 writes nothing, reads nothing)
        new = torch.randint(0, cfg.vocab_size, (4,), generator=g)
        dpos = torch.tensor([5, 9, 3, 0])
        dslots = torch.tensor([tables[i, p // bs].item() * bs + p % bs
                               for i, p in enumerate(dpos[:3].tolist())] + [-1])
        dbatch = PagedBatch(False, dslots, block_tables=torch.cat([tables, tables[:1]]),
                            seq_lens=torch.tensor([6, 10, 4, 0], dtype=torch.int32))
        want = model.forward_paged(new, dpos, dbatch, ref_kv)
        got = fused.forward_paged(model, new, dpos, dbatch, got_kv)
        torch.testing.assert_close(got[:3], want[:3], rtol=1e-5, atol=1e-5)
        for (a, b), (c, d) in zip(got_kv, ref_kv):
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    with torch.enable_grad():
        assert not fused.usable(model, ids)  # training forwards never take this path
    assert not fused.usable(model.to(torch.bfloat16), ids)
