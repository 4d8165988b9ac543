"""group_advantages: eager torch reference vs torch.compile'd reference vs onerl (C++ CPU twin
on CPU, CUDA kernel on GPU), for 1024 responses in groups of 8 (one 1-shot step) and 1M.

    python benchmarks/bench_advantages.py [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import json

import torch
from harness import cuda_launches, measure, onerl_summary, parse_args, report

from onerl_kernels import group_advantages, reference


def main():
    args = parse_args(__doc__)
    dev = args.device
    repeats = args.repeats or (200 if dev.startswith("cuda") else 50)
    compiled_ref = torch.compile(reference.group_advantages)
    rows, extra = [], {}
    for name, n in (("1024 (128x8)", 1024), ("1M (131072x8)", 1 << 20)):
        r = (torch.rand(n, device=dev) < 0.3).float()
        for vname, fn in (
            ("eager reference", lambda: reference.group_advantages(r, 8)),
            ("compiled reference", lambda: compiled_ref(r, 8)),
            ("onerl", lambda: group_advantages(r, 8)),
        ):
            rows.append({"shape": name, "variant": vname, **measure(fn, dev, repeats)})
        if dev.startswith("cuda"):
            extra[f"launches_onerl[{name}]"] = cuda_launches(lambda: group_advantages(r, 8))
            extra[f"launches_eager[{name}]"] = cuda_launches(lambda: reference.group_advantages(r, 8))
    out = report("group_advantages", rows, "eager reference", args, extra)
    print(json.dumps(onerl_summary("group_advantages", dev, out["rows"],
                                   {"eager": "eager reference"}, extra)))


if __name__ == "__main__":
    main()
