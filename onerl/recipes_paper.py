"""The 1-shot RLVR paper's runs as named recipes, and the ablations of its Table 5 as switches.

Every recipe starts from the released training script's knobs (the ``Config`` defaults: GRPO,
128 prompts x 8 samples, T 0.6, max response 3072, AdamW 1e-6 constant, weight decay 0.01,
grad clip 1.0, k3 KL 0.001 as a loss, entropy bonus 0.001) plus gradient checkpointing, and
names the authors' data file (not shipped: pass your copy with ``data.train_files=PATH``).
``REPRODUCES`` says which numbers of the paper (arXiv 2504.20571 v3) each one targets: accuracy
in % on MATH500 and the 6-benchmark average at the checkpoint with the best average.
"""
from __future__ import annotations

QWEN_MATH_1P5B = "Qwen/Qwen2.5-Math-1.5B"
QWEN_MATH_7B = "Qwen/Qwen2.5-Math-7B"
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"
R1_DISTILL_1P5B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"

_BASE = {"model.path": QWEN_MATH_1P5B, "model.gradient_checkpointing": True}


def _run(data: str, out: str, **extra) -> dict:
    return {**_BASE, "data.train_files": [data], "trainer.out_dir": f"runs/{out}",
            **{k.replace("__", "."): v for k, v in extra.items()}}


PI1, PI13 = "pi1_r128.parquet", "pi13_r128.parquet"
PI1_PI13 = "merge_pi1_pi13_r128.parquet"
FOUR_SHOT = "merge_pi1_pi2_pi13_pi1209_r128.parquet"
DSR_SUB = "dsr_sub.parquet"

PAPER_RECIPES: dict[str, dict] = {
    "pi1-qwen2.5-math-1.5b": _run(PI1, "pi1"),
    "pi1-qwen2.5-math-1.5b-ppo": _run(
        PI1, "pi1_ppo", algo__name="ppo", algo__kl_in_reward=True, algo__kl_type="k1",
        algo__kl_coef=0.001, algo__gamma=1.0, algo__lam=1.0, critic__lr=1e-5),
    "pi1-qwen2.5-math-7b": _run(PI1, "pi1_7b", model__path=QWEN_MATH_7B, trainer__total_steps=1000,
                                trainer__micro_batch_tokens=8192),
    "pi1-llama-3.2-3b-instruct": _run(
        PI1, "pi1_llama3b", model__path=LLAMA_3B, trainer__total_steps=1000,
        data__template="chat", eval__template="llama"),
    "pi1-r1-distill-qwen-1.5b": _run(
        PI1, "pi1_r1_distill", model__path=R1_DISTILL_1P5B, trainer__total_steps=1200,
        rollout__max_new_tokens=8192, data__template="deepseek-distill",
        algo__response_after_think=True, trainer__eval_max_new_tokens=8192,
        eval__template="deepseek-distill", eval__protocol="r1-distill", eval__max_tokens=8192),
    "dsr-sub": _run(DSR_SUB, "dsr_sub"),
    "pi13": _run(PI13, "pi13"),
    "pi1-pi13": _run(PI1_PI13, "pi1_pi13"),
    "pi1-pi2-pi13-pi1209": _run(FOUR_SHOT, "4shot"),
    "pi1-format-reward": _run(PI1, "pi1_format", algo__reward="format"),
    "dsr-sub-format-reward": _run(DSR_SUB, "dsr_sub_format", algo__reward="format"),
}

REPRODUCES: dict[str, str] = {
    "pi1-qwen2.5-math-1.5b": "Qwen2.5-Math-1.5B + GRPO on {pi1}: Table 8 / Fig. 1, 72.8 MATH500, "
                             "35.0 avg (base 36.0 / 17.6); Table 5 row 5",
    "pi1-qwen2.5-math-1.5b-ppo": "Qwen2.5-Math-1.5B + PPO on {pi1}: Table 4, 72.4 / 33.8",
    "pi1-qwen2.5-math-7b": "Qwen2.5-Math-7B + GRPO on {pi1}: Table 4, 79.2 / 40.2 "
                           "(base 51.0 / 22.4)",
    "pi1-llama-3.2-3b-instruct": "Llama-3.2-3B-Instruct + GRPO on {pi1}: Table 4, 45.8 / 19.0 "
                                 "(base 40.8 / 17.5)",
    "pi1-r1-distill-qwen-1.5b": "DeepSeek-R1-Distill-Qwen-1.5B + GRPO on {pi1}: Tables 4 / 12, "
                                "80.5 / 42.3 at 8k eval (83.9 / 46.3 at 32k)",
    "dsr-sub": "full-set baseline, Qwen2.5-Math-1.5B + GRPO on DSR-sub (1209): Table 8, "
               "73.6 / 35.9",
    "pi13": "Qwen2.5-Math-1.5B + GRPO on {pi13}: Table 8, 73.6 / 35.7 (the abstract's numbers)",
    "pi1-pi13": "2-shot {pi1, pi13}: Table 8, 74.8 / 36.6",
    "pi1-pi2-pi13-pi1209": "4-shot {pi1, pi2, pi13, pi1209}: Table 9, 74.4 / 36.0",
    "pi1-format-reward": "format-only reward on {pi1}: Table 14, 65.4 / 29.2",
    "dsr-sub-format-reward": "format-only reward on DSR-sub: Table 8, 65.0 / 28.7",
}

# Table 5 (Qwen2.5-Math-1.5B, pi1; best MATH500 / best AIME24). Row 5 (PG+WD+KL+Ent, label
# 12.8) is the recipe itself: 74.8 / 17.5.
ABLATIONS: dict[str, tuple[dict, str]] = {
    "pg-only": ({"optim.weight_decay": 0.0, "algo.kl_coef": 0.0, "algo.entropy_coef": 0.0},
                "row 2: policy gradient only, 71.8 / 15.4"),
    "pg-wd": ({"algo.kl_coef": 0.0, "algo.entropy_coef": 0.0}, "row 3: +weight decay, 71.4 / 16.3"),
    "pg-wd-kl": ({"algo.entropy_coef": 0.0}, "row 4: +KL, 70.8 / 15.0"),
    "entropy-0.003": ({"algo.entropy_coef": 0.003},
                      "row 6: entropy coefficient 0.003, 73.6 / 15.4"),
    "pg-ent": ({"optim.weight_decay": 0.0, "algo.kl_coef": 0.0},
               "row 7: PG + entropy, 75.6 / 17.1"),
    "wd-kl": ({"algo.policy_gradient": False, "algo.entropy_coef": 0.0},
              "row 8: weight decay + KL, no PG, 39.0 / 10.0"),
    "wd-kl-ent": ({"algo.policy_gradient": False}, "row 9: WD + KL + entropy, no PG, 65.4 / 7.1"),
    "entropy-only": ({"algo.policy_gradient": False, "optim.weight_decay": 0.0,
                      "algo.kl_coef": 0.0}, "row 10: entropy only, 63.4 / 8.8"),
    "label-12.7": ({"data.answer_override": "12.7"}, "row 11: exact label 12.7, 73.4 / 17.9"),
    "label-4": ({"data.answer_override": "4"}, "row 12: wrong, guessable label 4, 57.0 / 9.2"),
    "label-9292725": ({"data.answer_override": "9292725"},
                      "row 13: wrong, unguessable label 9292725, 64.4 / 9.6"),
}
