"""Tiny byte-level BPE tokenizer for the toy world, in Hugging Face format.

Built offline with the ``tokenizers`` library (no download): the pipeline is
exactly the Qwen2 one -- NFC, the Qwen2 split regex, byte-level mapping, BPE --
so the checkpoint's tokenizer behaves the same whether it is loaded as
``Qwen2Tokenizer`` (what ``AutoTokenizer`` picks for a ``qwen2`` checkpoint),
as a generic fast tokenizer, or with ``tokenizers.Tokenizer.from_file``.

Only the vocabulary is toy-sized: the 256 byte symbols (so any text encodes
and ``decode(encode(text)) == text``), the merges that turn every word the
toy world uses into a single token (computed here by plain BPE over the
world's word inventory, ties broken alphabetically, hence deterministic), and
three special tokens.  Digits are always single tokens (the Qwen2 regex splits
numbers digit by digit) and a space before a number is its own token::

    "47 + 8 = 55"  ->  4 7 " +" " " 8 " =" " " 5 5

Special tokens: ``<|endoftext|>`` (padding), ``<|im_start|>``, ``<|im_end|>``
(end of turn = EOS).  The chat template is the Qwen ChatML layout; the user
content is a problem followed by ``world.SUFFIX``::

    <|im_start|>user
    There are 47 apples ... now? Let's think step by step and output the final answer within \\boxed{}.<|im_end|>
    <|im_start|>assistant
    <solution><|im_end|>
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from . import world

PAD, BOS_TURN, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS_TURN, EOS)
# The Qwen2 pre-tokenization regex (contractions, words with one leading
# non-letter, single digits, punctuation runs, newlines, spaces).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def render_prompt(user_content: str) -> str:
    """What ``apply_chat_template([user], add_generation_prompt=True)`` returns."""
    return f"{BOS_TURN}user\n{user_content}{EOS}\n{BOS_TURN}assistant\n"


def render_document(user_content: str, solution: str) -> str:
    """A full pretraining document: prompt, solution, end-of-turn."""
    return render_prompt(user_content) + solution + EOS


def byte_symbols() -> list:
    """The 256 printable stand-ins of the byte-level scheme, in byte order.

    Printable Latin-1 bytes stand for themselves; the others (control
    characters, space, ...) are shifted to code points 256 and up, in order.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


def _pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _inventory_texts():
    """Texts that together contain every word the world can emit."""
    yield render_prompt("")
    for t in world.TEMPLATES:
        yield world.Problem(t, (50, 3, 12)).prompt
        for op in "+-":
            variant = world.Template(t.noun, t.container, (op, op), t.mix)
            yield world.Problem(variant, (50, 3, 2)).text
    yield "recheck: 1 + 2 - 3 = 0\nanswer: \\boxed{3}" + EOS


def _inventory_pieces() -> list:
    pre = _pre_tokenizer()
    special = "(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")"
    pieces = set()
    for text in _inventory_texts():
        for segment in re.split(special, text):
            if segment and segment not in SPECIAL_TOKENS:
                pieces.update(p for p, _ in pre.pre_tokenize_str(segment))
    return sorted(pieces)


def learn_merges(pieces) -> list:
    """Plain BPE until every piece is one symbol; ties go to the smaller pair."""
    words = [list(p) for p in pieces if len(p) > 1]
    merges = []
    while words:
        pairs = Counter((w[i], w[i + 1]) for w in words for i in range(len(w) - 1))
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) > 1:
                merged.append(out)
        words = merged
    return merges


def build_tokenizer() -> Tokenizer:
    merges = learn_merges(_inventory_pieces())
    vocab = {sym: i for i, sym in enumerate(byte_symbols())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [BOS_TURN],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }


def save_tokenizer(out_dir: str) -> Tokenizer:
    """Write tokenizer.json + tokenizer_config.json (loadable by AutoTokenizer)."""
    os.makedirs(out_dir, exist_ok=True)
    tok = build_tokenizer()
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
        f.write("\n")
    return tok


if __name__ == "__main__":
    import sys
    save_tokenizer(sys.argv[1] if len(sys.argv) > 1 else "toy_tokenizer")
