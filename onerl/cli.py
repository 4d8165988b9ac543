"""The ``onerl`` command.

    onerl train [--recipe toy] [--ablation NAME] [--config FILE.yaml] [--out DIR] [--resume]
                [section.key=value ...]
    torchrun --nproc-per-node N -m onerl train ...      (FSDP2 across N processes)
    onerl plot RUN_DIR              PNG curves of a run
    onerl selfcheck                 kernels vs their references on every visible device (JSON)
    onerl eval MODEL [MORE ...] --data DIR [--benchmarks math500,aime24,...] [--out DIR]
                                    benchmark scores (paper protocol), per-sample JSONL + summary
    onerl select --history acc.json --rank 1 [--pool pool.jsonl --out chosen.jsonl]
                                    pick pi_j by historical accuracy variance
    onerl report RUN_DIR            RUN_DIR/report.md: eval table, best step, curves
    onerl plan --recipe NAME --gpus N --gpu-mem GB [section.key=value ...]
                                    does the recipe fit? memory per GPU, suggested budgets
    onerl recipes                   the named recipes and ablation switches

``onerl train`` with no arguments runs the toy recipe: 1-shot RLVR on one problem of onerl's
toy math world, with the tiny model shipped in the package, on a CPU in minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _train(args: argparse.Namespace) -> int:
    from .config import ConfigError, build

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"trainer.out_dir={args.out}")
    try:
        cfg = build(args.recipe, args.config, overrides, args.ablation)
    except ConfigError as e:
        print(f"onerl: {e}", file=sys.stderr)
        return 2
    from .trainer import make_trainer

    t0 = time.time()
    trainer = make_trainer(cfg, resume=args.resume)
    rows = trainer.run()
    trainer.dist.close()
    if not trainer.dist.main:
        return 0
    from .plot import plot_run
    from .report import summarize

    summary = summarize(rows, time.time() - t0)
    out = trainer.out
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    png = plot_run(out)
    print(f"\n{summary['table']}\nmetrics: {out / 'metrics.jsonl'}\nplots:   {png}\n"
          f"summary: {out / 'summary.json'}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    print(plot_run(args.run_dir, args.output))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .plan import main as plan_main

    return plan_main(args)


def _recipes(args: argparse.Namespace) -> int:
    from .recipes import describe

    print(describe())
    return 0


def _selfcheck(args: argparse.Namespace) -> int:
    from onerl_kernels.__main__ import main as kernels_main

    return kernels_main(["--self-check"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="onerl", description="1-shot RLVR: kernels and trainer")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("train", help="run 1-shot RLVR (default: the toy recipe on a CPU)")
    p.add_argument("--recipe", default="toy", help="named recipe (default: toy; see onerl recipes)")
    p.add_argument("--ablation", default="", help="a Table 5 ablation switch (see onerl recipes)")
    p.add_argument("--config", default=None, help="YAML file of section.key values")
    p.add_argument("--out", default=None, help="run folder (trainer.out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.set_defaults(func=_train)
    p = sub.add_parser("plot", help="draw PNG curves of a run")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None)
    p.set_defaults(func=_plot)
    p = sub.add_parser("selfcheck", help="run every kernel against its reference (JSON report)")
    p.set_defaults(func=_selfcheck)
    p = sub.add_parser("plan", help="does a recipe fit on N GPUs? memory per GPU and budgets")
    p.add_argument("--recipe", default="toy")
    p.add_argument("--ablation", default="", help="a Table 5 ablation switch")
    p.add_argument("--config", default=None, help="YAML file of section.key values")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-mem", type=float, default=80.0, help="GB per GPU (default 80)")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.set_defaults(func=_plan)
    p = sub.add_parser("recipes", help="list the named recipes and the ablation switches")
    p.set_defaults(func=_recipes)
    from . import eval_cli, report_md, select  # light modules: heavy imports stay in handlers

    eval_cli.add_parser(sub)
    select.add_parser(sub)
    report_md.add_parser(sub)
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like ``ap.parse_args``, but ``section.key=value`` overrides may also follow options
    (``onerl train --out DIR optim.lr=1e-5``), which argparse alone rejects."""
    args, extra = ap.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x]
    if extra and (bad or not hasattr(args, "overrides")):
        ap.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = parse(ap, argv)
    if not hasattr(args, "func"):  # bare `onerl`: the main job
        args = parse(ap, ["train", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
