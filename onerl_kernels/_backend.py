"""Which implementation runs an op: the compiled extension, Triton, or the torch reference.

Every public op takes ``backend="auto"``. Auto picks the fast path for the tensor's device
(CUDA C++ or Triton on a GPU, the C++ twin or torch on a CPU); a named backend is honoured or
refused with a clear error. ``backend="triton"`` on CPU tensors runs Triton's interpreter and
needs TRITON_INTERPRET=1 set before the first import of triton (the test suite does this).
"""
from __future__ import annotations

import os

import torch

try:  # the compiled extension is optional: a source checkout without a build still works
    from . import _C  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised only in unbuilt checkouts
    _C = None


def build_info() -> dict:
    """How ``onerl_kernels._C`` was built (empty-ish dict when it is missing)."""
    if _C is None:
        return {"built": False, "cuda": False, "cuda_archs": "", "cuda_version": ""}
    return {"built": True, **dict(_C.BUILD_INFO)}


def has_cpp() -> bool:
    return _C is not None


def has_cuda_kernels() -> bool:
    return _C is not None and bool(_C.BUILD_INFO["cuda"])


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(op: str, backend: str, device: torch.device, choices: tuple[str, ...]) -> str:
    """Pick the backend for ``op`` on ``device``; ``choices`` lists what the op implements."""
    if backend == "auto":
        if device.type == "cuda":
            for b in ("cuda", "triton"):
                if b in choices and available(b, device):
                    return b
        elif "cpp" in choices and has_cpp():
            return "cpp"
        return "torch"
    if backend not in choices:
        raise ValueError(f"{op}: backend must be 'auto' or one of {choices}, got {backend!r}")
    if not available(backend, device):
        raise RuntimeError(f"{op}: backend {backend!r} is not available for {device.type} tensors: "
                           f"{why_unavailable(backend, device)}")
    return backend


def available(backend: str, device: torch.device) -> bool:
    return why_unavailable(backend, device) == ""


def why_unavailable(backend: str, device: torch.device) -> str:
    if backend == "torch":
        return ""
    if backend == "cpp":
        if device.type != "cpu":
            return "the C++ twin takes CPU tensors"
        return "" if has_cpp() else "onerl_kernels._C is not built"
    if backend == "cuda":
        if device.type != "cuda":
            return "CUDA kernels take CUDA tensors"
        return "" if has_cuda_kernels() else "onerl_kernels._C was built without CUDA (no nvcc)"
    if backend == "triton":
        if not has_triton():
            return "triton is not installed"
        if device.type == "cpu" and not triton_interpreting():
            return "Triton on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
        return ""
    return f"unknown backend {backend!r}"


def stream_of(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream
