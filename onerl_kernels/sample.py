"""sample: temperature / top-k / top-p sampling with counter-based noise, returning log-probs.

    tokens[b] ~ softmax(logits[b] / T_b) restricted to the top-k, then top-p, tokens
    logp[b]   = log_softmax(logits[b] / T_b)[tokens[b]]      (FULL vocabulary, fp32)

T_b = 0 means argmax (lowest index on ties) with logp at T = 1. top_k <= 0 and top_p >= 1 are
"off". Truncation is tie-inclusive and defined by thresholds on the logit (reference.
sample_keep_mask): top-k keeps v iff fewer than k tokens have a larger logit; top-p keeps v iff
the (top-k renormalised) probability mass of kept tokens with a larger logit is < p.

Noise is Philox4x32-10 keyed by the row's seed with counter (position, stream, tag), so a row's
draw depends only on (seed, position, logits, T, k, p), never on the rest of the batch. The
draw is exact inverse-CDF sampling done hierarchically, which reads the logits once:

  1. (only rows with top-k / top-p) the threshold tau_b: radix select on the logits' order-
     preserving 32-bit keys (counts for top-k, softmax mass for top-p); -inf when off;
  2. the vocabulary is cut into chunks of 4096 tokens; for each chunk (in parallel) one pass
     gives the chunk max and sum-exp over all tokens (for the full-vocabulary logp) and over the
     kept tokens z >= tau, and one inverse-CDF draw inside the chunk (uniform = stream c) in a
     fixed lane order (reference.sample spells it out);
  3. per row, a merge over the chunks (fixed order) picks a chunk with probability
     proportional to its kept mass (uniform = stream 0xFFFFFFFF) and computes logp.

Backends: CUDA C++ (csrc/cuda/sample.cu), the C++ CPU twin (csrc/cpu/sample.cpp), both on
csrc/philox.h + csrc/sample.h, and the torch reference. The C++ twins draw the same tokens as
the reference except where a uniform falls within float rounding of a CDF boundary.
logits: [B, V] fp32, bf16 or fp16, any row stride (the vocabulary dimension must have stride
1, else it is copied); temperature, top_p fp32 [B]; top_k, seeds, positions int64 [B].
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import _C, resolve, stream_of
from .paged_kv import _eager_cpp

BACKENDS = ("cuda", "cpp", "torch")
CHUNK = reference.SAMPLE_CHUNK
_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _sample_cpp(logits, temperature, top_k, top_p, seeds, positions, cuda: bool):
    B, V = logits.shape
    dev = logits.device
    nc = -(-V // CHUNK)
    tau = torch.empty(B, dtype=torch.float32, device=dev)
    part = torch.empty(B, nc, 5, dtype=torch.float32, device=dev)
    ptok = torch.empty(B, nc, dtype=torch.int32, device=dev)
    tokens = torch.empty(B, dtype=torch.int64, device=dev)
    logp = torch.empty(B, dtype=torch.float32, device=dev)
    args = (logits.data_ptr(), logits.stride(0), _DTYPES[logits.dtype], B, V,
            temperature.data_ptr(), top_k.data_ptr(), top_p.data_ptr(), seeds.data_ptr(),
            positions.data_ptr(), tau.data_ptr(), part.data_ptr(), ptok.data_ptr(),
            tokens.data_ptr(), logp.data_ptr())
    if cuda:
        _C.sample_cuda(*args, stream_of(logits))
    else:
        _C.sample_cpu(*args)
    return tokens, logp


@torch.library.custom_op("onerl::sample", mutates_args=())
def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
            top_p: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    which = resolve("sample", backend, logits.device, BACKENDS)
    if which == "torch" or not hasattr(_C, "sample_cpu"):
        return reference.sample(logits, temperature, top_k, top_p, seeds, positions)
    return _sample_cpp(logits, temperature, top_k, top_p, seeds, positions, which == "cuda")


@_sample.register_fake
def _(logits, temperature, top_k, top_p, seeds, positions, backend):
    B = logits.shape[0]
    return (logits.new_empty(B, dtype=torch.int64), logits.new_empty(B, dtype=torch.float32))


def _vec(name, t, B, dtype, device):
    if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.shape != (B,):
        raise ValueError(f"sample: {name} must be {dtype} [{B}], got "
                         f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
    if t.device != device:
        raise ValueError(f"sample: {name} is on {t.device}, logits on {device}")
    return t.contiguous()


def sample(logits, temperature, top_k, top_p, seeds, positions, *, backend: str = "auto"):
    """Draw one token per row of ``logits`` [B, V]; returns (tokens int64 [B], logp fp32 [B]).

    See the module docstring for the distribution, the truncation rules and the noise. No host
    sync; one call per decode step (pass the token's position so every step draws afresh).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.dtype not in _DTYPES:
        raise ValueError("sample: logits must be a [B, V] fp32/bf16/fp16 tensor, got "
                         f"{getattr(logits, 'dtype', type(logits))} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    B, V = logits.shape
    if V == 0:
        raise ValueError("sample: logits has an empty vocabulary (V = 0)")
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    dev = logits.device
    temperature = _vec("temperature", temperature, B, torch.float32, dev)
    top_k = _vec("top_k", top_k, B, torch.int64, dev)
    top_p = _vec("top_p", top_p, B, torch.float32, dev)
    seeds = _vec("seeds", seeds, B, torch.int64, dev)
    positions = _vec("positions", positions, B, torch.int64, dev)
    if _eager_cpp(backend, logits) and hasattr(_C, "sample_cpu"):  # no op dispatch
        return _sample_cpp(logits, temperature, top_k, top_p, seeds, positions, False)
    return _sample(logits, temperature, top_k, top_p, seeds, positions, backend)
