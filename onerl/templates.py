r"""Prompt templates for training and evaluation.

``chat`` applies the tokenizer's own chat template to one user turn (what the paper's training
code does: for Qwen2.5-Math it inserts the default system prompt, for Llama-3.2-Instruct its
date header). The others are the evaluation harness's hand-written prompts, rendered as text
whose special tokens are encoded as single ids:

    qwen25-math-cot   <|im_start|>system\nPlease reason step by step, and put your final answer
                      within \boxed{}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
                      <|im_start|>assistant\n
    llama             <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting
                      Knowledge Date: December 2023\nToday Date: 17 Apr 2025\n\n <|eot_id|>
                      <|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>
                      <|start_header_id|>assistant<|end_header_id|>\n\n
    deepseek-distill  <｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\n

(the space before the llama system turn's ``<|eot_id|>`` is the harness's own). ``auto`` picks
``deepseek-distill`` for tokenizers with the R1-Distill turn tokens, ``qwen25-math-cot`` for
ChatML tokenizers, ``llama`` for Llama-3 header tokens and ``chat`` otherwise.
"""
from __future__ import annotations

QWEN25_MATH_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                   "within \\boxed{}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                   "<|im_start|>assistant\n")
LLAMA = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
         "December 2023\nToday Date: 17 Apr 2025\n\n <|eot_id|><|start_header_id|>user"
         "<|end_header_id|>\n\n{question}<|eot_id|><|start_header_id|>assistant"
         "<|end_header_id|>\n\n")
DEEPSEEK_DISTILL = "<｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\n"
HARNESS = {"qwen25-math-cot": QWEN25_MATH_COT, "llama": LLAMA, "deepseek-distill": DEEPSEEK_DISTILL}
# tokens a tokenizer must know for a harness template (checked, and used by ``auto``)
MARKERS = {"deepseek-distill": ("<｜User｜>", "<｜Assistant｜>"),
           "qwen25-math-cot": ("<|im_start|>", "<|im_end|>"),
           "llama": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}
TEMPLATES = ("auto", "chat", *HARNESS)


def _knows(tokenizer, template: str) -> bool:
    vocab = tokenizer.get_vocab()
    return all(t in vocab for t in MARKERS[template])


def resolve_template(tokenizer, template: str) -> str:
    """The concrete template for ``auto`` (see the module docstring); others are checked."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if template == "auto":
        template = next((t for t in MARKERS if _knows(tokenizer, t)), "chat")
    if template in HARNESS and not _knows(tokenizer, template):
        raise ValueError(f"template {template} needs a tokenizer with the tokens "
                         f"{' '.join(MARKERS[template])}; use --template chat")
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; use a harness template "
                         f"({', '.join(HARNESS)}) or a model folder with a chat template")
    return template


def prompt_text(question: str, template: str, tokenizer=None) -> str:
    """The prompt as text (for the per-sample records and for the harness templates)."""
    if template in HARNESS:
        return HARNESS[template].replace("{question}", question)
    if template == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                             add_generation_prompt=True, tokenize=False)
    raise ValueError(f"prompt_text: template {template!r} is not resolved (call resolve_template)")


def chat_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of the chat template applied to one user turn, ready for the assistant."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                        add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def prompt_ids(tokenizer, question: str, template: str) -> list[int]:
    """Token ids of the prompt; special tokens in a harness template become single ids."""
    if template == "chat":
        return chat_prompt(tokenizer, question)
    return list(tokenizer.encode(prompt_text(question, template), add_special_tokens=False))


THINK_TAGS = ("<think>", "</think>")


def decode_responses(tokenizer, responses: list[list[int]]) -> list[str]:
    """Response token ids -> text without special tokens (EOS, turn markers), except that the
    reasoning tags ``<think>`` / ``</think>`` are kept even where a tokenizer marks them special:
    the reward of reasoning models reads what follows the last ``</think>``."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in THINK_TAGS}   # (no whole-vocab copy)
    keep = {i: t for t, i in ids.items()   # the tags that skip_special_tokens would drop
            if i is not None and tokenizer.convert_ids_to_tokens(i) == t
            and tokenizer.decode([i], skip_special_tokens=True) == ""}
    if not keep:
        return [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
    out = []
    for r in responses:
        parts, start = [], 0
        for i, t in enumerate(r):
            if t in keep:
                parts += [tokenizer.decode(r[start:i], skip_special_tokens=True), keep[t]]
                start = i + 1
        parts.append(tokenizer.decode(r[start:], skip_special_tokens=True))
        out.append("".join(parts))
    return out
