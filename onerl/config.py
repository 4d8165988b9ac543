"""Training configuration: dataclasses with validation, named recipes, YAML files and dotted
command-line overrides (``trainer.lr=2e-6``).

The defaults are the paper's released recipe (Qwen2.5-Math-1.5B, pi1 duplicated to 128 prompts x
8 samples; see docs/recipe.md in the project history): GRPO, T = 0.6, max response 3072, AdamW
lr 1e-6 constant, betas (0.9, 0.999), weight decay 0.01, grad clip 1.0, k3 KL 0.001 as a loss,
entropy bonus 0.001, clip 0.2, one optimizer step per rollout step, token-mean loss.
``algo.name=ppo`` adds a critic (section ``critic``) and GAE advantages (``onerl.ppo``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from onerl_kernels.reference import AGG_MODES, KL_TYPES, SCALE_MODES, STD_MODES

from .templates import HARNESS, TEMPLATES

ALGOS = ("grpo", "ppo")
EVAL_PROTOCOLS = ("qwen25-math", "r1-distill")   # onerl.benchmarks.PROTOCOL_SETS


class ConfigError(ValueError):
    """A bad configuration value; the message names the field."""


@dataclass
class ModelConfig:
    path: str = ""                      # local folder (HF format) or a Hugging Face id
    dtype: str = "float32"              # actor parameters (the paper keeps fp32 master weights)
    ref_dtype: str = "bfloat16"         # frozen reference model
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=list)   # JSONL or parquet with problem/answer
    problem_field: str = "prompt"       # the user-message text (the paper's rows end with the
    answer_field: str = "answer"        # "Let's think step by step..." suffix already)
    max_prompt_tokens: int = 1024
    shuffle_seed: int = 1
    template: str = "chat"              # training prompt: the tokenizer's chat template or one
                                        # of the harness templates (onerl.templates)
    answer_override: str = ""           # replace every gold answer (the wrong-label ablations)


@dataclass
class RolloutConfig:
    n: int = 8
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 3072
    ignore_eos: bool = False            # fixed-length responses (benchmarks)
    kv_budget_tokens: int = 0           # 0: size the KV cache from free memory


@dataclass
class AlgoConfig:
    name: str = "grpo"                  # "grpo" (group advantages) or "ppo" (critic + GAE)
    reward: str = "math"                # "math" (verifiable answer) or "format" (boxed answer only)
    response_after_think: bool = False  # grade only the text after "</think>" (0 without one)
    policy_gradient: bool = True        # false: drop the policy-gradient term (Table 5 ablations)
    adv_std: str = "unbiased"
    adv_scale: str = "group"
    adv_eps: float = 1e-6
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_dual: float | None = None
    kl_type: str | None = "k3"
    kl_coef: float = 0.001
    kl_in_reward: bool = False          # PPO: the KL as a per-token reward penalty, not a loss
    gamma: float = 1.0                  # PPO: GAE discount
    lam: float = 1.0                    # PPO: GAE lambda
    entropy_coef: float = 0.001
    loss_agg: str = "token-mean"
    ppo_mini_batches: int = 1           # >1: several optimizer steps per rollout (PPO style)
    ppo_epochs: int = 1


@dataclass
class OptimConfig:
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 0
    first_step_lr_zero: bool = False    # the released code's quirk: its first update runs at lr 0


@dataclass
class CriticConfig:
    """PPO's value model: the actor's architecture from the same base checkpoint (or ``path``)
    with a scalar value head; its own AdamW."""
    path: str = ""                      # "" = model.path
    lr: float = 1e-5
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cliprange_value: float = 0.5
    warmup_steps: int = 0               # steps that train only the critic (the actor waits)


@dataclass
class EvalConfig:
    """How ``onerl eval --recipe NAME`` evaluates this recipe's checkpoints."""
    template: str = "auto"
    protocol: str = "qwen25-math"       # or "r1-distill" (T 0.6, top-p 0.95, avg@16 / avg@64)
    max_tokens: int = 3072


