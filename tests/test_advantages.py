"""group_advantages: the C++ CPU twin (and CUDA on a GPU) against the torch reference."""
import pytest
import torch

from onerl_kernels import group_advantages, reference
from onerl_kernels._backend import has_cpp

BACKENDS = ["torch"] + (["cpp"] if has_cpp() else [])
MODES = [(s, c) for s in reference.STD_MODES for c in reference.SCALE_MODES]


def _ref(r, g, eps=1e-6, std="unbiased", scale="group"):
    return reference.group_advantages(r.double().cpu(), g, eps, std, scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("std,scale", MODES)
@pytest.mark.parametrize("n,g", [(1024, 8), (40, 5), (7, 7), (6, 1), (0, 4)])
def test_matches_reference(backend, std, scale, n, g):
    torch.manual_seed(n * 31 + g)
    binary = (torch.rand(n) < 0.3).float()
    real = torch.randn(n) * 3 + 1
    for r in (binary, real):
        got = group_advantages(r, g, std=std, scale=scale, backend=backend)
        assert got.dtype == torch.float32 and got.shape == r.shape
        torch.testing.assert_close(got.double(), _ref(r, g, std=std, scale=scale),
                                   rtol=1e-5, atol=1e-5)


def test_is_batch_invariant_and_exact_on_nasty_cases():
    r = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    for backend in BACKENDS:
        a = group_advantages(r, 4, backend=backend)
        assert torch.equal(a[:8], torch.zeros(8)), "all-equal groups must give exactly 0"
        # verl example: 1 of 8 correct -> 0.875 / std(unbiased)
        a8 = group_advantages(r[8:], 8, backend=backend)
        std = torch.tensor([1.0] + [0.0] * 7).std().item()
        assert a8[0].item() == pytest.approx(0.875 / (std + 1e-6), rel=1e-6)
        # groups of one: mean 0, std 1
        torch.testing.assert_close(group_advantages(r, 1, backend=backend), r / (1 + 1e-6))


def test_dr_grpo_no_std_is_centering_only():
    r = torch.randn(64)
    for backend in BACKENDS:
        a = group_advantages(r, 8, std="none", backend=backend)
        torch.testing.assert_close(a, r - r.view(8, 8).mean(1).repeat_interleave(8))


def test_reference_gradcheck_float64():
    for std, scale in MODES:
        r = torch.randn(12, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: reference.group_advantages(x, 4, 1e-3, std, scale),
                                        (r,))


@pytest.mark.parametrize("std,scale", MODES)
@pytest.mark.parametrize("g", [1, 4])
def test_op_backward_matches_reference_autograd(std, scale, g):
    r = torch.randn(12, dtype=torch.float64)
    grad = torch.randn(12, dtype=torch.float64)
    x = r.clone().requires_grad_()
    (want,) = torch.autograd.grad(reference.group_advantages(x, g, 1e-3, std, scale), x, grad)
    y = r.float().requires_grad_()
    (got,) = torch.autograd.grad(group_advantages(y, g, 1e-3, std, scale), y, grad.float())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    r = torch.randn(32, requires_grad=True)
    torch.library.opcheck(torch.ops.onerl.group_advantages.default,
                          (r, 8, 1e-6, "unbiased", "group", backend))


def test_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="inductor")
    def f(r):
        return group_advantages(r, 8) * 2.0

    r = (torch.rand(64) < 0.5).float()
    torch.testing.assert_close(f(r).double(), 2 * _ref(r, 8), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (dict(rewards=torch.zeros(10), group_size=4), "do not split"),
    (dict(rewards=torch.zeros(2, 4), group_size=4), "1-D"),
    (dict(rewards=torch.zeros(8), group_size=0), "group_size"),
    (dict(rewards=torch.zeros(8), group_size=4, std="sample"), "std must be"),
    (dict(rewards=torch.zeros(8), group_size=4, scale="global"), "scale must be"),
    (dict(rewards=[1.0, 0.0], group_size=2), "torch.Tensor"),
])
def test_bad_input_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        group_advantages(**bad)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        group_advantages(torch.zeros(8), 4, backend="numpy")
    with pytest.raises(RuntimeError, match="CUDA"):
        group_advantages(torch.zeros(8), 4, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("std,scale", MODES)
def test_cuda_kernel_matches_reference(std, scale):
    r = (torch.rand(4096, device="cuda") < 0.3).float()
    got = group_advantages(r, 8, std=std, scale=scale, backend="cuda")
    torch.testing.assert_close(got.double().cpu(), _ref(r, 8, std=std, scale=scale),
                               rtol=1e-5, atol=1e-5)
