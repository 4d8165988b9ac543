"""Import triton when it exists; otherwise a stand-in so the package still imports (the Triton
backends then report themselves unavailable and everything runs on the other backends)."""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - platforms without triton
    class _Shim:
        constexpr = object

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Shim()

__all__ = ["triton", "tl"]
