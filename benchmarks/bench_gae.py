"""gae_advantages: a verl-style loop over the T columns in eager torch vs onerl (the Triton
kernel on GPU; on CPU the torch twin), for one 1-shot PPO step (1024 responses x 3072 tokens,
right-padded) at gamma = lam = 1 and at gamma 0.99 / lam 0.95.

    python benchmarks/bench_gae.py [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import json

import torch
from harness import cuda_launches, measure, onerl_summary, parse_args, report

from onerl_kernels import gae_advantages


def column_loop(r, v, mask, gamma, lam):
    """verl's compute_gae_advantage_return (masked values, one step per column)."""
    v = v * mask
    last, out = torch.zeros_like(r[:, 0]), []
    for t in reversed(range(r.shape[1])):
        nv = v[:, t + 1] if t < r.shape[1] - 1 else 0.0
        last = r[:, t] + gamma * nv - v[:, t] + gamma * lam * last
        out.append(last)
    adv = torch.stack(out[::-1], 1)
    return adv * mask, (adv + v) * mask


def main():
    args = parse_args(__doc__)
    dev = args.device
    repeats = args.repeats or (20 if dev.startswith("cuda") else 3)
    B, T = (1024, 3072) if dev.startswith("cuda") else (256, 1024)
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lens[:, None]).to(dev)
    r = torch.zeros(B, T)
    r[torch.arange(B), lens - 1] = 1.0
    r, v = r.to(dev), torch.randn(B, T, generator=g).to(dev)
    rows, extra = [], {}
    for name, (gamma, lam) in (("gamma=lam=1", (1.0, 1.0)), ("0.99/0.95", (0.99, 0.95))):
        for vname, fn in (("eager column loop", lambda: column_loop(r, v, mask, gamma, lam)),
                          ("onerl", lambda: gae_advantages(r, v, mask, gamma, lam))):
            rows.append({"shape": f"{B}x{T} {name}", "variant": vname,
                         **measure(fn, dev, repeats, warmup=1)})
        if dev.startswith("cuda"):
            extra[f"launches_onerl[{name}]"] = cuda_launches(
                lambda: gae_advantages(r, v, mask, gamma, lam))
    out = report("gae_advantages", rows, "eager column loop", args, extra)
    print(json.dumps(onerl_summary("gae_advantages", dev, out["rows"],
                                   {"loop": "eager column loop"}, extra)))


if __name__ == "__main__":
    main()
