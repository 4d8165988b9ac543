"""Test-wide setup. On a machine without a CUDA GPU, Triton kernels run through Triton's
interpreter (TRITON_INTERPRET=1 must be set before triton is imported) and tests marked ``gpu``
are deselected; benchmarks/gpu_check.sh runs them on a GPU machine."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve 2-core boxes

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    gpu = [it for it in items if it.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [it for it in items if not it.get_closest_marker("gpu")]


@pytest.fixture
def device():
    """The device kernel tests run on: the GPU when there is one, else the CPU (interpreter)."""
    return torch.device("cuda" if HAS_GPU else "cpu")


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN (or a sentinel for integers) before a kernel writes it."""
    return t.fill_(float("nan") if t.is_floating_point() else -7)
