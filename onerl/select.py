"""``onerl select``: pick the 1-shot training example by its historical accuracy variance.

    onerl select --history acc.json --rank 1 [--method std|var|random] [--seed S]
                 [--pool pool.jsonl --out chosen.jsonl --repeat 128] [--show N]

The history file maps example ids to their per-epoch training accuracies,
``{"<id>": [acc_epoch_1, acc_epoch_2, ...], ...}``, logged while training on the whole pool.
Every example is scored by the population standard deviation of its list (``std``, ddof 0;
``var`` is its square and gives the same order; ``random`` draws a seeded random score), then
ranked by a stable descending sort: ties keep the key order of the JSON file. Rank j (1-based)
is the paper's pi_j. ``--rank`` takes one rank or a comma-separated list (``1,2,13``).

With ``--pool`` the chosen rows (matched on the pool's ``id`` field, or ``extra_info.index``) are
written to ``--out``, each repeated ``--repeat`` times (the paper fills its 128-prompt batch with
copies of the one example).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from .data import DataError, jsonl_records, row_id

METHODS = ("std", "var", "random")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``select`` on the ``onerl`` subcommand parser."""
    p = sub.add_parser("select", help="rank pool examples by historical accuracy variance")
    p.add_argument("--history", required=True, help="JSON {id: [per-epoch accuracy, ...]}")
    p.add_argument("--rank", default="1", help="rank(s) to choose, 1-based, e.g. 1 or 1,2,13")
    p.add_argument("--method", default="std", choices=METHODS)
    p.add_argument("--seed", type=int, default=0, help="seed of --method random")
    p.add_argument("--pool", default=None, help="JSONL of pool rows to copy the chosen ones from")
    p.add_argument("--out", default=None, help="JSONL to write the chosen rows to (with --pool)")
    p.add_argument("--repeat", type=int, default=128, help="copies of each chosen row (default 128)")
    p.add_argument("--show", type=int, default=0, help="also print the top N of the ranking")
    p.set_defaults(func=main)
    return p


def load_history(path: str | Path) -> dict[str, list[float]]:
    """The history file as an ordered {id: [accuracies]} dict; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"history file not found: {path}")
    try:
        hist = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(hist, dict) or not hist:
        raise DataError(f"{path}: expected a non-empty JSON object {{id: [accuracies]}}")
    for key, accs in hist.items():
        if not isinstance(accs, list) or not accs:
            raise DataError(f"{path}: id {key!r}: expected a non-empty list of accuracies")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in accs):
            raise DataError(f"{path}: id {key!r}: accuracies must be numbers")
    return hist


def scores(hist: dict[str, list[float]], method: str = "std", seed: int = 0) -> dict[str, float]:
    """The score of every id (higher ranks first)."""
    import numpy as np

    if method == "std":
        return {k: float(np.std(np.asarray(v, dtype=np.float64))) for k, v in hist.items()}
    if method == "var":
        return {k: float(np.var(np.asarray(v, dtype=np.float64))) for k, v in hist.items()}
    if method == "random":
        rng = random.Random(seed)
        return {k: rng.random() for k in hist}
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def rank(hist: dict[str, list[float]], method: str = "std", seed: int = 0) -> list[tuple[str, float]]:
    """(id, score) from rank 1 down: stable descending sort, ties in the dict's key order."""
    s = scores(hist, method, seed)
    return sorted(s.items(), key=lambda kv: -kv[1])


def parse_ranks(spec: str, size: int) -> list[int]:
    """``"1,2,13"`` -> [1, 2, 13], each checked against the pool size."""
    try:
        ranks = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--rank {spec!r}: expected integers such as 1 or 1,2,13") from None
    if not ranks:
        raise ValueError("--rank: no rank given")
    bad = [r for r in ranks if not 1 <= r <= size]
    if bad:
        raise ValueError(f"--rank {bad[0]}: the history has {size} examples (ranks 1..{size})")
    return ranks


def pool_rows(path: str | Path) -> dict[str, dict]:
    """Pool rows keyed by id (first occurrence wins); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pool file not found: {path}")
    out: dict[str, dict] = {}
    for n, (_, rec) in enumerate(jsonl_records(path)):
        out.setdefault(row_id(rec, n), rec)
    if not out:
        raise DataError(f"{path}: empty file (no JSON lines)")
    return out


def write_chosen(pool: dict[str, dict], ids: list[str], out: str | Path, repeat: int) -> int:
    """Write each chosen row ``repeat`` times (in the order of ``ids``); returns lines written."""
    if repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {repeat}")
    missing = [i for i in ids if i not in pool]
    if missing:
        raise DataError(f"pool has no row with id {missing[0]!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for i in ids:
            line = json.dumps(pool[i], ensure_ascii=False) + "\n"
            f.write(line * repeat)
    return len(ids) * repeat


def main(args: argparse.Namespace) -> int:
    """``onerl select`` handler."""
    try:
        hist = load_history(args.history)
        ranked = rank(hist, args.method, args.seed)
        ranks = parse_ranks(args.rank, len(ranked))
        if args.pool and not args.out:
            raise ValueError("--pool needs --out (the JSONL to write the chosen rows to)")
        if args.out and not args.pool:
            raise ValueError("--out needs --pool (the rows to copy)")
        if args.show:
            print(f"top {min(args.show, len(ranked))} by {args.method}:")
            for j, (k, s) in enumerate(ranked[:args.show], 1):
                print(f"  {j:>5}  id {k:>8}  {args.method}={s:.6f}  epochs={len(hist[k])}")
        print(f"{'rank':>5}  {'id':>8}  {args.method}")
        for r in ranks:
            k, s = ranked[r - 1]
            print(f"{r:>5}  {k:>8}  {s:.6f}  (epochs={len(hist[k])})")
        if args.pool:
            ids = [ranked[r - 1][0] for r in ranks]
            n = write_chosen(pool_rows(args.pool), ids, args.out, args.repeat)
            print(f"wrote {n} rows ({len(ids)} example(s) x {args.repeat}) to {args.out}")
    except (DataError, ValueError) as e:
        print(f"onerl select: {e}", file=sys.stderr)
        return 2
    return 0
