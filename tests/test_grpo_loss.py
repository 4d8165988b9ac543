"""grpo_loss: the fused Triton kernel (interpreter on CPU) and the torch twin against the
float64 autograd reference, on random inputs and the nasty cases."""
import zlib

import pytest
import torch

from onerl_kernels import grpo_loss, reference
from onerl_kernels._backend import has_triton

BACKENDS = ["torch"] + (["triton"] if has_triton() else [])


def make_batch(B=6, T=37, seed=0, dtype=torch.float32, device="cpu", empty_row=True):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    batch = dict(
        logp=lp,
        old_logp=lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
        ref_logp=lp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64),
        advantages=torch.randn(B, generator=g, dtype=torch.float64),
        mask=torch.rand(B, T, generator=g) > 0.25,
        entropy=torch.rand(B, T, generator=g, dtype=torch.float64) * 2,
    )
    if empty_row:
        batch["mask"][1] = False
    return {k: (v.to(dtype) if v.is_floating_point() else v).to(device) for k, v in batch.items()}


def reference_with_grads(batch, **kw):
    """Loss, metrics and d loss / d (logp, entropy) from the autograd reference in float64."""
    b = {k: (v.detach().double().cpu() if v.is_floating_point() else v.cpu())
         for k, v in batch.items()}
    b["logp"].requires_grad_()
    b["entropy"].requires_grad_()
    loss, metrics = reference.grpo_loss(**b, **kw)
    g_lp, g_ent = torch.autograd.grad(loss, [b["logp"], b["entropy"]])
    return loss.detach(), metrics, g_lp, g_ent


def run(batch, backend, **kw):
    b = dict(batch)
    b["logp"] = b["logp"].detach().clone().requires_grad_()
    b["entropy"] = b["entropy"].detach().clone().requires_grad_()
    loss, metrics = grpo_loss(**b, backend=backend, **kw)
    g_lp, g_ent = torch.autograd.grad(loss, [b["logp"], b["entropy"]])
    return loss, metrics, g_lp, g_ent


