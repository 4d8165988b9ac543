"""A quick end-to-end check of every op against its torch reference on random inputs, on each
device, with the backend ``auto`` picks there. Used by ``python -m onerl_kernels --self-check``."""
from __future__ import annotations

import torch

from . import reference
from .advantages import BACKENDS as ADV_BACKENDS, group_advantages
from .gae import BACKENDS as GAE_BACKENDS, gae_advantages
from .grpo_loss import BACKENDS as LOSS_BACKENDS, grpo_loss
from .logprobs import BACKENDS as LOGPROBS_BACKENDS, logprobs_entropy
from .paged_attention import BACKENDS as ATTN_BACKENDS, paged_attention
from .paged_kv import BACKENDS as KV_BACKENDS, write_kv
from .sample import BACKENDS as SAMPLE_BACKENDS, sample

OPS = {"group_advantages": ADV_BACKENDS, "gae_advantages": GAE_BACKENDS,
       "grpo_loss": LOSS_BACKENDS, "logprobs_entropy": LOGPROBS_BACKENDS, "write_kv": KV_BACKENDS,
       "paged_attention": ATTN_BACKENDS, "sample": SAMPLE_BACKENDS}


def _check_advantages(dev: torch.device) -> float:
    r = (torch.rand(1024, device=dev) < 0.4).float()
    got = group_advantages(r, 8)
    want = reference.group_advantages(r.double().cpu(), 8)
    return (got.double().cpu() - want).abs().max().item()


def _check_gae(dev: torch.device) -> float:
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(8, 40, generator=g), torch.randn(8, 40, generator=g)
    mask = torch.rand(8, 40, generator=g) > 0.2
    got = gae_advantages(r.to(dev), v.to(dev), mask.to(dev), 0.99, 0.95)
    want = reference.gae_advantages(r.double(), v.double(), mask, 0.99, 0.95)
    return max((a.double().cpu() - b).abs().max().item() for a, b in zip(got, want))


def _check_grpo_loss(dev: torch.device) -> float:
    B, T = 16, 300
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(B, T, generator=g) * 3).to(dev).requires_grad_()
    old = (lp.detach() + 0.1 * torch.randn(B, T, generator=g).to(dev))
    ref = (lp.detach() + 0.1 * torch.randn(B, T, generator=g).to(dev))
    adv, mask = torch.randn(B, generator=g).to(dev), torch.rand(B, T, generator=g).to(dev) > 0.3
    loss, _ = grpo_loss(lp, old, ref, adv, mask, kl_coef=0.01)
    (glp,) = torch.autograd.grad(loss, lp)
    lp64 = lp.detach().double().cpu().requires_grad_()
    want, _ = reference.grpo_loss(lp64, old.double().cpu(), ref.double().cpu(),
                                  adv.double().cpu(), mask.cpu(), kl_coef=0.01)
    (want_g,) = torch.autograd.grad(want, lp64)
    return max(abs(loss.item() - want.item()), (glp.double().cpu() - want_g).abs().max().item())


def _check_logprobs(dev: torch.device) -> float:
    """logp, entropy and both gradients (fp32, T = 0.6, an odd vocab, one ignored row)."""
    M, H, V = 24, 64, 1031
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(M, H, generator=g), torch.randn(V, H, generator=g) * 0.3
    y = torch.randint(0, V, (M,), generator=g)
    y[5] = -100
    gl, ge = torch.randn(M, generator=g), torch.randn(M, generator=g)
    hd, wd = h.to(dev).requires_grad_(), w.to(dev).requires_grad_()
    lp, ent = logprobs_entropy(hd, wd, y.to(dev), temperature=0.6)
    dh, dw = torch.autograd.grad((lp * gl.to(dev) + ent * ge.to(dev)).sum(), (hd, wd))
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    rl, re = reference.logprobs_entropy(h64, w64, y, 0.6)
    rh, rw = torch.autograd.grad((rl * gl.double() + re * ge.double()).sum(), (h64, w64))
    return max((a.detach().double().cpu() - b).abs().max().item()
               for a, b in ((lp, rl), (ent, re), (dh, rh), (dw, rw)))


def _check_paged(dev: torch.device) -> float:
    """write_kv into shuffled blocks (one slot skipped), then decode attention over them."""
    g = torch.Generator().manual_seed(0)
    B, L, Hkv, G, D, bs = 3, 37, 2, 6, 64, 16
    nb = B * 3 + 2
    tables = torch.randperm(nb, generator=g)[:B * 3].view(B, 3).to(torch.int32)
    pos = torch.arange(L)
    slots = (tables.long()[:, pos // bs] * bs + pos % bs).reshape(-1)
    slots[5] = -1
    k, v = torch.randn(2, B * L, Hkv, D, generator=g).unbind(0)
    kc, vc = torch.zeros(nb, bs, Hkv, D), torch.zeros(nb, bs, Hkv, D)
    reference.write_kv(k, v, kc, vc, slots)
    kd, vd = torch.zeros(nb, bs, Hkv, D, device=dev), torch.zeros(nb, bs, Hkv, D, device=dev)
    write_kv(k.to(dev), v.to(dev), kd, vd, slots.to(dev))
    err = max((kd.cpu() - kc).abs().max().item(), (vd.cpu() - vc).abs().max().item())
    q = torch.randn(B, Hkv * G, D, generator=g)
    sl = torch.tensor([37, 16, 1], dtype=torch.int32)
    want = reference.paged_attention(q.double(), kc.double(), vc.double(), tables, sl, 0.125)
    got = paged_attention(q.to(dev), kd, vd, tables.to(dev), sl.to(dev), 0.125)
    return max(err, (got.double().cpu() - want).abs().max().item())


def _check_sample(dev: torch.device) -> float:
    """Tokens equal the reference's (a mismatch counts 1), logp within tolerance."""
    g = torch.Generator().manual_seed(0)
    B, V = 8, 5003
    logits = torch.randn(B, V, generator=g) * 3
    t = torch.tensor([0.6, 0.0, 1.0, 0.6, 1e-3, 0.6, 1.3, 0.6])
    k = torch.tensor([0, 0, 1, 50, 0, 7, 0, 200])
    p = torch.tensor([1.0, 1.0, 1.0, 0.9, 1.0, 0.5, 0.3, 1.0])
    seeds, pos = torch.arange(B) * 7919, torch.arange(B) + 11
    want_t, want_lp = reference.sample(logits, t, k, p, seeds, pos)
    tok, lp = sample(*(x.to(dev) for x in (logits, t, k, p, seeds, pos)))
    return max(float((tok.cpu() != want_t).sum()), (lp.cpu() - want_lp).abs().max().item())


def self_check(devs) -> tuple[dict, bool]:
    results, ok = {}, True
    for dev in devs:
        for name, fn in (("group_advantages", _check_advantages), ("gae_advantages", _check_gae),
                         ("grpo_loss", _check_grpo_loss),
                         ("logprobs_entropy", _check_logprobs),
                         ("paged_kv+attention", _check_paged), ("sample", _check_sample)):
            err = fn(dev)
            good = err < 1e-4
            ok &= good
            results[f"{name}@{dev}"] = {"max_abs_err": err, "ok": good}
    return results, ok
