"""sample: every backend against the reference (same tokens, logp within 1e-5), the
distribution (frequency test), argmax limits, batch-composition independence, opcheck/compile."""
import pytest
import torch

from onerl_kernels import _backend, reference, sample
from onerl_kernels.sample import BACKENDS


def _backends(device):
    return [b for b in BACKENDS if _backend.available(b, device)]


def _params(B, V, g, device, greedy_rows=(), k_rows=(), p_rows=()):
    t = (torch.rand(B, generator=g) + 0.3)
    k = torch.where(torch.rand(B, generator=g) < 0.4, torch.randint(1, V + 2, (B,), generator=g),
                    torch.zeros(B, dtype=torch.long))
    p = torch.where(torch.rand(B, generator=g) < 0.4, torch.rand(B, generator=g) * 0.95 + 0.02,
                    torch.ones(B))
    for r in greedy_rows:
        t[r] = 0.0
    for r, kk in k_rows:
        k[r] = kk
    for r, pp in p_rows:
        p[r] = pp
    seeds = torch.randint(-2 ** 62, 2 ** 62, (B,), generator=g)
    pos = torch.randint(0, 10 ** 6, (B,), generator=g)
    return [x.to(device) for x in (t, k, p, seeds, pos)]


def test_philox_known_answers():
    z, f = torch.zeros(1, dtype=torch.long), torch.full((1,), 0xFFFFFFFF)
    assert [int(x) for x in reference.philox4x32(z, z, z, z, z, z)] == \
        [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert [int(x) for x in reference.philox4x32(f, f, f, f, f, f)] == \
        [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    if _backend.has_cpp():
        seeds, pos = torch.tensor([0, -1, 2 ** 40 + 7]), torch.tensor([0, 5, 2 ** 33])
        for stream in (0, 3, 0xFFFFFFFF):
            want = reference.sample_uniform(seeds, pos, stream)
            got = [_backend._C.philox_uniform(int(s), int(p), stream) for s, p in zip(seeds, pos)]
            assert got == want.tolist()


@pytest.mark.parametrize("V,dtype", [(10, torch.float32), (4097, torch.bfloat16),
                                     (9000, torch.float32), (300, torch.float16)])
def test_matches_reference(device, V, dtype):
    g = torch.Generator().manual_seed(V)
    B = 24
    wide = (torch.randn(B, V + 7, generator=g) * 3).to(device=device, dtype=dtype)
    logits = wide[:, 3:V + 3]  # row stride != V
    params = _params(B, V, g, device, greedy_rows=(0, 1), k_rows=((2, 1), (3, V), (4, 5)),
                     p_rows=((5, 0.0), (6, 0.3), (4, 0.5)))
    want_tok, _ = reference.sample(logits, *params)
    lsm = torch.log_softmax(logits.double() / torch.where(params[0] > 0, params[0], 1.0)
                            .double()[:, None], dim=1)
    for backend in _backends(device):
        tok, logp = sample(logits, *params, backend=backend)
        assert tok.dtype == torch.int64 and logp.dtype == torch.float32
        assert (tok == want_tok).all(), (backend, (tok != want_tok).nonzero())
        want_lp = lsm.gather(1, tok[:, None])[:, 0]
        torch.testing.assert_close(logp.double(), want_lp, rtol=1e-5, atol=1e-5)


def test_argmax_limits(device):
    g = torch.Generator().manual_seed(7)
    B, V = 16, 5000
    logits = (torch.randn(B, V, generator=g) * 2).to(device)
    argmax = logits.argmax(1)
    ones = torch.ones(B, device=device)
    seeds = torch.arange(B, device=device)
    pos = torch.zeros(B, dtype=torch.long, device=device)
    none_k = torch.zeros(B, dtype=torch.long, device=device)
    for backend in _backends(device):
        for t, k in ((ones * 0, none_k), (ones * 1e-4, none_k), (ones, none_k + 1)):
            tok, logp = sample(logits, t, k, ones, seeds, pos, backend=backend)
            assert torch.equal(tok, argmax), backend
        tok, logp = sample(logits, ones * 0, none_k, ones, seeds, pos, backend=backend)
        want = torch.log_softmax(logits.double(), 1).gather(1, argmax[:, None])[:, 0]
        torch.testing.assert_close(logp.double(), want, rtol=1e-5, atol=1e-5)  # T = 0 -> T = 1
        tied = torch.zeros(2, 9, device=device)
        tok, _ = sample(tied, ones[:2] * 0, none_k[:2], ones[:2], seeds[:2], pos[:2],
                        backend=backend)
        assert tok.tolist() == [0, 0]  # ties: lowest index


def test_batch_composition_independence(device):
    g = torch.Generator().manual_seed(11)
    B, V = 12, 6000
    logits = torch.randn(B, V, generator=g).to(device)
    params = _params(B, V, g, device)
    for backend in _backends(device):
        full, _ = sample(logits, *params, backend=backend)
        perm = torch.randperm(B, generator=g).to(device)
        shuffled, _ = sample(logits[perm], *[x[perm] for x in params], backend=backend)
        assert torch.equal(shuffled, full[perm]), backend
        for r in (0, 5):
            alone, _ = sample(logits[r:r + 1], *[x[r:r + 1] for x in params], backend=backend)
            assert alone.item() == full[r].item(), backend
        moved = dict(zip(("t", "k", "p", "s", "pos"), params))
        other, _ = sample(logits, *params[:4], moved["pos"] + 1, backend=backend)
        assert not torch.equal(other, full)  # a new position draws afresh


@pytest.mark.parametrize("t,k,p", [(0.8, 0, 1.0), (1.3, 6, 1.0), (0.7, 0, 0.75), (1.0, 5, 0.6)])
def test_frequencies(device, t, k, p):
    """20k draws of one V=10 distribution: total variation to the truncated softmax < 0.02,
    and truncated tokens are never drawn."""
    g = torch.Generator().manual_seed(3)
    n, V = 20000, 10
    z = torch.randn(V, generator=g) * 1.5
    z[4] = z[7]  # a tie
    logits = z.expand(n, V).to(device)
    tt = torch.full((n,), t, device=device)
    kk = torch.full((n,), k, dtype=torch.long, device=device)
    pp = torch.full((n,), p, device=device)
    keep = reference.sample_keep_mask(z[None], tt[:1].cpu(), kk[:1].cpu(), pp[:1].cpu())[0]
    probs = torch.softmax(torch.where(keep, z.double() / t, -torch.inf), 0)
    for backend in _backends(device):
        tok, logp = sample(logits, tt, kk, pp, torch.arange(n, device=device),
                           torch.full((n,), 17, device=device), backend=backend)
        freq = torch.bincount(tok.cpu(), minlength=V).double() / n
        assert freq[~keep].sum() == 0, backend
        assert 0.5 * (freq - probs).abs().sum() < 0.02, (backend, freq, probs)
        lsm = torch.log_softmax(z.double() / t, 0)
        torch.testing.assert_close(logp.cpu().double(), lsm[tok.cpu()], rtol=1e-5, atol=1e-5)


def test_peaked_and_negative(device):
    """p_target -> 1 and all-negative logits, across chunks of a large odd vocabulary."""
    V = 3 * 4096 + 5
    logits = torch.full((3, V), -50.0, device=device)
    logits[0, V - 1] = 30.0
    logits[1, 4097] = -3.0
    logits[2] = -torch.linspace(1, 40, V, device=device)
    ones = torch.ones(3, device=device)
    zeros = torch.zeros(3, dtype=torch.long, device=device)
    for backend in _backends(device):
        tok, logp = sample(logits, ones, zeros, ones, torch.arange(3, device=device), zeros,
                           backend=backend)
        assert tok[0].item() == V - 1 and tok[1].item() == 4097
        want = torch.log_softmax(logits.double(), 1).gather(1, tok[:, None])[:, 0]
        torch.testing.assert_close(logp.double(), want, rtol=1e-5, atol=1e-5)


def test_errors():
    lg = torch.zeros(2, 5)
    ok = (torch.ones(2), torch.zeros(2, dtype=torch.long), torch.ones(2),
          torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must be"):
        sample(lg.double(), *ok)
    with pytest.raises(ValueError, match="top_k must be torch.int64"):
        sample(lg, ok[0], ok[1].int(), *ok[2:])
    with pytest.raises(ValueError, match=r"temperature must be torch.float32 \[2\]"):
        sample(lg, torch.ones(3), *ok[1:])
    with pytest.raises(ValueError, match="empty vocabulary"):
        sample(torch.zeros(2, 0), *ok)


def test_opcheck_and_compile():
    g = torch.Generator().manual_seed(2)
    B, V = 6, 50
    logits = torch.randn(B, V, generator=g)
    params = _params(B, V, g, "cpu", greedy_rows=(1,))
    for backend in [b for b in BACKENDS if _backend.available(b, logits.device)]:
        torch.library.opcheck(torch.ops.onerl.sample.default, (logits, *params, backend))
    want = sample(logits, *params)

    @torch.compile(fullgraph=True)
    def f(logits, *params):
        tok, logp = sample(logits * 1.0, *params)
        return tok, logp + 0.0

    got = f(logits, *params)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.gpu
def test_cuda_draws_match_cpu_twin():
    """The CUDA kernels and the C++ CPU twin draw the same tokens (Philox in csrc/philox.h),
    at the real vocabulary size, fp32 and bf16, with and without truncation."""
    g = torch.Generator().manual_seed(0)
    B, V = 64, 151936
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(B, V, generator=g) * 4).to(dtype)
        params = _params(B, V, g, "cpu", greedy_rows=(0,), k_rows=((1, 1), (2, 50)),
                         p_rows=((3, 0.9), (2, 0.8)))
        cpu_tok, cpu_lp = sample(logits, *params, backend="cpp")
        gpu_tok, gpu_lp = sample(logits.cuda(), *(x.cuda() for x in params), backend="cuda")
        assert (gpu_tok.cpu() != cpu_tok).sum() <= 1  # a uniform on a CDF boundary at most
        same = gpu_tok.cpu() == cpu_tok
        torch.testing.assert_close(gpu_lp.cpu()[same], cpu_lp[same], rtol=1e-5, atol=1e-5)
