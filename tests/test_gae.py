"""gae_advantages (torch twin and the Triton kernel, through the interpreter on CPU) against the
plain-loop reference in float64; the clipped value loss against a per-token loop."""
import pytest
import torch
from conftest import poison

from onerl_kernels import gae_advantages, reference
from onerl_kernels.gae import BACKENDS


def _inputs(B, T, seed, p_mask=0.7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, generator=g).to(dtype)
    v = torch.randn(B, T, generator=g).to(dtype)
    mask = torch.rand(B, T, generator=g) < p_mask
    if B > 2:
        mask[1] = False                       # an all-masked row
        mask[2, :] = True                     # a full row
    return r, v, mask


def _poisoned(x, mask):
    """x with NaN / inf written where the mask is off (must never leak into the outputs)."""
    y = x.clone()
    y[~mask] = float("nan")
    if (~mask).any():
        b, t = (~mask).nonzero()[0].tolist()
        y[b, t] = float("inf")
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (1.0, 0.9), (0.5, 0.0)])
@pytest.mark.parametrize("B,T", [(6, 17), (3, 1), (17, 40)])
def test_matches_loop_reference_float64(backend, gamma, lam, B, T, device):
    r, v, mask = _inputs(B, T, seed=B * 100 + T)
    want_a, want_r = reference.gae_advantages(r.double(), v.double(), mask, gamma, lam)
    got_a, got_r = gae_advantages(_poisoned(r, mask).to(device), _poisoned(v, mask).to(device),
                                  mask.to(device), gamma, lam, backend=backend)
    got_a, got_r = got_a.cpu(), got_r.cpu()
    assert got_a.dtype == torch.float32 and got_a.shape == (B, T)
    torch.testing.assert_close(got_a.double(), want_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_r.double(), want_r, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_a[~mask], torch.zeros_like(got_a[~mask]))
    if B > 2:
        assert torch.equal(got_a[1], torch.zeros(T)) and torch.equal(got_r[1], torch.zeros(T))


def test_float64_torch_twin_is_exact_and_outputs_are_written(device):
    r, v, mask = _inputs(5, 23, seed=3, dtype=torch.float64)
    for gamma, lam in ((1.0, 1.0), (0.97, 0.9)):
        want = reference.gae_advantages(r, v, mask, gamma, lam)
        got = gae_advantages(r, v, mask, gamma, lam, backend="torch")
        assert got[0].dtype == torch.float64
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the Triton kernel writes every element of its (never pre-zeroed) outputs
    from onerl_kernels import gae as G
    real_empty = torch.empty
    try:
        G.torch.empty = lambda *a, **k: poison(real_empty(*a, **k))
        got_a, got_r = gae_advantages(r.float().to(device), v.float().to(device),
                                      mask.to(device), backend="triton")
    finally:
        G.torch.empty = real_empty
    assert torch.isfinite(got_a).all() and torch.isfinite(got_r).all()


def test_prefix_masks_match_verl_recurrence():
    """Right-padded responses (the trainer's case): verl's loop with padded values set to 0."""
    r, v, _ = _inputs(4, 12, seed=7)
    lens = torch.tensor([12, 5, 1, 0])
    mask = torch.arange(12)[None] < lens[:, None]
    vz, rz = v * mask, r * mask
    gamma, lam = 0.9, 0.8
    last, advs = torch.zeros(4), []
    for t in reversed(range(12)):
        nv = vz[:, t + 1] if t < 11 else 0.0
        last = rz[:, t] + gamma * nv - vz[:, t] + gamma * lam * last
        advs.append(last)
    want = torch.stack(advs[::-1], 1) * mask
    got, ret = gae_advantages(r, v, mask, gamma, lam)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ret, (want + vz) * mask, rtol=1e-5, atol=1e-6)


def test_gamma_lambda_one_telescopes_to_reward_to_go_minus_value():
    r, v, mask = _inputs(3, 9, seed=1)
    adv, ret = gae_advantages(r, v, mask)
    rm = torch.where(mask, r, 0.0)
    togo = rm.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(ret, togo * mask)
    torch.testing.assert_close(adv, (togo - v) * mask)


