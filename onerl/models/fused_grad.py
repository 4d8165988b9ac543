"""RMSNorm, SiLU(gate) * up and RoPE as fused fp32 CPU row ops with their own backward: what the
training (and reference) forward runs on a CPU in place of the torch ops.

    rms_norm(x, w, eps)  = w * x / sqrt(mean(x^2) + eps)       x [R, n], w [n]
    silu_mul(gu)         = silu(gu[:, :n]) * gu[:, n:]         gu [R, 2n] (the fused gate_up)
    rope(x, cos, sin)    = x * cos + rotate_half(x) * sin      x [T, H, D], cos / sin [T, 1, D]

Forward: the engine's C++ row ops (``rms_norm_cpu``, ``silu_mul_cpu``) and ``rope_cpu``;
backward: ``rms_norm_bwd_cpu``, ``silu_mul_bwd_cpu``, ``rope_cpu`` transposed
(csrc/cpu/train_ops.cpp, the math there). Each replaces several torch ops and their [R, n]
temporaries by one pass over the rows; results equal the torch ops to float rounding
(tests/test_fused_grad.py: within twice their error against float64). ``applies(t)`` says
whether a tensor takes this path: CPU, fp32, the ops built, plain (not sharded) parameters,
not under ``torch.compile``. Everything else (CUDA, bf16, fp64) keeps the torch ops.
"""
from __future__ import annotations

import torch

from onerl_kernels._backend import _C

_OPS = ("rms_norm_cpu", "silu_mul_cpu", "rms_norm_bwd_cpu", "silu_mul_bwd_cpu", "rope_cpu")
ENABLED = _C is not None and all(hasattr(_C, op) for op in _OPS)


def _alloc(*shape: int) -> torch.Tensor:
    """Every output buffer allocated here (fp32, CPU; tests patch it to poison buffers)."""
    return torch.empty(*shape, dtype=torch.float32)


def plain_cpu_fp32(t: torch.Tensor) -> bool:
    """A plain (not sharded or otherwise wrapped) fp32 CPU tensor or parameter."""
    return (type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu"
            and t.dtype == torch.float32)


def applies(*tensors: torch.Tensor) -> bool:
    return (ENABLED and not torch.compiler.is_compiling()
            and all(plain_cpu_fp32(t) for t in tensors))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        w = w.contiguous()
        out = _alloc(*x2.shape)
        _C.rms_norm_cpu(x2.data_ptr(), x2.stride(0), 0, w.data_ptr(), out.data_ptr(),
                        x2.shape[0], x2.shape[1], eps)
        ctx.save_for_backward(x2, w)
        ctx.eps, ctx.shape = eps, shape
        return out.view(shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, w = ctx.saved_tensors
        dy2 = dy.reshape(x2.shape).contiguous()
        dx, dw = _alloc(*x2.shape), _alloc(*w.shape)
        _C.rms_norm_bwd_cpu(x2.data_ptr(), w.data_ptr(), dy2.data_ptr(), dx.data_ptr(),
                            dw.data_ptr(), x2.shape[0], x2.shape[1], ctx.eps)
        return dx.view(ctx.shape), dw, None


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gu: torch.Tensor) -> torch.Tensor:
        shape, n = gu.shape, gu.shape[-1] // 2
        g2 = gu.reshape(-1, 2 * n).contiguous()
        out = _alloc(g2.shape[0], n)
        _C.silu_mul_cpu(g2.data_ptr(), g2.stride(0), out.data_ptr(), g2.shape[0], n)
        ctx.save_for_backward(g2)
        ctx.shape = shape
        return out.view(*shape[:-1], n)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        (g2,) = ctx.saved_tensors
        n = g2.shape[1] // 2
        d2 = dout.reshape(-1, n).contiguous()
        dgu = _alloc(*g2.shape)
        _C.silu_mul_bwd_cpu(g2.data_ptr(), d2.data_ptr(), dgu.data_ptr(), g2.shape[0], n)
        return dgu.view(ctx.shape)


def _rope_pass(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool):
    T, H, D = x.shape
    if x.stride(2) != 1 or x.stride(1) != D:   # a token's heads must be one contiguous row
        x = x.contiguous()
    out = _alloc(T, H, D)
    _C.rope_cpu(x.data_ptr(), x.stride(0), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), T, H,
                D, backward)
    return out


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos, sin = (t.reshape(x.shape[0], x.shape[2]).contiguous() for t in (cos, sin))
        ctx.save_for_backward(cos, sin)
        return _rope_pass(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rope_pass(dy, cos, sin, backward=True), None, None


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin for x [T, H, D], cos / sin [T, 1, D] (check ``applies``
    first; no gradient to cos / sin, the fixed tables)."""
    if x.shape[-1] % 2:
        raise ValueError(f"rope: head_dim ({x.shape[-1]}) must be even")
    return _Rope.apply(x, cos, sin)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """w * x / sqrt(mean(x^2, -1) + eps) over x's last dimension (check ``applies`` first)."""
    return _RMSNorm.apply(x, w, float(eps))


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of gu = [gate | up] along the last dimension (check ``applies`` first)."""
    if gu.shape[-1] % 2:
        raise ValueError(f"silu_mul: the last dimension ({gu.shape[-1]}) must be even")
    return _SiluMul.apply(gu)
