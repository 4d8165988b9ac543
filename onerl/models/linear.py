"""The model's linear layers: y = x W^T + b (x [..., K], W [N, K], b [N] -> y [..., N]).

On the CPU in fp32 with many rows, the products run through oneDNN
(``torch.ops.mkldnn._linear_pointwise``: the op PyTorch's own CPU compiler emits for linear
layers) instead of ``F.linear``'s MKL sgemm. On the training shapes of a small model (M = 4k-8k
rows, K, N = 256-2048) on an AVX2 CPU it measured 1.05-1.2x faster, forward and backward; on
decode shapes (M <= 128) it is slower (the weight is re-laid-out on every call), hence
``MIN_ROWS``. ``python benchmarks/bench_linear.py`` measures both on the machine at hand.

Backward: dX = dY W through the same op (W^T made contiguous once per call), dW = dY^T X and
db = sum dY through torch. Same math as ``F.linear`` up to float rounding (both accumulate in
fp32; tests/test_model.py checks values and gradients against float64).

Anything else (CUDA, bf16/fp16, fewer than ``MIN_ROWS`` rows, a torch build without oneDNN, a
distributed tensor, torch.compile) is plain ``F.linear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused_grad import plain_cpu_fp32

MIN_ROWS = 1024


def _find_op():
    """The oneDNN op when this torch build has it and it computes a tiny product correctly."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3)
        ok = torch.equal(op(x, w, torch.ones(4), "none", [], ""), x @ w.T + 1)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return op if ok else None


_OP = _find_op()


def applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (_OP is not None and x.dim() >= 1 and x.numel() >= MIN_ROWS * x.shape[-1]
            and all(plain_cpu_fp32(t) for t in (x, weight, bias) if t is not None)
            and not torch.compiler.is_compiling())


def _product(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., K] @ w[N, K]^T (+ bias) through oneDNN -> [..., N]."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    return _OP(x2, w.contiguous(), bias, "none", [], "").view(*x.shape[:-1], w.shape[0])


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1]).contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _product(grad, weight.t(), None)
        if ctx.needs_input_grad[1]:
            dw = g2.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where that applies (see the module doc)."""
    if not applies(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _Linear.apply(x, weight, bias)
    return _product(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict names and initialisation) whose forward is
    ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
