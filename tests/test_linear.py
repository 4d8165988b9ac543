"""onerl.models.linear: the oneDNN path of the model's fp32 CPU linear layers against float64,
with PyTorch's own fp32 F.linear error as the yardstick, and the fallbacks."""
import pytest
import torch
import torch.nn.functional as F

from onerl.models import linear as L

needs_op = pytest.mark.skipif(L._OP is None, reason="this torch build has no oneDNN linear op")


def cases():
    g = torch.Generator().manual_seed(0)
    for shape, n, bias, strided in (((2, 700, 256), 512, True, False),
                                    ((1500, 512), 256, False, True)):
        x = torch.randn(*shape[:-1], shape[-1] * (2 if strided else 1), generator=g,
                        dtype=torch.float64)
        w = 0.05 * torch.randn(n, shape[-1], generator=g, dtype=torch.float64)
        b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
        yield x, w, b, strided


def run(fn, x, w, b, strided, dtype):
    xs, ws = (t.detach().to(dtype, copy=True).requires_grad_() for t in (x, w))
    bs = None if b is None else b.detach().to(dtype, copy=True).requires_grad_()
    y = fn(xs[..., ::2] if strided else xs, ws, bs)   # strided: a non-contiguous input
    y.backward(torch.cos(torch.arange(y.numel(), dtype=dtype)).view(y.shape))
    return [t.double() for t in (y, xs.grad, ws.grad) + (() if b is None else (bs.grad,))]


@needs_op
def test_values_and_gradients_within_twice_torchs_fp32_error():
    for x, w, b, strided in cases():
        assert L.applies(x.float(), w.float(), None if b is None else b.float())
        ref = run(F.linear, x, w, b, strided, torch.float64)
        ours = run(L.linear, x, w, b, strided, torch.float32)
        torch_fp32 = run(F.linear, x, w, b, strided, torch.float32)
        for name, o, t, r in zip(("y", "dx", "dw", "db"), ours, torch_fp32, ref):
            assert torch.isfinite(o).all()
            err, base = (o - r).abs().mean().item(), (t - r).abs().mean().item()
            assert err <= 2 * base + 1e-12, f"{name}: mean error {err:.3g} vs torch {base:.3g}"
            assert (o - r).abs().max().item() <= 4 * (t - r).abs().max().item() + 1e-12, name


def test_falls_back_to_f_linear_bitwise():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(64, 32, generator=g), torch.randn(64, generator=g)
    for x in (torch.randn(L.MIN_ROWS - 1, 32, generator=g),                # few rows
              torch.randn(2 * L.MIN_ROWS, 32, generator=g).bfloat16()):  # not fp32
        wx, bx = w.to(x.dtype), b.to(x.dtype)
        assert not L.applies(x, wx, bx)
        assert torch.equal(L.linear(x, wx, bx), F.linear(x, wx, bx))


def test_module_is_a_drop_in_for_nn_linear():
    torch.manual_seed(3)
    ours = L.Linear(32, 16)
    torch.manual_seed(3)
    plain = torch.nn.Linear(32, 16)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters()))
    x = torch.randn(2 * L.MIN_ROWS, 32)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():   # the no-grad branch (the reference model's forward)
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
