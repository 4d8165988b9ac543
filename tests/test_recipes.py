"""The paper's recipes and ablation switches validate; prompt templates render the exact strings
of the paper's training code and evaluation harness; the reward reads the text after
</think>; ``onerl plan`` arithmetic by hand and its verdicts."""
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tok_models
from transformers import PreTrainedTokenizerFast

from onerl import benchmarks as B
from onerl import models
from onerl.config import ConfigError, build
from onerl.plan import KNOWN_MODELS, check_fits, format_plan, make_plan, param_counts
from onerl.recipes import RECIPES, describe, recipe_config
from onerl.recipes_paper import ABLATIONS, PAPER_RECIPES, REPRODUCES
from onerl.rewarding import Rewarder, response_after_think
from onerl.templates import decode_responses, prompt_ids, prompt_text, resolve_template
from onerl.toy.tokenizer import byte_symbols

ISSUE_NAMES = ("pi1-qwen2.5-math-1.5b", "pi1-qwen2.5-math-1.5b-ppo", "pi1-qwen2.5-math-7b",
               "pi1-llama-3.2-3b-instruct", "pi1-r1-distill-qwen-1.5b", "dsr-sub", "pi1-pi13",
               "pi1-pi2-pi13-pi1209")


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_and_ablation_validates(name):
    recipe_config(name).validate()
    for abl in ABLATIONS:
        cfg = recipe_config(name, abl).validate()
        assert cfg.ablation == abl


def test_recipe_table_is_complete_and_documented():
    assert set(ISSUE_NAMES) <= set(PAPER_RECIPES) and set(PAPER_RECIPES) == set(REPRODUCES)
    text = describe()
    assert all(n in text for n in [*RECIPES, *ABLATIONS])


def test_paper_model_recipes():
    ppo = recipe_config("pi1-qwen2.5-math-1.5b-ppo")
    assert (ppo.algo.name, ppo.algo.kl_in_reward, ppo.algo.kl_type, ppo.algo.kl_coef) == \
        ("ppo", True, "k1", 0.001)
    assert (ppo.algo.gamma, ppo.algo.lam, ppo.critic.lr, ppo.critic.cliprange_value,
            ppo.critic.grad_clip) == (1.0, 1.0, 1e-5, 0.5, 1.0)
    r1 = recipe_config("pi1-r1-distill-qwen-1.5b")
    assert r1.rollout.max_new_tokens == 8192 and r1.algo.response_after_think
    assert (r1.data.template, r1.eval.template, r1.eval.protocol) == \
        ("deepseek-distill", "deepseek-distill", "r1-distill")
    assert r1.trainer.total_steps == 1200
    llama = recipe_config("pi1-llama-3.2-3b-instruct")
    assert (llama.data.template, llama.eval.template, llama.trainer.total_steps) == \
        ("chat", "llama", 1000)
    assert recipe_config("pi1-qwen2.5-math-7b").model.path == "Qwen/Qwen2.5-Math-7B"
    assert recipe_config("dsr-sub").data.train_files == ["dsr_sub.parquet"]


def test_ablation_switches_map_onto_fields():
    pg = recipe_config("pi1-qwen2.5-math-1.5b", "pg-only")
    assert (pg.algo.kl_coef, pg.algo.entropy_coef, pg.optim.weight_decay) == (0.0, 0.0, 0.0)
    ent = recipe_config("pi1-qwen2.5-math-1.5b", "entropy-only")
    assert not ent.algo.policy_gradient and ent.algo.entropy_coef == 0.001
    assert recipe_config("pi1-qwen2.5-math-1.5b", "label-9292725").data.answer_override == "9292725"
    with pytest.raises(ConfigError, match="unknown ablation"):
        recipe_config("pi1-qwen2.5-math-1.5b", "no-such")
    # later overrides win over the switch
    cfg = build("pi1-qwen2.5-math-1.5b", None, ["algo.entropy_coef=0.002"], "pg-only")
    assert cfg.algo.entropy_coef == 0.002


def test_r1_distill_protocol_set():
    p = B.protocol_for("math500", protocol_set="r1-distill")
    assert (p.n, p.temperature, p.top_p) == (16, 0.6, 0.95)
    assert B.protocol_for("aime24", protocol_set="r1-distill").n == 64
    assert B.protocol_for("amc23", protocol_set="r1-distill", max_tokens=8192).max_tokens == 8192
    assert B.protocol_for("math500").n == 1


