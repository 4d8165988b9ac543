"""logprobs_entropy (fused LM head -> per-token log p(target) and entropy): speed and peak memory.

    python benchmarks/bench_logprobs.py [--device cpu|cuda] [--json out.json]

Variants: eager PyTorch (logits = h @ W.T; log_softmax; gather; entropy), torch.compile of the same,
torch's F.linear_cross_entropy (cross-entropy only; when this torch has it), Liger-Kernel's fused
linear cross-entropy (cross-entropy only) and verl's fused linear log-prob/entropy when they import
(else "not installed"), and onerl. T = 0.6. "fwd" runs under no_grad (old/reference log-probs);
"fwd+bwd" backpropagates sum(g1 logp + g2 entropy) to hidden and weight.

GPU (bf16): M = 24000, H = 1536, V = 151936 and M = 4096, H = 3584, V = 152064; CUDA-event medians;
peak memory above the inputs (max_memory_allocated), and for fwd+bwd also the "extra" memory
beyond dX and dW. A variant that runs out of memory is reported as such.
CPU (fp32, 2 threads): onerl's chunked path vs eager, each run in a fresh child process whose
peak RSS growth (ru_maxrss minus the RSS once the inputs exist) is its peak memory; forward at
M = 4096, H = 1536, V = 151936 and forward+backward at M = --m-bwd (512 by default, so the run
stays within a few minutes; --m-bwd 4096 for the full shape, ~15 GB for eager).
The last line is JSON; on CPU it holds peak_mem_ratio_vs_eager and time_ratio_vs_eager (forward
at M = 4096) and the same ratios for forward+backward.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402
from harness import measure, parse_args  # noqa: E402

from onerl_kernels import logprobs_entropy  # noqa: E402

T = 0.6


def eager(h, w, y):
    logits = (h @ w.T).float() / T
    lsm = torch.log_softmax(logits, -1)
    logp = lsm.gather(-1, y[:, None]).squeeze(-1)
    return logp, -(lsm.exp() * lsm).sum(-1)


def onerl(h, w, y):
    return logprobs_entropy(h, w, y, temperature=T)


def _optional_variants() -> dict:
    """name -> fn(h, w, y) returning (logp, entropy or None), or a string saying why not."""
    out = {}
    if hasattr(torch.nn.functional, "linear_cross_entropy"):
        def torch_lce(h, w, y):
            return -torch.nn.functional.linear_cross_entropy(h / T, w, y, reduction="none"), None
        out["torch F.linear_cross_entropy (CE only)"] = torch_lce
    else:
        out["torch F.linear_cross_entropy (CE only)"] = "not in this torch"
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        def liger(h, w, y):
            return -liger_fused_linear_cross_entropy(h / T, w, y, reduction="none"), None
        out["liger FLCE (CE only)"] = liger
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        out["liger FLCE (CE only)"] = f"not installed ({type(e).__name__})"
    try:
        from verl.utils.kernel.linear_cross_entropy import linear_cross_entropy

        def verl(h, w, y):
            r = linear_cross_entropy(h, w, y, T, "none")
            return (r[0], r[1]) if isinstance(r, (tuple, list)) else (r, None)
        out["verl linear_cross_entropy"] = verl
    except Exception as e:  # noqa: BLE001
        out["verl linear_cross_entropy"] = f"not installed ({type(e).__name__})"
    return out


def _inputs(M, H, V, dtype, device, seed=0):
    """In place, with no temporaries (they would count in a child's peak RSS)."""
    g = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(M, H, device=device, generator=g).mul_(0.5).to(dtype).requires_grad_()
    w = torch.randn(V, H, device=device, generator=g).mul_(0.05).to(dtype).requires_grad_()
    y = torch.randint(0, V, (M,), device=device, generator=g)
    g1, g2 = torch.randn(M, device=device, generator=g), torch.randn(M, device=device, generator=g)
    return h, w, y, g1, g2


def _steps(fn, h, w, y, g1, g2):
    def fwd():
        with torch.no_grad():
            fn(h, w, y)

    def fwd_bwd():
        lp, ent = fn(h, w, y)
        loss = (lp.float() * g1).sum()
        if ent is not None and ent.numel():
            loss = loss + (ent.float() * g2).sum()
        loss.backward()
        h.grad = w.grad = None
    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


# ----------------------------------------------------------------------------- GPU


def run_gpu(args) -> dict:
    dev, repeats, t0 = args.device, args.repeats or 10, time.perf_counter()
    shapes = [(24000, 1536, 151936), (4096, 3584, 152064)]
    variants = {"onerl": onerl, "eager": eager}
    if not args.skip_compile:
        variants["torch.compile(eager)"] = torch.compile(eager, dynamic=False)
    variants.update(_optional_variants())
    rows = []
    print(f"{'shape':<22}{'variant':<40}{'mode':<9}{'ms':>10}{'peak MB':>10}{'extra MB':>10}")
    for M, H, V in shapes:
        h, w, y, g1, g2 = _inputs(M, H, V, torch.bfloat16, dev)
        grads_mb = (h.numel() + w.numel()) * h.element_size() / 2**20
        shape = f"M{M} H{H} V{V}"
        for name, fn in variants.items():
            for mode, step in (_steps(fn, h, w, y, g1, g2).items() if callable(fn) else
                               [("fwd", None), ("fwd+bwd", None)]):
                row = {"shape": shape, "variant": name, "mode": mode}
                if not callable(fn):
                    row["status"] = fn
                elif time.perf_counter() - t0 > args.budget_s:
                    row["status"] = "skipped (time budget)"
                else:
                    try:
                        row.update(measure(step, dev, repeats, warmup=2))
                        if mode == "fwd+bwd":
                            row["extra_mb"] = round(row["peak_mb"] - grads_mb, 1)
                    except torch.cuda.OutOfMemoryError:
                        row["status"] = "out of memory"
                    except Exception as e:  # noqa: BLE001 - a baseline's failure is a result
                        row["status"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
                    h.grad = w.grad = None
                    torch.cuda.empty_cache()
                rows.append(row)
                ms = f"{row['ms']:.2f}" if "ms" in row else row["status"]
                print(f"{shape:<22}{name:<40}{mode:<9}{ms:>10}{str(row.get('peak_mb', '')):>10}"
                      f"{str(row.get('extra_mb', '')):>10}", flush=True)
        del h, w, y, g1, g2
        torch.cuda.empty_cache()
    summary = {"op": "logprobs_entropy", "device": torch.cuda.get_device_name()}
    for r in rows:
        if r["variant"] == "onerl" and "ms" in r:
            key = f"[{r['shape']} {r['mode']}]"
            summary["onerl_ms" + key] = round(r["ms"], 3)
            summary["onerl_peak_mb" + key] = r["peak_mb"]
            if "extra_mb" in r:
                summary["onerl_extra_mb" + key] = r["extra_mb"]
            for b in rows:
                if b["shape"] == r["shape"] and b["mode"] == r["mode"] and "ms" in b \
                        and b["variant"] != "onerl":
                    summary[f"speedup_vs[{b['variant']}]{key}"] = round(b["ms"] / r["ms"], 3)
    return {"rows": rows, "summary": summary}


# ----------------------------------------------------------------------------- CPU


def _rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(spec: str) -> None:
    """Run one variant once in this fresh process; print its time and peak RSS growth."""
    cfg = json.loads(spec)
    torch.set_num_threads(cfg["threads"])
    fn = {"eager": eager, "onerl": onerl}[cfg["variant"]]
    small = _inputs(64, 64, 512, torch.float32, "cpu")  # warm up BLAS / kernels, not timed
    _steps(fn, *small)[cfg["mode"]]()
    h, w, y, g1, g2 = _inputs(cfg["M"], cfg["H"], cfg["V"], torch.float32, "cpu")
    step = _steps(fn, h, w, y, g1, g2)[cfg["mode"]]
    base = _rss_bytes()
    reset = _reset_peak_rss()
    t = time.perf_counter()
    step()
    ms = (time.perf_counter() - t) * 1e3
    peak = _rss_bytes("VmHWM") if reset else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    grads = (h.numel() + w.numel()) * 4 if cfg["mode"] == "fwd+bwd" else 0
    print(json.dumps({"ms": ms, "peak_mb": (peak - base) / 2**20,
                      "extra_mb": (peak - base - grads) / 2**20}))


def run_cpu(args) -> dict:
    H, V = 1536, 151936
    rows, summary = [], {"op": "logprobs_entropy", "device": "cpu", "threads": args.threads}
    for mode, M in (("fwd", args.m_fwd), ("fwd+bwd", args.m_bwd)):
        got = {}
        for variant in ("onerl", "eager"):
            spec = json.dumps(dict(variant=variant, mode=mode, M=M, H=H, V=V,
                                   threads=args.threads))
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec],
                               capture_output=True, text=True, env=os.environ)
            if p.returncode != 0:
                raise RuntimeError(f"{variant} {mode} failed:\n{p.stderr[-2000:]}")
            got[variant] = json.loads(p.stdout.strip().splitlines()[-1])
            row = {"shape": f"M{M} H{H} V{V}", "variant": variant, "mode": mode, **got[variant]}
            rows.append(row)
            print(f"{row['shape']:<24}{variant:<8}{mode:<9}{row['ms']:>11.0f} ms"
                  f"{row['peak_mb']:>10.0f} MB peak{row['extra_mb']:>10.0f} MB extra", flush=True)
        tag = "" if mode == "fwd" else "fwd_bwd_"
        o, e = got["onerl"], got["eager"]
        summary[f"{tag}M"] = M
        summary[f"{tag}peak_mem_ratio_vs_eager"] = round(o["peak_mb"] / e["peak_mb"], 4)
        summary[f"{tag}time_ratio_vs_eager"] = round(o["ms"] / e["ms"], 3)
        summary[f"{tag}onerl_peak_mb"] = round(o["peak_mb"], 1)
        summary[f"{tag}eager_peak_mb"] = round(e["peak_mb"], 1)
        if mode == "fwd+bwd":
            summary["fwd_bwd_extra_mem_ratio_vs_eager"] = round(o["extra_mb"] / e["extra_mb"], 4)
    return {"rows": rows, "summary": summary}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2])

    def extra(ap):
        ap.add_argument("--m-fwd", type=int, default=4096, help="CPU: M of the forward run")
        ap.add_argument("--m-bwd", type=int, default=512, help="CPU: M of the fwd+bwd run")
        ap.add_argument("--skip-compile", action="store_true", help="GPU: no torch.compile")
        ap.add_argument("--budget-s", type=float, default=240.0,
                        help="GPU: skip the remaining variants after this many seconds")
        ap.set_defaults(threads=2)
    args = parse_args(__doc__, extra)
    out = run_gpu(args) if args.device.startswith("cuda") else run_cpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out["summary"]))


if __name__ == "__main__":
    main()
