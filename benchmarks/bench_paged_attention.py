"""paged_attention (decode): onerl vs dense attention over gathered K/V (and FlashInfer when
importable).

    python benchmarks/bench_paged_attention.py [--device cpu|cuda] [--json out.json]

GPU: Qwen2.5-Math-1.5B attention (12 q heads, 2 kv heads, head_dim 128, bf16, block 16) at
batch 32 and 1024, kv_len 512 and 3072 (every sequence that long; shuffled block tables).
CPU: the engine benchmark's CPU model (4 q heads, 2 kv heads, head_dim 64, fp32) at batch 8 and
64, kv_len 256. Variants: "gather+sdpa" (index the blocks into dense [B, Hkv, L, D] K/V, then
scaled_dot_product_attention; the baseline), "sdpa (pre-gathered)" (the SDPA call alone on
already dense K/V: a floor no paged layout pays), "per-seq loop" (CPU: one SDPA per sequence),
"onerl" (auto backend: Triton on GPU, the C++ twin on CPU), "onerl torch path" (CPU: the
batched gather + SDPA path), "flashinfer" (GPU, when installed). The last line is JSON with
onerl's time and its speedups.
"""
from __future__ import annotations

import json

import torch
from harness import measure, onerl_summary, parse_args, report

from onerl_kernels import paged_attention
from onerl_kernels.paged_attention import _decode_torch


def make(B, L, Hq, Hkv, D, bs, dtype, device):
    g = torch.Generator().manual_seed(0)
    nblk = -(-L // bs)
    nb = B * nblk + 1
    kc = torch.randn(nb, bs, Hkv, D, generator=g).to(device=device, dtype=dtype)
    vc = torch.randn(nb, bs, Hkv, D, generator=g).to(device=device, dtype=dtype)
    tables = torch.randperm(nb, generator=g)[:B * nblk].view(B, nblk).to(torch.int32).to(device)
    q = torch.randn(B, Hq, D, generator=g).to(device=device, dtype=dtype)
    sl = torch.full((B,), L, dtype=torch.int32, device=device)
    return q, kc, vc, tables, sl


def flashinfer_fn(q, kc, vc, tables, sl, scale):
    """A FlashInfer decode wrapper over the same cache, or None when unavailable."""
    try:
        import flashinfer
        B, nblk = tables.shape
        bs = kc.shape[1]
        ws = torch.empty(128 * 2**20, dtype=torch.uint8, device=q.device)
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
        indptr = torch.arange(0, B * nblk + 1, nblk, dtype=torch.int32, device=q.device)
        last = ((sl - 1) % bs + 1).to(torch.int32)
        w.plan(indptr, tables.reshape(-1), last, q.shape[1], kc.shape[2], q.shape[2], bs,
               q_data_type=q.dtype, kv_data_type=kc.dtype, sm_scale=scale)
        w.run(q, (kc, vc))
        return lambda: w.run(q, (kc, vc))
    except Exception as e:  # noqa: BLE001 - any failure just drops the baseline
        print(f"flashinfer unavailable: {type(e).__name__}: {str(e)[:120]}")
        return None


def main():
    args = parse_args(__doc__)
    dev = args.device
    cuda = dev.startswith("cuda")
    if cuda:
        heads, dtype, bs = (12, 2, 128), torch.bfloat16, 16
        shapes = [(32, 512), (32, 3072), (1024, 512), (1024, 3072)]
    else:
        heads, dtype, bs = (4, 2, 64), torch.float32, 16
        shapes = [(8, 256), (64, 256)]
    repeats = args.repeats or (50 if cuda else 20)
    Hq, Hkv, D = heads
    scale = D ** -0.5
    rows, extra = [], {}
    for B, L in shapes:
        name = f"B{B} L{L}"
        q, kc, vc, tables, sl = make(B, L, Hq, Hkv, D, bs, dtype, dev)
        kd = kc[tables.long()].reshape(B, -1, Hkv, D)[:, :L].transpose(1, 2).contiguous()
        vd = vc[tables.long()].reshape(B, -1, Hkv, D)[:, :L].transpose(1, 2).contiguous()
        qd = q.view(B, Hkv, Hq // Hkv, D)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        variants = [
            ("gather+sdpa", lambda: _decode_torch(q, kc, vc, tables, sl, scale)),
            ("sdpa (pre-gathered)", lambda: sdpa(qd, kd, vd, scale=scale)),
            ("onerl", lambda: paged_attention(q, kc, vc, tables, sl, scale)),
        ]
        if not cuda:
            variants.append(("onerl torch path", lambda: paged_attention(
                q, kc, vc, tables, sl, scale, backend="torch")))
            variants.append(("per-seq loop", lambda: torch.stack(
                [sdpa(qd[b], kd[b], vd[b], scale=scale) for b in range(B)])))
        else:
            fi = flashinfer_fn(q, kc, vc, tables, sl, scale)
            if fi is not None:
                variants.append(("flashinfer", fi))
        want = sdpa(qd, kd, vd, scale=scale).reshape(B, Hq, D).float()
        err = (paged_attention(q, kc, vc, tables, sl, scale).float() - want).abs().max().item()
        extra[f"max_abs_diff_vs_sdpa[{name}]"] = err
        for vname, fn in variants:
            rows.append({"shape": name, "variant": vname, **measure(fn, dev, repeats)})
        ours = [r for r in rows if r["shape"] == name and r["variant"] == "onerl"][0]
        kv_bytes = 2 * B * L * Hkv * D * kc.element_size()
        extra[f"onerl_GBps[{name}]"] = round(kv_bytes / ours["ms"] / 1e6, 1)
        del kd, vd
    out = report("paged_attention decode", rows, "gather+sdpa", args, extra)
    print(json.dumps(onerl_summary("paged_attention", dev, out["rows"], {
        b: b for b in ("gather+sdpa", "sdpa (pre-gathered)", "per-seq loop", "flashinfer",
                       "onerl torch path")}, extra)))


if __name__ == "__main__":
    main()