# ----------------------------------------------------------------------------- templates

QWEN_MATH_CHAT = (  # the Qwen2.5-Math chat template's path for one user turn, no tools
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content']"
    " + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nPlease reason step by step, and put"
    " your final answer within \\\\boxed{}.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def _tokenizer(specials, chat_template=None):
    """A byte-level tokenizer (any text round-trips) with exactly these special tokens."""
    tok = Tokenizer(tok_models.BPE(vocab={s: i for i, s in enumerate(byte_symbols())}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=chat_template,
                                   eos_token=specials[-1])


def _check_ids(tok, text, template, specials):
    ids = prompt_ids(tok, text, template)
    assert tok.decode(ids) == prompt_text(text, template, tok)
    for s in specials:
        sid = tok.convert_tokens_to_ids(s)
        assert ids.count(sid) == prompt_text(text, template, tok).count(s), s


PROBLEM = "What is 2+3? Let's think step by step and output the final answer within \\boxed{}."


def test_qwen_math_training_and_eval_prompts():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _tokenizer(specials, QWEN_MATH_CHAT)
    train = prompt_text(PROBLEM, resolve_template(tok, "chat"), tok)
    assert train == ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                     "within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2+3? Let's think step "
                     "by step and output the final answer within \\boxed{}.<|im_end|>\n"
                     "<|im_start|>assistant\n")
    assert resolve_template(tok, "auto") == "qwen25-math-cot"
    assert prompt_text("What is 2+3?", "qwen25-math-cot") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    _check_ids(tok, PROBLEM, "chat", specials)
    _check_ids(tok, "What is 2+3?", "qwen25-math-cot", specials)


def test_llama_eval_prompt():
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = _tokenizer(specials)
    assert resolve_template(tok, "auto") == "llama"
    assert prompt_text("What is 2+3?", "llama") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
        "December 2023\nToday Date: 17 Apr 2025\n\n <|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nWhat is 2+3?<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n")
    _check_ids(tok, "What is 2+3?", "llama", specials)
    with pytest.raises(ValueError, match="qwen25-math-cot needs"):
        resolve_template(tok, "qwen25-math-cot")


def test_r1_distill_prompt_and_reward_after_think():
    specials = ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
                "<|im_start|>", "<|im_end|>", "<｜end▁of▁sentence｜>"]
    tok = _tokenizer(specials)
    assert resolve_template(tok, "auto") == "deepseek-distill"   # before the ChatML tokens
    assert prompt_text(PROBLEM, "deepseek-distill") == (
        "<｜begin▁of▁sentence｜><｜User｜>" + PROBLEM + "<｜Assistant｜><think>\n")
    _check_ids(tok, PROBLEM, "deepseek-distill", specials)
    assert response_after_think("a \\boxed{1} b</think> so \\boxed{5}") == " so \\boxed{5}"
    assert response_after_think("x</think>y</think>z") == "z"
    assert response_after_think("\\boxed{5} and no end of thinking") == ""
    rw = Rewarder("format", after_think=True)
    r, _ = rw(["think \\boxed{4}</think> The answer is \\boxed{5}.", "\\boxed{5} unfinished",
               "</think> no box here \\boxed"], ["5"] * 3)
    assert r.tolist() == [1.0, 0.0, 0.0]
    # the think tags survive decoding even though this tokenizer marks them special (EOS not)
    ids = tok.encode("<think>x \\boxed{4}</think> so \\boxed{5}<｜end▁of▁sentence｜>",
                     add_special_tokens=False)
    assert "</think>" not in tok.decode(ids, skip_special_tokens=True)   # the case is real
    text, plain = decode_responses(tok, [ids, ids[1:3]])
    assert text == "<think>x \\boxed{4}</think> so \\boxed{5}"
    assert plain == tok.decode(ids[1:3]) and rw([text], ["5"])[0].tolist() == [1.0]


# ----------------------------------------------------------------------------- plan