@dataclass
class TrainerConfig:
    train_batch_size: int = 128         # prompts per step (the example duplicated to fill it)
    total_steps: int = 2000
    micro_batch_tokens: int = 24000     # token budget of a packed micro-batch
    save_every: int = 20
    eval_every: int = 20
    eval_files: list[str] = field(default_factory=list)
    eval_max_new_tokens: int = 3072
    eval_limit: int = 0                 # 0: whole eval set
    out_dir: str = "runs/onerl"
    seed: int = 1
    device: str = "auto"
    threads: int = 0                    # CPU threads (0: torch default)
    row_split: bool = True              # CPU, one process: one slice of the work per thread
    tensorboard: bool = True
    progress: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: str = ""
    ablation: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        a, r, t, o, c = self.algo, self.rollout, self.trainer, self.optim, self.critic
        checks = [
            (a.name in ALGOS, "algo.name", f"one of {ALGOS}"),
            (not a.kl_in_reward or a.name == "ppo", "algo.kl_in_reward",
             "false unless algo.name=ppo (GRPO's advantage is per response)"),
            (not a.kl_in_reward or a.kl_type is not None, "algo.kl_type",
             "set (k1 in the paper's PPO) when algo.kl_in_reward=true"),
            (0 <= a.gamma <= 1 and 0 <= a.lam <= 1, "algo.gamma/lam", "in [0, 1]"),
            (c.lr >= 0 and c.weight_decay >= 0 and c.grad_clip > 0, "critic.lr/weight_decay/grad_clip",
             ">= 0 / >= 0 / > 0"),
            (c.cliprange_value > 0 and c.warmup_steps >= 0, "critic.cliprange_value/warmup_steps",
             "> 0 / >= 0"),
            (self.data.template in TEMPLATES and self.data.template != "auto", "data.template",
             f"'chat' or one of {tuple(HARNESS)}"),
            (self.eval.template in TEMPLATES, "eval.template", f"one of {TEMPLATES}"),
            (self.eval.protocol in EVAL_PROTOCOLS, "eval.protocol", f"one of {EVAL_PROTOCOLS}"),
            (self.eval.max_tokens >= 1, "eval.max_tokens", ">= 1"),
            (a.reward in ("math", "format"), "algo.reward", "'math' or 'format'"),
            (a.adv_std in STD_MODES, "algo.adv_std", f"one of {STD_MODES}"),
            (a.adv_scale in SCALE_MODES, "algo.adv_scale", f"one of {SCALE_MODES}"),
            (a.kl_type in KL_TYPES, "algo.kl_type", f"one of {KL_TYPES}"),
            (a.loss_agg in AGG_MODES, "algo.loss_agg", f"one of {AGG_MODES}"),
            (0 <= a.clip_low < 1 and a.clip_high >= 0, "algo.clip_low/clip_high", "in [0, 1) / >= 0"),
            (a.clip_dual is None or a.clip_dual > 1, "algo.clip_dual", "None or > 1"),
            (a.ppo_mini_batches >= 1 and a.ppo_epochs >= 1, "algo.ppo_mini_batches/ppo_epochs", ">= 1"),
            (r.n >= 1, "rollout.n", ">= 1"),
            (r.temperature > 0, "rollout.temperature", "> 0 (the loss divides logits by it)"),
            (0 < r.top_p <= 1, "rollout.top_p", "in (0, 1]"),
            (r.max_new_tokens >= 1, "rollout.max_new_tokens", ">= 1"),
            (t.train_batch_size >= 1, "trainer.train_batch_size", ">= 1"),
            (t.train_batch_size % a.ppo_mini_batches == 0, "algo.ppo_mini_batches",
             "a divisor of trainer.train_batch_size"),
            (t.total_steps >= 0, "trainer.total_steps", ">= 0"),
            (t.micro_batch_tokens >= 1, "trainer.micro_batch_tokens", ">= 1"),
            (o.lr >= 0 and o.weight_decay >= 0, "optim.lr/weight_decay", ">= 0"),
            (o.grad_clip > 0, "optim.grad_clip", "> 0"),
            (self.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
             "float32, bfloat16 or float16"),
            (bool(self.model.path), "model.path", "a model folder or Hugging Face id"),
            (bool(self.data.train_files), "data.train_files", "at least one JSONL/parquet file"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ConfigError(f"config: {name} must be {want}")
        return self


def _coerce(value: str, current: Any, name: str) -> Any:
    """Parse a command-line string into the type of the field's current value."""
    if value.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"config: {name} expects true/false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(current, (list, tuple)):
        items = json.loads(value) if value.startswith("[") else value.split(",")
        return type(current)(items) if isinstance(current, tuple) else list(items)
    for typ in (int, float):
        if isinstance(current, typ):
            try:
                return typ(value)
            except ValueError:
                raise ConfigError(f"config: {name} expects {typ.__name__}, got {value!r}") from None
    if current is None:  # optional field: best effort number, else string
        for typ in (int, float):
            try:
                return typ(value)
            except ValueError:
                pass
    return value


def apply(cfg: Config, updates: dict[str, Any]) -> Config:
    """Set dotted keys (``algo.kl_coef``) on cfg; unknown keys are an error naming the key."""
    for key, value in updates.items():
        section, _, name = key.partition(".")
        sub = getattr(cfg, section, None) if name else None
        if sub is None or not dataclasses.is_dataclass(sub) or name not in {f.name for f in fields(sub)}:
            raise ConfigError(f"config: unknown key {key!r}")
        current = getattr(sub, name)
        if isinstance(value, str) and not isinstance(current, str):
            value = _coerce(value, current, key)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(sub, name, value)
    return cfg


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: no such file {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {p} must hold a mapping")
    return flatten(data)


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"config: override {item!r} must look like section.key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build(recipe: str = "toy", yaml_file: str | None = None, overrides: list[str] = (),
          ablation: str = "") -> Config:
    """recipe defaults (+ a Table 5 ablation switch), then the YAML file, then command-line
    overrides; validated."""
    from .recipes import recipe_config

    cfg = recipe_config(recipe, ablation)
    if yaml_file:
        apply(cfg, load_yaml(yaml_file))
    apply(cfg, parse_overrides(list(overrides)))
    return cfg.validate()
