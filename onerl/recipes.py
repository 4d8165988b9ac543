"""Named recipes: a Config per name, selected with ``onerl train --recipe NAME``.

``toy`` (the default) runs on a CPU in minutes with the tiny model and math world shipped in
``onerl.toy``. The paper recipes reproduce the released training scripts of the 1-shot RLVR
paper; they need the model (a local folder or a Hugging Face id) and the training file, which
onerl does not ship: pass ``data.train_files=PATH`` (the authors' parquet files, e.g.
``pi1_r128.parquet``, or a JSONL with the same fields) and ``model.path=...``. The paper's
recipes and the Table 5 ablation switches are listed in ``onerl.recipes_paper`` (and by
``onerl recipes``): ``onerl train --recipe pi1-qwen2.5-math-1.5b --ablation pg-only``.
"""
from __future__ import annotations

from .config import Config, ConfigError, apply
from .recipes_paper import ABLATIONS, PAPER_RECIPES, REPRODUCES

RECIPES: dict[str, dict] = {
    "toy": {
        "model.path": "toy",
        "model.dtype": "float32",
        "model.ref_dtype": "float32",
        "data.train_files": ["toy:pi1"],
        "rollout.n": 8,
        "rollout.max_new_tokens": 160,
        "rollout.kv_budget_tokens": 65536,
        "optim.lr": 3e-5,
        "optim.weight_decay": 0.01,
        "algo.entropy_coef": 0.0,
        "trainer.train_batch_size": 16,
        "trainer.total_steps": 40,
        "trainer.micro_batch_tokens": 16384,
        "trainer.save_every": 20,
        "trainer.eval_every": 5,
        "trainer.eval_files": ["toy:heldout"],
        "trainer.eval_max_new_tokens": 160,
        "trainer.out_dir": "runs/toy",
        "trainer.threads": 2,
    },
    **PAPER_RECIPES,
}
# The toy's selection run (the paper's Sec. 2.2 on the toy pool): RL on all 64 pool examples for
# 10 epochs (4 steps each), logging every example's accuracy per epoch to acc_history.json for
# `onerl select --history runs/toy_pool/acc_history.json`.
RECIPES["toy-pool"] = {**RECIPES["toy"], "data.train_files": ["toy:pool"],
                       "trainer.eval_every": 40, "trainer.out_dir": "runs/toy_pool"}


def recipe_config(name: str, ablation: str = "") -> Config:
    """The recipe's Config (not validated), with a Table 5 ablation switch applied on top."""
    if name not in RECIPES:
        raise ConfigError(f"config: unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    if ablation and ablation not in ABLATIONS:
        raise ConfigError(f"config: unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
    cfg = apply(Config(), dict(RECIPES[name]))
    if ablation:
        apply(cfg, dict(ABLATIONS[ablation][0]))
    cfg.recipe, cfg.ablation = name, ablation
    return cfg


def describe() -> str:
    """The recipes and ablation switches as text (``onerl recipes``)."""
    lines = ["recipes (onerl train --recipe NAME):",
             f"  {'toy':28s} onerl's toy math world on a CPU in minutes (the default)",
             f"  {'toy-pool':28s} the toy on its 64-example pool: per-example accuracy history "
             "for onerl select"]
    lines += [f"  {n:28s} {REPRODUCES[n]}" for n in PAPER_RECIPES]
    lines += ["", "ablation switches of Table 5 (onerl train --recipe NAME --ablation A):"]
    lines += [f"  {n:28s} {desc}  [{' '.join(f'{k}={v}' for k, v in kv.items())}]"
              for n, (kv, desc) in ABLATIONS.items()]
    return "\n".join(lines)