def test_param_count_by_hand_and_against_the_model():
    d = dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=128, vocab_size=1000,
             tie_word_embeddings=True)
    # layer: qkv 64*(4+2*2)*16 + bias 128, o 64*64, mlp 3*64*128, 2 norms of 64
    layer = 64 * 8 * 16 + 128 + 64 * 64 + 3 * 64 * 128 + 128
    assert param_counts(d) == (2 * layer + 1000 * 64 + 64, layer, 1000 * 64 + 64) == \
        (138304, 37120, 64064)
    for cfg in (d, {**d, "model_type": "llama", "tie_word_embeddings": False},
                KNOWN_MODELS["qwen/qwen2.5-math-1.5b"]):
        m = models.build(models.ModelConfig.from_hf(cfg), torch.float32, "meta", init=False)
        assert param_counts(cfg)[0] == sum(p.numel() for p in m.parameters())
    assert param_counts(KNOWN_MODELS["qwen/qwen2.5-math-1.5b"])[0] == 1_543_714_304


def test_plan_numbers_by_hand_for_the_1p5b_recipe():
    cfg = recipe_config("pi1-qwen2.5-math-1.5b").validate()
    plan = make_plan(cfg, 8, 80e9)
    P, layer, root = 1_543_714_304, 46_797_824, 233_375_232
    t = plan.terms
    assert t["actor parameters"] == t["actor gradients"] == P * 4 / 8
    assert t["AdamW state (2 moments)"] == 2 * P * 4 / 8
    assert t["FSDP2 gather buffers"] == (root + 2 * layer) * 4
    assert t["rollout copy of the actor (full)"] == P * 4
    assert t["reference model"] == P * 2 / 8 + (root + 2 * layer) * 2
    assert plan.kv_per_token == 2 * 28 * 2 * 128 * 4 == 57344
    assert plan.kv_min == 8 * (1024 + 3072) * 57344
    per_token = 28 * 1536 + (6 * 1536 + 2 * 12 * 128 + 3 * 2 * 128 + 4 * 8960)
    assert plan.activations == 24000 * 4 * per_token + 2 * 24000 * 1536 * 4 + 512 * 2 ** 20
    assert plan.usable == 0.92 * 80e9 - 2 ** 30 and plan.fits
    assert plan.kv_full_tokens == 16 * 8 * 3072 + 16 * 1024


@pytest.mark.parametrize("name", list(PAPER_RECIPES))
def test_every_paper_recipe_fits_8x80_and_not_1x24(name):
    cfg = recipe_config(name).validate()
    plan = make_plan(cfg, 8, 80e9)
    assert plan.fits, format_plan(cfg, plan)
    assert plan.suggested_micro_batch_tokens >= cfg.trainer.micro_batch_tokens
    assert 0 < plan.kv_suggested_tokens <= plan.kv_full_tokens
    with pytest.raises(ConfigError, match="(?s)DOES NOT FIT.*largest terms"):
        check_fits(cfg, 1, 24e9)


def test_plan_cli_and_unknown_model(capsys):
    from onerl.cli import main

    assert main(["plan", "--recipe", "pi1-qwen2.5-math-1.5b-ppo", "--gpus", "8",
                 "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "critic" in out and "FITS" in out and "rollout.kv_budget_tokens=" in out
    assert main(["plan", "--recipe", "pi1-qwen2.5-math-1.5b", "--gpus", "1",
                 "--gpu-mem", "24"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["plan", "--recipe", "dsr-sub", "model.path=org/unknown-model"]) == 2
    assert "shape of model" in capsys.readouterr().err
    assert main(["plan", "--recipe", "toy", "--gpus", "1", "--gpu-mem", "24"]) == 0


def test_overrides_may_follow_options(capsys):
    from onerl.cli import build_parser, parse

    ap = build_parser()
    args = parse(ap, ["train", "optim.lr=1e-5", "--out", "d", "trainer.seed=3", "--resume"])
    assert args.overrides == ["optim.lr=1e-5", "trainer.seed=3"] and args.out == "d" and args.resume
    for bad in (["train", "--out", "d", "--no-such-flag"], ["train", "--out", "d", "--lr=1"],
                ["plot", "runs/x", "optim.lr=1"]):
        with pytest.raises(SystemExit):
            parse(ap, bad)
        assert "unrecognized arguments" in capsys.readouterr().err
