"""Named recipes: a Config per name, selected with ``onerl train --recipe NAME``.

``toy`` (the default) runs on a CPU in minutes with the tiny model and math world shipped in
``onerl.toy``. The paper recipes reproduce the released training scripts of the 1-shot RLVR
paper; they need the model (a local folder or a Hugging Face id) and the training file, which
onerl does not ship: pass ``data.train_files=PATH`` (the authors' parquet files, e.g.
``pi1_r128.parquet``, or a JSONL with the same fields) and ``model.path=...``.
"""
from __future__ import annotations

from .config import Config, ConfigError, apply

QWEN_MATH_1P5B = "Qwen/Qwen2.5-Math-1.5B"
_PAPER = {"model.path": QWEN_MATH_1P5B}   # everything else: the dataclass defaults

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
        "trainer.total_steps": 20,
        "trainer.micro_batch_tokens": 16384,
        "trainer.save_every": 10,
        "trainer.eval_every": 5,
        "trainer.eval_files": ["toy:heldout"],
        "trainer.eval_max_new_tokens": 160,
        "trainer.out_dir": "runs/toy",
        "trainer.threads": 2,
    },
    "pi1-qwen2.5-math-1.5b": {**_PAPER, "data.train_files": ["pi1_r128.parquet"],
                              "trainer.out_dir": "runs/pi1"},
    "pi13-qwen2.5-math-1.5b": {**_PAPER, "data.train_files": ["pi13_r128.parquet"],
                               "trainer.out_dir": "runs/pi13"},
    "pi1-pi13-qwen2.5-math-1.5b": {**_PAPER, "data.train_files": ["merge_pi1_pi13_r128.parquet"],
                                   "trainer.out_dir": "runs/pi1_pi13"},
    "4shot-qwen2.5-math-1.5b": {**_PAPER,
                                "data.train_files": ["merge_pi1_pi2_pi13_pi1209_r128.parquet"],
                                "trainer.out_dir": "runs/4shot"},
    "dsr-sub-qwen2.5-math-1.5b": {**_PAPER, "data.train_files": ["dsr_sub.parquet"],
                                  "trainer.out_dir": "runs/dsr_sub"},
    "pi1-format-reward-qwen2.5-math-1.5b": {**_PAPER, "data.train_files": ["pi1_r128.parquet"],
                                            "algo.reward": "format",
                                            "trainer.out_dir": "runs/pi1_format"},
}


def recipe_config(name: str) -> Config:
    if name not in RECIPES:
        raise ConfigError(f"config: unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    cfg = apply(Config(), dict(RECIPES[name]))
    cfg.recipe = name
    return cfg
