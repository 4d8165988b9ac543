"""Plain-PyTorch specification of every onerl op.

Each function here is the *definition* the fast kernels are tested against: short, readable,
differentiable with autograd, and exact in float64 (pass float64 tensors to get a float64 answer;
lower precisions are computed in float32). They are also the CPU fallback when the C++ twin is
not built. Nothing here is tuned for speed or memory.
"""
from __future__ import annotations

import torch

STD_MODES = ("unbiased", "population", "none")
SCALE_MODES = ("group", "batch", "none")
KL_TYPES = ("k1", "k2", "k3", None)
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- group_advantages


def _std(x: torch.Tensor, std: str, dim: int) -> torch.Tensor:
    return x.std(dim=dim, correction=1 if std == "unbiased" else 0, keepdim=True)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     std: str = "unbiased", scale: str = "group") -> torch.Tensor:
    """GRPO outcome advantage of N rewards in contiguous groups of ``group_size``.

    A_i = (r_i - mean_g) / (std + eps), std being the group's (scale="group") or the batch's
    (scale="batch"), unbiased (n-1) or population (n); std="none" or scale="none" divides by
    nothing. A group of one element has mean 0 and std 1 (verl's rule). Returns [N] in float32
    (float64 for float64 input).
    """
    r = rewards.to(_compute_dtype(rewards)).reshape(-1, group_size)
    if group_size == 1:
        mean, gstd = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean, gstd = r.mean(dim=1, keepdim=True), _std(r, std, 1)
    centered = r - mean
    if std == "none" or scale == "none":
        return centered.reshape(-1)
    if scale == "batch":
        flat = r.reshape(-1)
        gstd = _std(flat, std, 0) if flat.numel() > 1 else torch.ones_like(flat[:1])
    return (centered / (gstd + eps)).reshape(-1)


# --------------------------------------------------------------------------- grpo_loss


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token KL(pi || ref) estimators: k1 = logp - ref, k2 = (logp - ref)^2 / 2,
    k3 ("low_var_kl") = exp(ref - logp) - (ref - logp) - 1 clamped to [-10, 10]."""
    if kl_type == "k1":
        return logp - ref_logp
    if kl_type == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kl_type == "k3":
        d = ref_logp - logp
        return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)
    raise ValueError(f"kl_type must be one of {KL_TYPES}, got {kl_type!r}")


def token_weights(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """The weight of each token in the aggregated loss: loss = sum(w * per_token_loss).

    token-mean: 1/#tokens. seq-mean-token-mean: 1/(#tokens of the row * #non-empty rows).
    seq-mean-token-sum: 1/#non-empty rows. seq-mean-token-sum-norm: 1/T (Dr. GRPO's constant
    horizon; rows summed). Empty rows weigh nothing; an all-empty batch gives loss 0.
    """
    m = mask.to(torch.float64 if mask.dtype == torch.float64 else torch.float32)
    per_row = m.sum(dim=1, keepdim=True)
    rows = (per_row > 0).sum().clamp(min=1)
    if agg == "token-mean":
        return m / m.sum().clamp(min=1)
    if agg == "seq-mean-token-mean":
        return m / (per_row.clamp(min=1) * rows)
    if agg == "seq-mean-token-sum":
        return m / rows
    if agg == "seq-mean-token-sum-norm":
        return m / m.shape[1]
    raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, entropy=None, *, clip_low=0.2,
              clip_high=0.2, clip_dual=None, kl_type="k3", kl_coef=0.001, entropy_coef=0.0,
              agg="token-mean"):
    """The clipped GRPO/PPO loss exactly as verl computes it (see docs of onerl_kernels.grpo_loss).

    Per token: ratio = exp(clamp(logp - old, -20, 20));
      pg = max(-A ratio, -A clip(ratio, 1-clip_low, 1+clip_high)), and with a dual clip c for A < 0:
      pg = min(pg, -A c);
      loss_t = pg + kl_coef * KL(logp, ref) - entropy_coef * entropy.
    loss = sum_t w_t loss_t with w from ``token_weights``. Metrics are token-means over the mask.
    Returns (loss, metrics) with metrics = dict(clipfrac, ppo_kl, kl, entropy).
    """
    dt = _compute_dtype(logp)
    logp = logp.to(dt)
    old = logp.detach() if old_logp is None else old_logp.to(dt)
    adv = advantages.to(dt).unsqueeze(1)
    w = token_weights(mask, agg).to(dt)
    m = (mask != 0).to(dt)
    n_tok = m.sum().clamp(min=1)

    log_ratio = torch.clamp(logp - old, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg1, pg2)
    clipped = (pg2 > pg1).to(dt)
    if clip_dual is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * clip_dual), pg)
    per_token = pg
    zero = logp.new_zeros(())
    kl_mean = zero
    if kl_type is not None:
        kl = kl_penalty(logp, ref_logp.to(dt), kl_type)
        per_token = per_token + kl_coef * kl
        kl_mean = (kl * m).sum() / n_tok
    ent_mean = zero
    if entropy is not None:
        ent = entropy.to(dt)
        per_token = per_token - entropy_coef * ent
        ent_mean = (ent * m).sum() / n_tok
    loss = (per_token * w).sum()
    metrics = {
        "clipfrac": ((clipped * m).sum() / n_tok).detach(),
        "ppo_kl": ((-log_ratio * m).sum() / n_tok).detach(),
        "kl": kl_mean.detach(),
        "entropy": ent_mean.detach(),
    }
    return loss, metrics
