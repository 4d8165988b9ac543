"""grpo_loss forward+backward: eager torch reference vs torch.compile'd reference vs onerl.

    python benchmarks/bench_grpo_loss.py [--device cpu|cuda] [--json out.json]

GPU shapes: 24k tokens (8 x 3000, one micro-batch of the paper's recipe) and 3.1M tokens
(1024 x 3072, a whole 1-shot step); CPU: small shapes. Paper settings: on-policy (old = logp),
k3 KL 0.001, entropy bonus 0.001, token-mean. The last line is JSON.
"""
from __future__ import annotations

import json

import torch
from harness import cuda_launches, measure, onerl_summary, parse_args, report

from onerl_kernels import grpo_loss, reference

KW = dict(kl_type="k3", kl_coef=0.001, entropy_coef=0.001, agg="token-mean")


def inputs(B, T, device):
    g = torch.Generator(device=device).manual_seed(0)
    lp = (-torch.rand(B, T, device=device, generator=g) * 3).requires_grad_()
    ent = (torch.rand(B, T, device=device, generator=g) * 2).requires_grad_()
    ref = lp.detach() + 0.1 * torch.randn(B, T, device=device, generator=g)
    adv = torch.randn(B, device=device, generator=g)
    mask = torch.rand(B, T, device=device, generator=g) > 0.2
    return lp, ent, ref, adv, mask


def main():
    args = parse_args(__doc__)
    dev = args.device
    shapes = [("24k tok (8x3000)", 8, 3000), ("3.1M tok (1024x3072)", 1024, 3072)] \
        if dev.startswith("cuda") else [("4k tok (8x512)", 8, 512), ("64k tok (64x1024)", 64, 1024)]
    repeats = args.repeats or (50 if dev.startswith("cuda") else 10)
    compiled_ref = torch.compile(reference.grpo_loss)
    rows, extra = [], {}
    for name, B, T in shapes:
        lp, ent, ref, adv, mask = inputs(B, T, dev)

        def variant(fn):
            def step():
                loss = fn()
                loss.backward()
                lp.grad = ent.grad = None
            return step

        eager = variant(lambda: reference.grpo_loss(lp, None, ref, adv, mask, ent, **KW)[0])
        comp = variant(lambda: compiled_ref(lp, None, ref, adv, mask, ent, **KW)[0])
        ours = variant(lambda: grpo_loss(lp, None, ref, adv, mask, ent, **KW)[0])
        for vname, fn in (("eager reference", eager), ("compiled reference", comp),
                          ("onerl", ours)):
            rows.append({"shape": name, "variant": vname, **measure(fn, dev, repeats)})
        if dev.startswith("cuda"):
            loss = grpo_loss(lp, None, ref, adv, mask, ent, **KW)[0]
            extra[f"launches_fwd[{name}]"] = cuda_launches(
                lambda: grpo_loss(lp, None, ref, adv, mask, ent, **KW))
            extra[f"launches_bwd[{name}]"] = cuda_launches(
                lambda: torch.autograd.grad(loss, [lp, ent], retain_graph=True))
            extra[f"launches_eager_fwd_bwd[{name}]"] = cuda_launches(eager)
    out = report("grpo_loss fwd+bwd", rows, "eager reference", args, extra)
    print(json.dumps(onerl_summary("grpo_loss", dev, out["rows"], {
        "eager": "eager reference", "compiled": "compiled reference"}, extra)))


if __name__ == "__main__":
    main()