def test_non_contiguous_and_opcheck(device):
    r, v, mask = _inputs(4, 10, seed=2)
    rt, vt, mt = (x.to(device).t().contiguous().t() for x in (r, v, mask))
    for backend in BACKENDS:
        got = gae_advantages(rt, vt, mt, 0.9, 0.9, backend=backend)
        want = reference.gae_advantages(r.double(), v.double(), mask, 0.9, 0.9)
        torch.testing.assert_close(got[0].double().cpu(), want[0], rtol=1e-5, atol=1e-5)
    torch.library.opcheck(torch.ops.onerl.gae_advantages.default,
                          (r, v, mask, 0.9, 0.9, "torch"))


@pytest.mark.parametrize("bad,match", [
    (dict(rewards=torch.zeros(4), values=torch.zeros(4), mask=torch.ones(4)), r"\[B, T\]"),
    (dict(rewards=torch.zeros(2, 3), values=torch.zeros(2, 4), mask=torch.ones(2, 3)), "values"),
    (dict(rewards=torch.zeros(2, 3), values=torch.zeros(2, 3), mask=torch.ones(2, 3), gamma=1.5),
     "gamma"),
    (dict(rewards=[0.0], values=torch.zeros(1, 1), mask=torch.ones(1, 1)), "torch.Tensor"),
])
def test_bad_inputs(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        gae_advantages(**bad)


# ----------------------------------------------------------------------------- value loss

def _value_loss_loop(vpred, old, ret, mask, clip):
    terms, clipped = [], 0
    for b in range(vpred.shape[0]):
        for t in range(vpred.shape[1]):
            if mask[b, t]:
                vc = min(max(float(vpred[b, t]), float(old[b, t]) - clip), float(old[b, t]) + clip)
                l1, l2 = (float(vpred[b, t]) - float(ret[b, t])) ** 2, (vc - float(ret[b, t])) ** 2
                terms.append(max(l1, l2))
                clipped += l2 > l1
    return 0.5 * sum(terms) / max(len(terms), 1), clipped / max(len(terms), 1)


def test_value_loss_matches_loop_and_has_the_clipped_gradient():
    g = torch.Generator().manual_seed(0)
    vpred = torch.randn(4, 7, generator=g, dtype=torch.float64)
    old = vpred + 0.8 * torch.randn(4, 7, generator=g, dtype=torch.float64)
    ret = torch.randn(4, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=g) < 0.7
    mask[0] = False
    want_loss, want_cf = _value_loss_loop(vpred, old, ret, mask, 0.5)
    x = vpred.clone().requires_grad_()
    loss, cf = reference.value_loss(x, _poisoned(old, mask), _poisoned(ret, mask), mask, 0.5)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    assert cf.item() == pytest.approx(want_cf, rel=1e-12) and 0 < cf.item() < 1
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert torch.autograd.gradcheck(lambda y: reference.value_loss(y, old, ret, mask, 0.5)[0],
                                    (vpred.clone().requires_grad_(),))


@pytest.mark.gpu
def test_triton_on_gpu_at_scale():
    """The 1-shot step's shape: 1024 responses x 3072 tokens, right-padded."""
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T = 1024, 3072
    r = torch.zeros(B, T, device="cuda")
    v = torch.randn(B, T, device="cuda", generator=g)
    lens = torch.randint(1, T + 1, (B,), device="cuda", generator=g)
    mask = torch.arange(T, device="cuda")[None] < lens[:, None]
    r[torch.arange(B, device="cuda"), lens - 1] = 1.0
    for gamma, lam in ((1.0, 1.0), (0.99, 0.95)):
        got = gae_advantages(r, v, mask, gamma, lam, backend="triton")
        want = gae_advantages(r.double(), v.double(), mask, gamma, lam, backend="torch")
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)
