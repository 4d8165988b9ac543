"""grpo_loss: the clipped GRPO/PPO policy loss with KL and entropy terms, fused.

Math (per token t of response b; verl's compute_policy_loss + low_var_kl + agg_loss):

    ratio = exp(clamp(logp - old, -20, 20))
    pg    = max(-A_b ratio, -A_b clip(ratio, 1 - clip_low, 1 + clip_high))
    pg    = min(pg, -A_b clip_dual)                     where A_b < 0, if clip_dual is set
    l     = pg + kl_coef KL(logp, ref) - entropy_coef H
    loss  = sum_{b,t} w_{b,t} l_{b,t}                   w from reference.token_weights(mask, agg)

Shapes: logp, old_logp, ref_logp, mask, entropy [B, T] (any float dtype / bool or number mask,
any strides); advantages [B] (per response, GRPO) or [B, T] (per token, PPO). Math in fp32.
Outputs: loss (fp32 scalar) and metrics (fp32 [4]: clipfrac, ppo_kl, kl, entropy; token-means
over the mask), all on device, no host sync.

GPU (Triton): ONE forward launch. Program b walks row b, computes the loss terms AND the
gradients d l / d logp and d l / d H (scaled by the row's weight, not yet by the global
denominator), and writes a row partial; the last program to finish (atomic ticket) reduces the
partials in a fixed order, so the result is bit-deterministic. Backward is ONE elementwise
launch: grad = saved_grad * grad_out / denominator. CPU: the same algorithm in torch ops.
Masked positions never contribute, even when they hold NaN or inf.

The per-device ticket counter resets itself inside the kernel; concurrent calls on two streams
of the same device are therefore not supported.
"""
from __future__ import annotations

import torch

from . import reference
from ._backend import resolve
from ._triton import tl, triton

_KL = {None: 0, "k1": 1, "k2": 2, "k3": 3}
_AGG = {a: i for i, a in enumerate(reference.AGG_MODES)}
_METRICS = ("clipfrac", "ppo_kl", "kl", "entropy")
BACKENDS = ("triton", "torch")
_NPART = 8  # row partial: loss, tokens, clipped, ppo_kl, kl, entropy, (pad)


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def _token_terms(lp, old, ref, a, clip_low, clip_high, clip_dual, KL_TYPE: tl.constexpr,
                 HAS_DUAL: tl.constexpr):
    """pg loss, its derivative, the KL term and its derivative, clipped flag, clamped log-ratio."""
    lr = lp - old
    lrc = tl.minimum(tl.maximum(lr, -20.0), 20.0)
    ratio = tl.exp(lrc)
    d_ratio = tl.where((lr >= -20.0) & (lr <= 20.0), ratio, 0.0)  # d ratio / d logp
    cr = tl.minimum(tl.maximum(ratio, 1.0 - clip_low), 1.0 + clip_high)
    pg1 = -a * ratio
    pg2 = -a * cr
    d1 = -a * d_ratio
    d2 = tl.where((ratio >= 1.0 - clip_low) & (ratio <= 1.0 + clip_high), d1, 0.0)
    pg = tl.maximum(pg1, pg2)
    dpg = tl.where(pg1 > pg2, d1, tl.where(pg2 > pg1, d2, 0.5 * (d1 + d2)))
    if HAS_DUAL:
        pg3 = -a * clip_dual
        dual_pg = tl.minimum(pg, pg3)
        dual_d = tl.where(pg < pg3, dpg, tl.where(pg3 < pg, 0.0, 0.5 * dpg))
        pg = tl.where(a < 0, dual_pg, pg)
        dpg = tl.where(a < 0, dual_d, dpg)
    kl = tl.zeros_like(lp)
    dkl = tl.zeros_like(lp)
    if KL_TYPE == 1:
        kl = lp - ref
        dkl = tl.full(lp.shape, 1.0, tl.float32)
    if KL_TYPE == 2:
        kl = 0.5 * (lp - ref) * (lp - ref)
        dkl = lp - ref
    if KL_TYPE == 3:
        d = ref - lp
        e = tl.exp(d)
        k3 = e - d - 1.0
        kl = tl.minimum(tl.maximum(k3, -10.0), 10.0)
        dkl = tl.where((k3 >= -10.0) & (k3 <= 10.0), 1.0 - e, 0.0)
    return pg, dpg, kl, dkl, (pg2 > pg1), lrc


