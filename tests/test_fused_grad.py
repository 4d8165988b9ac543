"""The fused CPU RMSNorm and SiLU * up with their C++ backward (onerl.models.fused_grad) against
float64 torch: outputs and every input's gradient within twice the error of the fp32 torch ops
(+ a tiny atol), output buffers poisoned; and a whole model's training forward + backward with
and without them."""
import pytest
import torch
import torch.nn.functional as F
from conftest import poison

from onerl.models import ModelConfig, build
from onerl.models import fused_grad


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    assert fused_grad.ENABLED, "the C++ extension lacks the fused row ops"
    monkeypatch.setattr(fused_grad, "_alloc", lambda *s: poison(torch.empty(*s)))


def _torch_rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _torch_silu_mul(gu):
    g, u = gu.chunk(2, -1)
    return F.silu(g) * u


def _grads(fn, inputs, dy):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(dy.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def _check(fused, plain, inputs, dy):
    got = _grads(fused, inputs, dy)
    low = _grads(plain, inputs, dy)
    ref = _grads(plain, [t.double() for t in inputs], dy.double())
    assert len(got) == len(ref)
    for name, g, lo, r in zip(("out", "d0", "d1"), got, low, ref):
        assert torch.isfinite(g).all() and g.shape == r.shape, name
        if r.numel() == 0:
            continue
        err, base = (g.double() - r).abs().max().item(), (lo.double() - r).abs().max().item()
        assert err <= 2 * base + 1e-6, f"{name}: {err:.3g} > 2 x {base:.3g}"


@pytest.mark.parametrize("shape", [(300, 72), (1, 13), (2, 5, 64), (0, 16)])
def test_rms_norm_matches_float64(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g) * 3
    w = 1 + 0.2 * torch.randn(shape[-1], generator=g)
    dy = torch.randn(*shape, generator=g)
    _check(lambda a, b: fused_grad.rms_norm(a, b, 1e-6),
           lambda a, b: _torch_rms(a, b, 1e-6), [x, w], dy)


@pytest.mark.parametrize("shape", [(300, 2 * 40), (1, 2 * 7), (3, 4, 2 * 64), (0, 8)])
def test_silu_mul_matches_float64(shape):
    g = torch.Generator().manual_seed(sum(shape))
    gu = torch.randn(*shape, generator=g) * 4   # saturated sigmoids on both sides
    dy = torch.randn(*shape[:-1], shape[-1] // 2, generator=g)
    _check(fused_grad.silu_mul, _torch_silu_mul, [gu], dy)
    with pytest.raises(ValueError, match="must be even"):
        fused_grad.silu_mul(torch.randn(2, 5))


def test_applies_only_to_plain_fp32_cpu_tensors():
    x = torch.randn(3, 8)
    assert fused_grad.applies(x, torch.nn.Parameter(torch.ones(8)))
    assert not fused_grad.applies(x.double())
    assert not fused_grad.applies(x.half())


def test_model_training_step_equals_torch_ops(monkeypatch):
    """A Qwen2 model's packed forward, its loss and every parameter's gradient, fused vs torch ops."""
    cfg = ModelConfig.from_hf(dict(model_type="qwen2", vocab_size=90, hidden_size=48,
                                   intermediate_size=72, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, tie_word_embeddings=True))
    model = build(cfg, torch.float32, "cpu", seed=5)
    ids = torch.randint(0, 90, (30,), generator=torch.Generator().manual_seed(1))
    cu = torch.tensor([0, 12, 30])

    def run():
        model.zero_grad(set_to_none=True)
        h = model(ids, cu, 18)
        loss = torch.log_softmax(model.logits(h), -1)[torch.arange(29), ids[1:]].sum()
        loss.backward()
        return h.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    h_fused, g_fused = run()
    monkeypatch.setattr(fused_grad, "ENABLED", False)
    h_plain, g_plain = run()
    torch.testing.assert_close(h_fused, h_plain, rtol=1e-5, atol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_fused[name], g_plain[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("heads,dim", [(6, 64), (3, 10)])
def test_rope_matches_float64(heads, dim):
    g = torch.Generator().manual_seed(heads)
    T = 37
    base = torch.randn(T, heads + 2, dim, generator=g)
    x = base[:, :heads]                                  # a strided view, as in the model
    ang = torch.randn(T, 1, dim // 2, generator=g) * 3
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    dy = torch.randn(T, heads, dim, generator=g)

    def plain(a):
        a1, a2 = a.chunk(2, -1)
        return a * cos.to(a.dtype) + torch.cat([-a2, a1], -1) * sin.to(a.dtype)
    _check(lambda a: fused_grad.rope(a, cos, sin), plain, [x], dy)
    with pytest.raises(ValueError, match="must be even"):
        fused_grad.rope(torch.randn(2, 1, 5), cos[:2, :, :5], sin[:2, :, :5])
