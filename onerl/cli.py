"""The ``onerl`` command.

    onerl selfcheck                 kernels vs their references on every visible device (JSON)
"""
from __future__ import annotations

import argparse
import sys


def _selfcheck(args: argparse.Namespace) -> int:
    from onerl_kernels.__main__ import main as kernels_main

    return kernels_main(["--self-check"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="onerl", description="1-shot RLVR: kernels and trainer")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("selfcheck", help="run every kernel against its reference (JSON report)")
    p.set_defaults(func=_selfcheck)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not hasattr(args, "func"):
        ap.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