@triton.jit
def _grpo_fwd_kernel(
    lp_ptr, old_ptr, ref_ptr, adv_ptr, mask_ptr, ent_ptr,
    s_lp_b, s_lp_t, s_old_b, s_old_t, s_ref_b, s_ref_t, s_m_b, s_m_t, s_e_b, s_e_t,
    s_adv_b, s_adv_t, glp_ptr, gent_ptr, part_ptr, loss_ptr, met_ptr, den_ptr, ticket_ptr,
    B, T, clip_low, clip_high, clip_dual, kl_coef, ent_coef,
    HAS_OLD: tl.constexpr, KL_TYPE: tl.constexpr, HAS_ENT: tl.constexpr, HAS_DUAL: tl.constexpr,
    AGG: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_B: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_T)
    row_scale = 1.0
    if AGG == 1:  # seq-mean-token-mean: the row's own token count scales every token
        cnt = tl.zeros([BLOCK_T], tl.float32)
        for t0 in range(0, T, BLOCK_T):
            t = t0 + cols
            mv = tl.load(mask_ptr + b * s_m_b + t * s_m_t, mask=t < T, other=0)
            cnt += tl.where(mv != 0, 1.0, 0.0)
        row_scale = 1.0 / tl.maximum(tl.sum(cnt, 0), 1.0)
    acc_loss = tl.zeros([BLOCK_T], tl.float32)
    acc_tok = tl.zeros([BLOCK_T], tl.float32)
    acc_clip = tl.zeros([BLOCK_T], tl.float32)
    acc_pkl = tl.zeros([BLOCK_T], tl.float32)
    acc_kl = tl.zeros([BLOCK_T], tl.float32)
    acc_ent = tl.zeros([BLOCK_T], tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + cols
        inb = t < T
        m = tl.load(mask_ptr + b * s_m_b + t * s_m_t, mask=inb, other=0) != 0
        lp = tl.load(lp_ptr + b * s_lp_b + t * s_lp_t, mask=m, other=0.0).to(tl.float32)
        a = tl.load(adv_ptr + b * s_adv_b + t * s_adv_t, mask=m, other=0.0).to(tl.float32)
        old = lp
        if HAS_OLD:
            old = tl.load(old_ptr + b * s_old_b + t * s_old_t, mask=m, other=0.0).to(tl.float32)
        ref = lp
        if KL_TYPE != 0:
            ref = tl.load(ref_ptr + b * s_ref_b + t * s_ref_t, mask=m, other=0.0).to(tl.float32)
        pg, dpg, kl, dkl, clipped, lrc = _token_terms(lp, old, ref, a, clip_low, clip_high,
                                                      clip_dual, KL_TYPE, HAS_DUAL)
        loss = pg + kl_coef * kl
        if HAS_ENT:
            h = tl.load(ent_ptr + b * s_e_b + t * s_e_t, mask=m, other=0.0).to(tl.float32)
            loss -= ent_coef * h
            acc_ent += tl.where(m, h, 0.0)
            tl.store(gent_ptr + b * T + t, tl.where(m, -ent_coef * row_scale, 0.0), mask=inb)
        tl.store(glp_ptr + b * T + t, tl.where(m, (dpg + kl_coef * dkl) * row_scale, 0.0), mask=inb)
        acc_loss += tl.where(m, loss, 0.0)
        acc_tok += tl.where(m, 1.0, 0.0)
        acc_clip += tl.where(m & clipped, 1.0, 0.0)
        acc_pkl += tl.where(m, -lrc, 0.0)
        acc_kl += tl.where(m, kl, 0.0)
    p = part_ptr + b * 8
    tl.store(p + 0, tl.sum(acc_loss, 0) * row_scale)
    tl.store(p + 1, tl.sum(acc_tok, 0))
    tl.store(p + 2, tl.sum(acc_clip, 0))
    tl.store(p + 3, tl.sum(acc_pkl, 0))
    tl.store(p + 4, tl.sum(acc_kl, 0))
    tl.store(p + 5, tl.sum(acc_ent, 0))
    # The last program to arrive reduces all row partials in a fixed order.
    tl.debug_barrier()
    ticket = tl.atomic_add(ticket_ptr, 1, sem="acq_rel")
    if ticket == B - 1:
        _reduce_partials(part_ptr, loss_ptr, met_ptr, den_ptr, B, T, AGG, BLOCK_B)
        tl.atomic_xchg(ticket_ptr, 0)


@triton.jit
def _reduce_partials(part_ptr, loss_ptr, met_ptr, den_ptr, B, T, AGG: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    rows = tl.arange(0, BLOCK_B)
    s_loss = tl.zeros([BLOCK_B], tl.float32)
    s_tok = tl.zeros([BLOCK_B], tl.float32)
    s_clip = tl.zeros([BLOCK_B], tl.float32)
    s_pkl = tl.zeros([BLOCK_B], tl.float32)
    s_kl = tl.zeros([BLOCK_B], tl.float32)
    s_ent = tl.zeros([BLOCK_B], tl.float32)
    s_rows = tl.zeros([BLOCK_B], tl.float32)
    for b0 in range(0, B, BLOCK_B):
        r = (b0 + rows).to(tl.int64)
        ok = r < B
        p = part_ptr + r * 8
        tok = tl.load(p + 1, mask=ok, other=0.0, cache_modifier=".cg")
        s_loss += tl.load(p + 0, mask=ok, other=0.0, cache_modifier=".cg")
        s_tok += tok
        s_clip += tl.load(p + 2, mask=ok, other=0.0, cache_modifier=".cg")
        s_pkl += tl.load(p + 3, mask=ok, other=0.0, cache_modifier=".cg")
        s_kl += tl.load(p + 4, mask=ok, other=0.0, cache_modifier=".cg")
        s_ent += tl.load(p + 5, mask=ok, other=0.0, cache_modifier=".cg")
        s_rows += tl.where(tok > 0, 1.0, 0.0)
    tokens = tl.maximum(tl.sum(s_tok, 0), 1.0)
    nonempty = tl.maximum(tl.sum(s_rows, 0), 1.0)
    denom = tokens
    if AGG == 1 or AGG == 2:
        denom = nonempty
    if AGG == 3:
        denom = T * 1.0
    tl.store(loss_ptr, tl.sum(s_loss, 0) / denom)
    tl.store(met_ptr + 0, tl.sum(s_clip, 0) / tokens)
    tl.store(met_ptr + 1, tl.sum(s_pkl, 0) / tokens)
    tl.store(met_ptr + 2, tl.sum(s_kl, 0) / tokens)
    tl.store(met_ptr + 3, tl.sum(s_ent, 0) / tokens)
    tl.store(den_ptr, denom)


@triton.jit
def _grpo_bwd_kernel(glp_ptr, gent_ptr, dlp_ptr, dent_ptr, den_ptr, dloss_ptr, N,
                     HAS_ENT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    scale = tl.load(dloss_ptr).to(tl.float32) / tl.load(den_ptr)
    g = tl.load(glp_ptr + i, mask=ok, other=0.0)
    tl.store(dlp_ptr + i, (g * scale).to(dlp_ptr.dtype.element_ty), mask=ok)
    if HAS_ENT:
        ge = tl.load(gent_ptr + i, mask=ok, other=0.0)
        tl.store(dent_ptr + i, (ge * scale).to(dent_ptr.dtype.element_ty), mask=ok)


_tickets: dict[torch.device, torch.Tensor] = {}


def _ticket(device: torch.device) -> torch.Tensor:
    if device not in _tickets:
        _tickets[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _tickets[device]


def _fwd_triton(logp, old, ref, adv, mask, ent, clip_low, clip_high, clip_dual, kl_type, kl_coef,
                ent_coef, agg):
    B, T = logp.shape
    dev = logp.device
    f32 = dict(dtype=torch.float32, device=dev)
    glp = torch.empty(B, T, **f32)
    gent = torch.empty(B, T, **f32) if ent is not None else torch.empty(0, **f32)
    part = torch.empty(B, _NPART, **f32)
    loss, metrics, denom = torch.empty((), **f32), torch.empty(4, **f32), torch.empty((), **f32)
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    dummy = logp
    o, r, e = (old if old is not None else dummy), (ref if ref is not None else dummy), \
        (ent if ent is not None else dummy)
    block_t = min(1024, triton.next_power_of_2(max(T, 16)))
    _grpo_fwd_kernel[(B,)](
        logp, o, r, adv, mask, e,
        logp.stride(0), logp.stride(1), o.stride(0), o.stride(1), r.stride(0), r.stride(1),
        mask.stride(0), mask.stride(1), e.stride(0), e.stride(1), adv.stride(0),
        adv.stride(1) if adv.dim() == 2 else 0, glp, gent, part, loss, metrics, denom, _ticket(dev),
        B, T, clip_low, clip_high, 0.0 if clip_dual is None else clip_dual, kl_coef, ent_coef,
        HAS_OLD=old is not None, KL_TYPE=_KL[kl_type], HAS_ENT=ent is not None,
        HAS_DUAL=clip_dual is not None, AGG=_AGG[agg], BLOCK_T=block_t, BLOCK_B=256,
        num_warps=4,
    )
    return loss, metrics, glp, gent, denom


def _bwd_triton(glp, gent, denom, dloss, lp_dtype, ent_dtype):
    N = glp.numel()
    dlp = torch.empty(glp.shape, dtype=lp_dtype, device=glp.device)
    dent = torch.empty(gent.shape, dtype=ent_dtype, device=glp.device)
    block = 1024
    _grpo_bwd_kernel[(triton.cdiv(max(N, 1), block),)](
        glp, gent, dlp, dent, denom, dloss, N, HAS_ENT=gent.numel() > 0, BLOCK=block)
    return dlp, dent


# ----------------------------------------------------------------------------- torch twin


def _fwd_torch(logp, old, ref, adv, mask, ent, clip_low, clip_high, clip_dual, kl_type, kl_coef,
               ent_coef, agg):
    """The kernel's algorithm in torch ops: same outputs, same analytic gradients."""
    dt = torch.float64 if logp.dtype == torch.float64 else torch.float32
    m = mask != 0
    mf = m.to(dt)
    z = torch.zeros((), dtype=dt, device=logp.device)
    lp = torch.where(m, logp.to(dt), z)
    o = lp if old is None else torch.where(m, old.to(dt), z)
    a = adv.to(dt)[:, None] if adv.dim() == 1 else torch.where(m, adv.to(dt), z)
    lr = lp - o
    lrc = lr.clamp(-20.0, 20.0)
    ratio = torch.exp(lrc)
    d1 = -a * torch.where((lr >= -20) & (lr <= 20), ratio, z)
    pg1, pg2 = -a * ratio, -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    d2 = torch.where((ratio >= 1.0 - clip_low) & (ratio <= 1.0 + clip_high), d1, z)
    pg = torch.maximum(pg1, pg2)
    dpg = torch.where(pg1 > pg2, d1, torch.where(pg2 > pg1, d2, 0.5 * (d1 + d2)))
    if clip_dual is not None:
        pg3 = -a * clip_dual
        dual_d = torch.where(pg < pg3, dpg, torch.where(pg3 < pg, z, 0.5 * dpg))
        pg, dpg = torch.where(a < 0, torch.minimum(pg, pg3), pg), torch.where(a < 0, dual_d, dpg)
    kl, dkl = torch.zeros_like(lp), torch.zeros_like(lp)
    if kl_type is not None:
        r = torch.where(m, ref.to(dt), z)
        kl = reference.kl_penalty(lp, r, kl_type)
        if kl_type == "k1":
            dkl = torch.ones_like(lp)
        elif kl_type == "k2":
            dkl = lp - r
        else:
            k3 = torch.exp(r - lp) - (r - lp) - 1.0
            dkl = torch.where((k3 >= -10) & (k3 <= 10), 1.0 - torch.exp(r - lp), z)
    per_tok = pg + kl_coef * kl
    h = torch.zeros_like(lp) if ent is None else torch.where(m, ent.to(dt), z)
    per_tok = per_tok - ent_coef * h
    n_row = mf.sum(1, keepdim=True)
    row_scale = 1.0 / n_row.clamp(min=1) if agg == "seq-mean-token-mean" else torch.ones_like(n_row)
    tokens = mf.sum().clamp(min=1)
    nonempty = (n_row > 0).sum().to(dt).clamp(min=1)
    denom = {"token-mean": tokens, "seq-mean-token-sum-norm": z + logp.shape[1]}.get(agg, nonempty)
    loss = (per_tok * mf * row_scale).sum() / denom
    metrics = torch.stack([((pg2 > pg1).to(dt) * mf).sum(), (-lrc * mf).sum(), (kl * mf).sum(),
                           (h * mf).sum()]) / tokens
    glp = (dpg + kl_coef * dkl) * mf * row_scale
    gent = (-ent_coef * mf * row_scale) if ent is not None else logp.new_empty(0)
    f = torch.float32
    return loss.to(f), metrics.to(f), glp.to(f), gent.to(f), denom.to(f)


# ----------------------------------------------------------------------------- custom ops


@torch.library.custom_op("onerl::grpo_loss", mutates_args=())
def _grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
               advantages: torch.Tensor, mask: torch.Tensor, entropy: torch.Tensor | None,
               clip_low: float, clip_high: float, clip_dual: float | None, kl_type: str | None,
               kl_coef: float, entropy_coef: float, agg: str, backend: str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    which = resolve("grpo_loss", backend, logp.device, BACKENDS)
    impl = _fwd_triton if which == "triton" else _fwd_torch
    return impl(logp, old_logp, ref_logp, advantages, mask, entropy, clip_low, clip_high,
                clip_dual, kl_type, kl_coef, entropy_coef, agg)


@_grpo_loss.register_fake
def _(logp, old_logp, ref_logp, advantages, mask, entropy, clip_low, clip_high, clip_dual,
      kl_type, kl_coef, entropy_coef, agg, backend):
    f32 = dict(dtype=torch.float32, device=logp.device)
    gent_shape = logp.shape if entropy is not None else (0,)
    return (logp.new_empty((), **f32), logp.new_empty(4, **f32), logp.new_empty(logp.shape, **f32),
            logp.new_empty(gent_shape, **f32), logp.new_empty((), **f32))


@torch.library.custom_op("onerl::grpo_loss_backward", mutates_args=())
def _grpo_loss_backward(glp: torch.Tensor, gent: torch.Tensor, denom: torch.Tensor,
                        dloss: torch.Tensor, lp_dtype: torch.dtype, ent_dtype: torch.dtype,
                        backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if resolve("grpo_loss", backend, glp.device, BACKENDS) == "triton":
        return _bwd_triton(glp, gent, denom, dloss, lp_dtype, ent_dtype)
    scale = dloss.float() / denom
    return (glp * scale).to(lp_dtype), (gent * scale).to(ent_dtype)


@_grpo_loss_backward.register_fake
def _(glp, gent, denom, dloss, lp_dtype, ent_dtype, backend):
    return glp.new_empty(glp.shape, dtype=lp_dtype), gent.new_empty(gent.shape, dtype=ent_dtype)


def _setup(ctx, inputs, output):
    logp, entropy, backend = inputs[0], inputs[5], inputs[-1]
    _, metrics, glp, gent, denom = output
    ctx.mark_non_differentiable(metrics, glp, gent, denom)
    ctx.save_for_backward(glp, gent, denom)
    ctx.dtypes = (logp.dtype, entropy.dtype if entropy is not None else torch.float32)
    ctx.has_ent, ctx.backend = entropy is not None, backend


def _backward(ctx, dloss, *_):
    glp, gent, denom = ctx.saved_tensors
    dlp, dent = _grpo_loss_backward(glp, gent, denom, dloss, *ctx.dtypes, ctx.backend)
    return (dlp, None, None, None, None, dent if ctx.has_ent else None) + (None,) * 8


_grpo_loss.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API


def _check_bt(name: str, t, shape, device) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"grpo_loss: {name} must be a torch.Tensor, got {type(t)}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"grpo_loss: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.device != device:
        raise ValueError(f"grpo_loss: {name} is on {t.device}, logp on {device}")


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, entropy=None, *, clip_low=0.2,
              clip_high=0.2, clip_dual=None, kl_type="k3", kl_coef=0.001, entropy_coef=0.0,
              agg="token-mean", backend="auto"):
    """Fused clipped GRPO loss. Returns (loss, metrics): a differentiable fp32 scalar and a dict
    of fp32 device scalars {clipfrac, ppo_kl, kl, entropy} (token-means over the mask).

    logp [B, T] must require grad for training; advantages [B] or [B, T]; ``old_logp=None``
    means on-policy (old = logp detached, ratio exactly 1); ``ref_logp`` is needed unless ``kl_type`` is None; ``entropy``
    [B, T] (optional) enters as ``- entropy_coef * agg(entropy)`` and receives a gradient.
    See the module docstring for the math and reference.token_weights for ``agg``.
    """
    if not isinstance(logp, torch.Tensor) or logp.dim() != 2 or not logp.is_floating_point():
        raise ValueError("grpo_loss: logp must be a floating [B, T] tensor, got "
                         f"{getattr(logp, 'shape', type(logp))}")
    shape, dev = logp.shape, logp.device
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask),
                    ("entropy", entropy)):
        _check_bt(name, t, shape, dev)
    _check_bt("advantages", advantages, shape[:max(getattr(advantages, "ndim", 1), 1)], dev)
    if mask is None:
        raise ValueError("grpo_loss: mask [B, T] is required")
    if kl_type not in _KL:
        raise ValueError(f"grpo_loss: kl_type must be one of {tuple(_KL)}, got {kl_type!r}")
    if kl_type is not None and ref_logp is None:
        raise ValueError(f"grpo_loss: kl_type={kl_type!r} needs ref_logp (or pass kl_type=None)")
    if agg not in _AGG:
        raise ValueError(f"grpo_loss: agg must be one of {tuple(_AGG)}, got {agg!r}")
    if not (0 <= clip_low < 1 and clip_high >= 0):
        raise ValueError(f"grpo_loss: need 0 <= clip_low < 1 and clip_high >= 0, got "
                         f"{clip_low}, {clip_high}")
    if clip_dual is not None and clip_dual <= 1:
        raise ValueError(f"grpo_loss: clip_dual must be > 1, got {clip_dual}")
    loss, metrics, *_ = _grpo_loss(
        logp, old_logp, ref_logp if kl_type is not None else None, advantages, mask, entropy,
        float(clip_low), float(clip_high), None if clip_dual is None else float(clip_dual),
        kl_type, float(kl_coef), float(entropy_coef), agg, backend)
    return loss, dict(zip(_METRICS, metrics.unbind(0)))
