"""sample: onerl's fused sampler vs multi-pass torch sampling (and FlashInfer when importable).

    python benchmarks/bench_sample.py [--device cpu|cuda] [--json out.json]

GPU: batch 1024 x vocab 151936 (Qwen2.5), fp32 and bf16 logits, T = 0.6 with top-k/top-p off
(the paper's setting) and with top-k 50 + top-p 0.9. CPU: 64 x 2048 (the engine benchmark's CPU
vocabulary) and 16 x 32000, fp32. "torch multi-pass" is what an engine without a fused sampler
does: logits / T -> softmax -> (sort -> cumsum -> mask -> softmax) -> multinomial, then
log_softmax + gather for the token's log-prob. The last line is JSON; the design target is
<= 0.15 ms for 1024 x 151936 on an H100.
"""
from __future__ import annotations

import json

import torch
from harness import measure, onerl_summary, parse_args, report

from onerl_kernels import sample


def torch_multipass(logits, t, k, p, truncate: bool):
    z = logits.float() / t[:, None]
    if truncate:
        zs, idx = z.sort(dim=-1, descending=True)
        ps = zs.softmax(-1)
        drop = (ps.cumsum(-1) - ps) >= p[:, None]
        drop |= torch.arange(z.shape[1], device=z.device)[None] >= k[:, None]
        choice = torch.multinomial(zs.masked_fill(drop, float("-inf")).softmax(-1), 1)
        tok = idx.gather(1, choice)
    else:
        tok = torch.multinomial(z.softmax(-1), 1)
    return tok[:, 0], z.log_softmax(-1).gather(1, tok)[:, 0]


def flashinfer_fn(logits, t, k, p, truncate: bool):
    try:
        import flashinfer.sampling as fs
        z = logits.float() / t[:, None]
        if truncate:
            fn = lambda: fs.top_k_top_p_sampling_from_logits(z, k.int(), p)  # noqa: E731
        else:
            fn = lambda: fs.sampling_from_logits(z)  # noqa: E731
        fn()
        return fn
    except Exception as e:  # noqa: BLE001 - any failure just drops the baseline
        print(f"flashinfer unavailable: {type(e).__name__}: {str(e)[:120]}")
        return None


def main():
    args = parse_args(__doc__)
    dev = args.device
    cuda = dev.startswith("cuda")
    if cuda:
        shapes = [(1024, 151936, torch.float32), (1024, 151936, torch.bfloat16)]
    else:
        shapes = [(64, 2048, torch.float32), (16, 32000, torch.float32)]
    repeats = args.repeats or (50 if cuda else 10)
    rows, extra = [], {}
    for B, V, dtype in shapes:
        g = torch.Generator().manual_seed(0)
        logits = (torch.randn(B, V, generator=g) * 4).to(device=dev, dtype=dtype)
        t = torch.full((B,), 0.6, device=dev)
        seeds = torch.arange(B, device=dev)
        pos = torch.full((B,), 100, device=dev)
        for truncate in (False, True):
            k = torch.full((B,), 50 if truncate else 0, dtype=torch.long, device=dev)
            p = torch.full((B,), 0.9 if truncate else 1.0, device=dev)
            name = f"{B}x{V} {str(dtype)[6:]}{' k50p.9' if truncate else ''}"
            variants = [("torch multi-pass", lambda: torch_multipass(logits, t, k, p, truncate)),
                        ("onerl", lambda: sample(logits, t, k, p, seeds, pos))]
            if cuda:
                fi = flashinfer_fn(logits, t, k, p, truncate)
                if fi is not None:
                    variants.append(("flashinfer", fi))
            for vname, fn in variants:
                rows.append({"shape": name, "variant": vname, **measure(fn, dev, repeats)})
    out = report("sample", rows, "torch multi-pass", args, extra)
    print(json.dumps(onerl_summary("sample", dev, out["rows"], {
        b: b for b in ("torch multi-pass", "flashinfer")})))


if __name__ == "__main__":
    main()