def assert_matches(got, want, rtol=1e-6, atol=1e-6, grad_tol=(1e-5, 1e-7)):
    loss, metrics, g_lp, g_ent = got
    w_loss, w_metrics, w_lp, w_ent = want
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double().cpu(), w_loss, rtol=rtol, atol=atol)
    for k in w_metrics:
        torch.testing.assert_close(metrics[k].double().cpu(), w_metrics[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_lp.double().cpu(), w_lp, rtol=grad_tol[0], atol=grad_tol[1])
    torch.testing.assert_close(g_ent.double().cpu(), w_ent, rtol=grad_tol[0], atol=grad_tol[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", reference.AGG_MODES)
@pytest.mark.parametrize("kl_type", ["k1", "k2", "k3", None])
@pytest.mark.parametrize("clip_dual", [None, 3.0])
def test_matches_reference(backend, agg, kl_type, clip_dual, device):
    batch = make_batch(seed=zlib.crc32(f"{agg}{kl_type}{clip_dual}".encode()) % 1000, device=device)
    kw = dict(clip_low=0.2, clip_high=0.28, clip_dual=clip_dual, kl_type=kl_type, kl_coef=0.05,
              entropy_coef=0.01, agg=agg)
    got = run(batch, backend, **kw)
    assert_matches(got, reference_with_grads(batch, **kw))
    assert got[1]["clipfrac"].item() > 0, "the test batch must exercise the clip"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("clip_dual", [None, 3.0])
def test_per_token_advantages_match_reference(backend, agg, clip_dual, device):
    """PPO: advantages [B, T] (GAE) instead of one per response; NaN at masked positions."""
    batch = make_batch(seed=11, device=device)
    g = torch.Generator().manual_seed(5)
    adv = torch.randn(batch["mask"].shape, generator=g).to(device)
    kw = dict(clip_dual=clip_dual, kl_type="k1", kl_coef=0.05, entropy_coef=0.01, agg=agg)
    want = reference_with_grads({**batch, "advantages": adv}, **kw)
    got = run({**batch, "advantages": torch.where(batch["mask"], adv, float("nan"))}, backend, **kw)
    assert_matches(got, want)
    row = {**batch, "advantages": batch["advantages"][:, None].expand(batch["mask"].shape)}
    assert_matches(run(row, backend, **kw), reference_with_grads(batch, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_defaults_on_policy_ratio_is_exactly_one(backend, device):
    batch = make_batch(seed=3, device=device)
    batch["old_logp"] = None
    kw = dict(kl_type="k3", kl_coef=0.001, entropy_coef=0.001)
    loss, metrics, g_lp, g_ent = run(batch, backend, **kw)
    assert metrics["clipfrac"].item() == 0.0 and metrics["ppo_kl"].item() == 0.0
    same = dict(batch, old_logp=batch["logp"].detach())
    assert_matches((loss, metrics, g_lp, g_ent), reference_with_grads(same, **kw))
    # on-policy: pg gradient is exactly -A * mask / #tokens
    m = batch["mask"].double().cpu()
    no_kl = run(batch, backend, kl_type=None, entropy_coef=0.0)
    want = -batch["advantages"].double().cpu()[:, None] * m / m.sum()
    torch.testing.assert_close(no_kl[2].double().cpu(), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs(backend, device):
    batch = make_batch(seed=5, dtype=torch.bfloat16, device=device)
    kw = dict(kl_type="k3", kl_coef=0.01, entropy_coef=0.01, clip_dual=3.0)
    got = run(batch, backend, **kw)
    assert got[2].dtype == torch.bfloat16 and got[3].dtype == torch.bfloat16
    # same bf16 values, fp32 math: the loss is fp32-exact; grads are rounded to bf16 once
    assert_matches(got, reference_with_grads(batch, **kw), rtol=1e-5, atol=1e-6,
                   grad_tol=(8e-3, 1e-6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_positions_never_contribute(backend, device):
    batch = make_batch(seed=7, device=device)
    dirty = dict(batch)
    for k in ("logp", "old_logp", "ref_logp", "entropy"):
        dirty[k] = batch[k].clone().masked_fill(~batch["mask"], float("nan"))
    clean, noisy = run(batch, backend), run(dirty, backend)
    assert torch.isfinite(noisy[0])
    assert torch.equal(clean[0], noisy[0]) and torch.equal(clean[2], noisy[2])
    assert torch.equal(noisy[2][~batch["mask"]], torch.zeros_like(noisy[2][~batch["mask"]]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", reference.AGG_MODES)
def test_all_masked_batch_gives_zero(backend, agg, device):
    batch = make_batch(seed=9, device=device)
    batch["mask"] = torch.zeros_like(batch["mask"])
    loss, metrics, g_lp, g_ent = run(batch, backend, agg=agg, entropy_coef=0.01)
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in metrics.values())
    assert not g_lp.any() and not g_ent.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_mask_non_contiguous_inputs_and_determinism(backend, device):
    batch = make_batch(B=5, T=70, seed=11, device=device)
    nc = {k: (v.t().contiguous().t() if v.dim() == 2 else v) for k, v in batch.items()}
    nc["mask"] = nc["mask"].float()
    assert not nc["logp"].is_contiguous()
    a, b = run(nc, backend, entropy_coef=0.01), run(nc, backend, entropy_coef=0.01)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]), "must be bit-deterministic"
    assert_matches(a, reference_with_grads(batch, entropy_coef=0.01))


def test_triton_equals_torch_twin_on_long_rows(device):
    if "triton" not in BACKENDS:
        pytest.skip("triton not installed")
    batch = make_batch(B=3, T=2500, seed=13, device=device)  # several BLOCK_T chunks per row
    kw = dict(agg="seq-mean-token-mean", entropy_coef=0.01, kl_coef=0.01)
    a, b = run(batch, "triton", **kw), run(batch, "torch", **kw)
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(a[2], b[2], rtol=1e-6, atol=1e-10)


def test_reference_gradcheck_float64():
    batch = make_batch(B=3, T=5, seed=17, dtype=torch.float64, empty_row=False)
    for agg in reference.AGG_MODES:
        def f(lp, ent):
            return reference.grpo_loss(lp, batch["old_logp"], batch["ref_logp"],
                                       batch["advantages"], batch["mask"], ent, clip_dual=3.0,
                                       kl_coef=0.1, entropy_coef=0.1, agg=agg)[0]
        assert torch.autograd.gradcheck(f, (batch["logp"].clone().requires_grad_(),
                                            batch["entropy"].clone().requires_grad_()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, device):
    b = make_batch(seed=19, device=device)
    lp = b["logp"].clone().requires_grad_()
    args = (lp, b["old_logp"], b["ref_logp"], b["advantages"], b["mask"], b["entropy"], 0.2, 0.2,
            None, "k3", 0.001, 0.001, "token-mean", backend)
    torch.library.opcheck(torch.ops.onerl.grpo_loss.default, args)


def test_compile_fullgraph_matches_eager():
    batch = make_batch(seed=21)

    @torch.compile(fullgraph=True)
    def step(lp, ent):
        loss, metrics = grpo_loss(lp, batch["old_logp"], batch["ref_logp"], batch["advantages"],
                                  batch["mask"], ent, entropy_coef=0.001)
        return loss, metrics["kl"]

    lp = batch["logp"].clone().requires_grad_()
    ent = batch["entropy"].clone().requires_grad_()
    loss, kl = step(lp, ent)
    loss.backward()
    want = reference_with_grads(batch, entropy_coef=0.001)
    torch.testing.assert_close(loss.double(), want[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(kl.double(), want[1]["kl"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lp.grad.double(), want[2], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("change,match", [
    (dict(advantages=torch.zeros(4)), "advantages has shape"),
    (dict(mask=torch.ones(6, 36, dtype=torch.bool)), "mask has shape"),
    (dict(ref_logp=None), "needs ref_logp"),
    (dict(kl_type="k4"), "kl_type must be"),
    (dict(agg="mean"), "agg must be"),
    (dict(clip_dual=0.5), "clip_dual must be"),
    (dict(logp=torch.zeros(6)), "logp must be"),
])
def test_bad_input_errors(change, match):
    batch = dict(make_batch(), kl_type="k3")
    batch.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        grpo_loss(**batch)


@pytest.mark.gpu
def test_triton_on_gpu_at_scale():
    batch = make_batch(B=64, T=3000, seed=23, device="cuda")
    kw = dict(entropy_coef=0.001, clip_dual=3.0)
    assert_matches(run(batch, "triton", **kw), reference_with_grads(batch, **kw),
                   rtol=1e-5, atol=1e-7, grad_tol=(1e-5, 1e-9))
