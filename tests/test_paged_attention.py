"""paged_attention / paged_prefill_attention against dense attention over gathered K/V.

Unused cache memory (blocks no table uses, slots past each sequence's length) holds NaN, so any
read outside [0, seq_len) shows up. bf16 follows the flash-attention rule: the kernel's error
against float64 is at most twice that of eager torch in bf16, plus a small atol."""
import math

import pytest
import torch

from conftest import poison
from onerl_kernels import _backend, paged_attention, paged_prefill_attention, reference
from onerl_kernels.paged_attention import BACKENDS


def _backends(device):
    return [b for b in BACKENDS if _backend.available(b, device)]


def _paged(seq_lens, bs, Hkv, D, dtype, device, g):
    """Caches holding random K/V at each sequence's positions (NaN elsewhere) and shuffled,
    non-contiguous block tables (one spare column)."""
    B = len(seq_lens)
    need = [max(1, -(-n // bs)) for n in seq_lens]
    max_blocks = max(need) + 1
    nb = sum(need) + 3
    perm = torch.randperm(nb, generator=g)
    tables = torch.zeros(B, max_blocks, dtype=torch.int32)
    kc = poison(torch.empty(nb, bs, Hkv, D, dtype=dtype))
    vc = poison(torch.empty(nb, bs, Hkv, D, dtype=dtype))
    used = 0
    for b, n in enumerate(seq_lens):
        tables[b, :need[b]] = perm[used:used + need[b]]
        tables[b, need[b]:] = perm[-1]  # a block nobody uses (all NaN)
        used += need[b]
        pos = torch.arange(n)
        blk, off = tables[b].long()[pos // bs], pos % bs
        kc[blk, off] = torch.randn(n, Hkv, D, generator=g).to(dtype)
        vc[blk, off] = torch.randn(n, Hkv, D, generator=g).to(dtype)
    sl = torch.tensor(seq_lens, dtype=torch.int32)
    return kc.to(device), vc.to(device), tables.to(device), sl.to(device)


def _bf16_dense(q, kc, vc, tables, seq_lens, scale, causal_cu=None):
    """Eager torch in q's 16-bit dtype (the yardstick of the bf16 rule)."""
    out = torch.zeros_like(q)
    cu = causal_cu if causal_cu is not None else torch.arange(q.shape[0] + 1)
    for b in range(tables.shape[0]):
        lo, hi, n = int(cu[b]), int(cu[b + 1]), int(seq_lens[b])
        if hi == lo or n == 0:
            continue
        k = reference._gather_seq(kc, tables[b], n).repeat_interleave(q.shape[1] // kc.shape[2], 1)
        v = reference._gather_seq(vc, tables[b], n).repeat_interleave(q.shape[1] // kc.shape[2], 1)
        s = torch.einsum("mhd,lhd->hml", q[lo:hi], k) * scale
        qi = torch.arange(hi - lo, device=q.device)[:, None]
        s = s.masked_fill(torch.arange(n, device=q.device)[None] > n - (hi - lo) + qi, -math.inf)
        out[lo:hi] = torch.einsum("hml,lhd->mhd", torch.softmax(s, -1), v)
    return out


def _check(got, want64, q, bf16_ref):
    err = (got.double() - want64).abs()
    if q.dtype == torch.float32:
        assert err.max() <= 1e-5 * max(1.0, want64.abs().max().item()), err.max()
    else:
        torch_err = (bf16_ref.double() - want64).abs()
        assert err.max() <= 2 * torch_err.max() + 1e-3, (err.max(), torch_err.max())


CASES = [  # (block size, kv heads, GQA ratio, head_dim, seq_lens, num_splits)
    (16, 2, 6, 32, [37, 1, 70, 16], None),
    (16, 1, 1, 64, [33, 5], 3),
    (1, 2, 2, 16, [9, 17, 0], 2),
    (4, 2, 6, 24, [13, 6], 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"bs{c[0]}-g{c[2]}-d{c[3]}-s{c[5]}")
def test_decode_matches_dense(device, dtype, case):
    bs, Hkv, G, D, lens, splits = case
    g = torch.Generator().manual_seed(sum(lens) * bs + G)
    kc, vc, tables, sl = _paged(lens, bs, Hkv, D, dtype, device, g)
    q = torch.randn(len(lens), Hkv * G, D, generator=g).to(device=device, dtype=dtype)
    scale = D ** -0.5
    want = reference.paged_attention(q.double(), kc.double(), vc.double(), tables, sl, scale)
    bf16_ref = _bf16_dense(q, kc, vc, tables, sl, scale) if dtype != torch.float32 else None
    for backend in _backends(device):
        out = paged_attention(q, kc, vc, tables, sl, scale, backend=backend, num_splits=splits)
        assert out.dtype == dtype and out.shape == q.shape
        _check(out, want, q, bf16_ref)
        assert (out[sl == 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [1, 16])
def test_prefill_matches_dense(device, dtype, bs):
    g = torch.Generator().manual_seed(bs)
    Hkv, G, D = 2, 3, 32
    lens, chunk = [40, 13, 7, 5], [9, 13, 0, 2]  # chunk = the new (last) tokens of each
    kc, vc, tables, sl = _paged(lens, bs, Hkv, D, dtype, device, g)
    cu = torch.tensor([0] + chunk).cumsum(0).to(torch.int32).to(device)
    q = torch.randn(sum(chunk), Hkv * G, D, generator=g).to(device=device, dtype=dtype)
    want = reference.paged_prefill_attention(q.double(), kc.double(), vc.double(), tables, cu, sl,
                                             D ** -0.5)
    bf16_ref = _bf16_dense(q, kc, vc, tables, sl, D ** -0.5, cu) if dtype != torch.float32 \
        else None
    for backend in _backends(device):
        out = paged_prefill_attention(q, kc, vc, tables, cu, sl, backend=backend,
                                      max_seqlen_q=max(chunk))
        _check(out, want, q, bf16_ref)


def test_decode_equals_last_prefill_row(device):
    """A decode step equals the last query of a prefill over the same cache."""
    g = torch.Generator().manual_seed(3)
    kc, vc, tables, sl = _paged([21, 8], 4, 2, 16, torch.float32, device, g)
    q = torch.randn(2, 4, 16, generator=g).to(device)
    cu = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
    for backend in _backends(device):
        a = paged_attention(q, kc, vc, tables, sl, backend=backend)
        b = paged_prefill_attention(q, kc, vc, tables, cu, sl, backend=backend, max_seqlen_q=1)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_errors():
    kc = torch.zeros(4, 2, 2, 8)
    q, bt, sl = torch.zeros(2, 6, 8), torch.zeros(2, 3, dtype=torch.int32), \
        torch.ones(2, dtype=torch.int32)
    with pytest.raises(ValueError, match="block_tables must be int32"):
        paged_attention(q, kc, kc, bt.long(), sl)
    with pytest.raises(ValueError, match="seq_lens must be int32"):
        paged_attention(q, kc, kc, bt, sl[:1])
    with pytest.raises(ValueError, match="not a multiple of kv_heads"):
        paged_attention(torch.zeros(2, 5, 8), kc, kc, bt, sl)
    with pytest.raises(ValueError, match="head_dim"):
        paged_attention(torch.zeros(2, 6, 4), kc, kc, bt, sl)
    with pytest.raises(TypeError, match="q is torch.bfloat16"):
        paged_attention(q.bfloat16(), kc, kc, bt, sl)
    with pytest.raises(ValueError, match="cu_seqlens_q must be int32"):
        paged_prefill_attention(q, kc, kc, bt, torch.zeros(3), sl)


def test_opcheck_and_compile():
    g = torch.Generator().manual_seed(5)
    kc, vc, tables, sl = _paged([7, 12], 4, 1, 16, torch.float32, "cpu", g)
    q = torch.randn(2, 2, 16, generator=g)
    for backend in [b for b in BACKENDS if _backend.available(b, q.device)]:
        torch.library.opcheck(torch.ops.onerl.paged_attention.default,
                              (q, kc, vc, tables, sl, 0.25, -1, backend))
    want = reference.paged_attention(q, kc, vc, tables, sl, 0.25)

    @torch.compile(fullgraph=True)
    def f(q, kc, vc, tables, sl):
        return paged_attention(q * 1.0, kc, vc, tables, sl, 0.25) + 0.0

    torch.testing.assert_close(f(q, kc, vc, tables, sl), want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_qwen_shapes_split_kv_on_gpu():
    """Qwen2.5-Math-1.5B decode shapes (12 q / 2 kv heads, head_dim 128, bf16, block 16) at a
    batch small enough to split the sequence, against SDPA over gathered K/V."""
    g = torch.Generator().manual_seed(0)
    B, L, Hq, Hkv, D, bs = 8, 1000, 12, 2, 128, 16
    nblk = -(-L // bs)
    kc = torch.randn(B * nblk, bs, Hkv, D, generator=g).cuda().bfloat16()
    vc = torch.randn(B * nblk, bs, Hkv, D, generator=g).cuda().bfloat16()
    tables = torch.randperm(B * nblk, generator=g).view(B, nblk).int().cuda()
    sl = torch.randint(1, L + 1, (B,), generator=g).int().cuda()
    q = torch.randn(B, Hq, D, generator=g).cuda().bfloat16()
    want = reference.paged_attention(q.double(), kc.double(), vc.double(), tables, sl, D ** -0.5)
    got = paged_attention(q, kc, vc, tables, sl, backend="triton")
    base = paged_attention(q, kc, vc, tables, sl, backend="torch")
    err, base_err = (got.double() - want).abs().max(), (base.double() - want).abs().max()
    assert err <= 2 * base_err + 1e-3, (err, base_err)
