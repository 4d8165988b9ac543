"""One RL step of a paper recipe on a model of the paper's shapes with random weights, and where
its time goes. PPO (``pi1-qwen2.5-math-1.5b-ppo``, the default): rollout, reward, the no-grad
forwards (critic values, reference and old log-probs) + GAE, the critic update, the actor update.
GRPO (``--recipe pi1-qwen2.5-math-1.5b``): rollout, reward, train (reference forward + update).

    python benchmarks/bench_rl_step.py [--device cuda] [--shape qwen/qwen2.5-math-1.5b]
        [--recipe NAME] [--prompts 16 --n 8 --response-len 1024 --steps 2] [--json out.json]
    python benchmarks/bench_rl_step.py --tiny          # a tiny model on the CPU (seconds)

Random weights are built in place on the device (no checkpoint is read or written); the
tokenizer is a synthetic one over the model's whole vocabulary. Responses have a fixed length
(``rollout.ignore_eos``). The last step's split is printed as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onerl import models  # noqa: E402
from onerl.config import build  # noqa: E402
from onerl.plan import KNOWN_MODELS  # noqa: E402
from onerl.trainer import make_trainer  # noqa: E402

TINY = dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128, vocab_size=512,
            tie_word_embeddings=True, max_position_embeddings=4096)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT = ("{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}"
        "{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def write_model_folder(folder: Path, shape: dict) -> None:
    """config.json + a word-level tokenizer with one token per vocabulary id."""
    from tokenizers import AddedToken, Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    V = shape["vocab_size"]
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), V)})
    tok = Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "chat_template": CHAT}))
    cfg = models.ModelConfig.from_hf({**shape, "eos_token_id": 2, "torch_dtype": "float32"})
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))


def random_load(folder, dtype=None, device="cpu"):
    """Stands in for models.load: random weights of the folder's shape, built on the device."""
    cfg = models.ModelConfig.from_hf(json.loads((Path(folder) / "config.json").read_text()))
    dt = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    return models.build(cfg, dt, device, seed=0)


def shape_parser(doc: str, tiny_help: str) -> argparse.ArgumentParser:
    """--device, --tiny and --shape, shared with bench_eval.py; ``model_shape`` reads them."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help=tiny_help)
    ap.add_argument("--shape", default="qwen/qwen2.5-math-1.5b", choices=sorted(KNOWN_MODELS))
    return ap


def model_shape(args) -> dict:
    return TINY if args.tiny else KNOWN_MODELS[args.shape]


def main() -> None:
    ap = shape_parser(__doc__, "tiny model, small batch (CPU smoke)")
    ap.add_argument("--prompts", type=int, default=None)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--response-len", type=int, default=None)
    ap.add_argument("--steps", type=int, default=2, help="the last one is reported")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", default="pi1-qwen2.5-math-1.5b-ppo",
                    help="a paper recipe (GRPO or PPO)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = model_shape(args)
    prompts = args.prompts or (2 if args.tiny else 16)
    length = args.response_len or (16 if args.tiny else 1024)
    models.load = random_load   # the trainer and the critic load through onerl.models.load
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        write_model_folder(folder, shape)
        data = Path(tmp) / "one.jsonl"
        data.write_text(json.dumps({"prompt": "t5 t6 t7 t8", "answer": "12"}) + "\n")
        cfg = build(args.recipe, None, [
            f"model.path={folder}", f"data.train_files={data}", f"trainer.out_dir={tmp}/run",
            f"trainer.device={args.device}", f"trainer.train_batch_size={prompts}",
            f"rollout.n={args.n}", f"rollout.max_new_tokens={length}", "rollout.ignore_eos=true",
            f"trainer.total_steps={args.steps}", "trainer.save_every=0", "trainer.eval_every=0",
            "trainer.tensorboard=false", "trainer.progress=false",
            f"trainer.threads={args.threads if args.device == 'cpu' else 0}"])
        trainer = make_trainer(cfg)
        rows = trainer.run()
    last = rows[-1]
    keys = ("time/step_s", "time/rollout_s", "time/reward_s", "time/ppo_prep_s", "time/critic_s",
            "time/actor_s", "time/train_s", "tokens_per_s", "vf_loss", "loss", "critic_grad_norm", "grad_norm")
    out = {"bench": "rl_step", "recipe": args.recipe, "device": args.device, "shape": "tiny" if args.tiny else args.shape,
           "responses": prompts * args.n, "response_len": length,
           **{k: round(float(last[k]), 4) for k in keys if k in last}}
    if args.device.startswith("cuda"):
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
