"""A quick end-to-end check of every op against its torch reference on random inputs, on each
device, with the backend ``auto`` picks there. Used by ``python -m onerl_kernels --self-check``."""
from __future__ import annotations

import torch

from . import reference
from .advantages import BACKENDS as ADV_BACKENDS, group_advantages
from .grpo_loss import BACKENDS as LOSS_BACKENDS, grpo_loss

OPS = {"group_advantages": ADV_BACKENDS, "grpo_loss": LOSS_BACKENDS}


def _check_advantages(dev: torch.device) -> float:
    r = (torch.rand(1024, device=dev) < 0.4).float()
    got = group_advantages(r, 8)
    want = reference.group_advantages(r.double().cpu(), 8)
    return (got.double().cpu() - want).abs().max().item()


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


def self_check(devs) -> tuple[dict, bool]:
    results, ok = {}, True
    for dev in devs:
        for name, fn in (("group_advantages", _check_advantages), ("grpo_loss", _check_grpo_loss)):
            err = fn(dev)
            good = err < 1e-4
            ok &= good
            results[f"{name}@{dev}"] = {"max_abs_err": err, "ok": good}
    return results, ok
