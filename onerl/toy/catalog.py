"""What the ``toy`` recipe reads: the shipped base model and named row sets of the toy world.

    toy:pi1        the toy's one training example (chosen from the pool, see PI1_ID)
    toy:pool       the 64-example candidate pool (for data selection)
    toy:heldout    the held-out test set (disjoint problems, some templates never used in RL)
    toy:<pool id>  one pool example, e.g. toy:toy-pool-017 (the "different example" ablation)
"""
from __future__ import annotations

from pathlib import Path

from . import world

PI1_ID = "toy-pool-019"   # the largest careful-vs-other-mode gap in the base's own samples
HELDOUT_SIZE = 400


def base_path() -> Path:
    path = Path(__file__).resolve().parent / "base"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the toy base model is missing at {path}; "
                                "rebuild it with: python -m onerl.toy.pretrain --out " + str(path))
    return path


def data_rows(name: str) -> list[dict]:
    if name == "pool":
        return world.example_pool()
    if name == "heldout":
        return world.heldout_set(HELDOUT_SIZE)
    wanted = PI1_ID if name == "pi1" else name
    rows = [r for r in world.example_pool() if r["id"] == wanted]
    if not rows:
        raise ValueError(f"unknown toy data set {name!r}: use pi1, pool, heldout or a pool id "
                         "such as toy-pool-017")
    return rows
