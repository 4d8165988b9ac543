"""``python -m onerl_kernels``: build and backend introspection as JSON.

``--self-check`` also runs every op on random inputs on each visible device and compares it with
the torch reference (exit status 1 on a mismatch).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from . import __version__, _backend
from .selfcheck import OPS, self_check


def devices() -> list[torch.device]:
    devs = [torch.device("cpu")]
    if torch.cuda.is_available():
        devs += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return devs


def report() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "onerl_kernels": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "triton_interpreter": _backend.triton_interpreting(),
        "extension": _backend.build_info(),
        "devices": [str(d) if d.type == "cpu" else f"{d}: {torch.cuda.get_device_name(d)}"
                    for d in devices()],
        "backends": {op: {str(d): _backend.resolve(op, "auto", d, choices) for d in devices()}
                     for op, choices in OPS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m onerl_kernels", description=__doc__)
    ap.add_argument("--self-check", action="store_true",
                    help="run every op against its reference on each device")
    args = ap.parse_args(argv)
    info = report()
    ok = True
    if args.self_check:
        info["self_check"], ok = self_check(devices())
    print(json.dumps(info, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
