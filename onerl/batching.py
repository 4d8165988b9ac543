"""From rollouts to the loss's inputs: token-budget micro-batches of packed sequences and the
per-token log-probs / entropies of the responses, laid out as [B, T_max] for ``grpo_loss``.

A sequence is prompt + response. The packed forward returns hidden states for every token; the
log-prob of response token j comes from the hidden state one position earlier, at logits / T
(the rollout temperature), through the fused ``logprobs_entropy`` kernel (never [tokens, V]).
When sequences of a micro-batch share a prompt (1-shot RLVR: all of them), ``response_logprobs``
runs the prompt once per micro-batch (``onerl.prefix``); the plain packed layout stays the
fallback and the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch

from onerl_kernels.logprobs import logprobs_entropy

from . import prefix

SHARE_PREFIX = True   # response_logprobs' default: a prompt shared by several sequences runs once


@dataclass
class Packed:
    input_ids: torch.Tensor     # [N] all tokens of the micro-batch, concatenated
    cu_seqlens: torch.Tensor    # [B+1]
    max_seqlen: int
    src: torch.Tensor           # [R] index into the packed hidden states predicting each response token
    targets: torch.Tensor       # [R] the response tokens
    row: torch.Tensor           # [R] sequence of each response token
    col: torch.Tensor           # [R] position of each response token inside its response
    shape: tuple[int, int]      # (B, T_max) of the padded response grid
    prompts: list[list[int]] | None = None     # the sequences (for the shared-prompt layout)
    responses: list[list[int]] | None = None

    @property
    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.row.device)
        m[self.row, self.col] = True
        return m


def micro_batches(lengths: list[int], budget: int, prompts: list[list[int]] | None = None
                  ) -> list[list[int]]:
    """Split sequence indices, in order, into groups whose total length fits ``budget`` (a
    sequence longer than the budget gets a group of its own). With ``prompts`` (and
    ``SHARE_PREFIX``), a prompt already in the group is counted once, as the shared-prompt
    forward runs it: the budget bounds the tokens actually computed."""
    share = SHARE_PREFIX and prompts is not None
    groups, cur, used, seen = [], [], 0, set()
    for i, n in enumerate(lengths):
        key = tuple(prompts[i]) if share else None
        cost = n - len(key) if share and key in seen else n
        if cur and used + cost > budget:
            groups.append(cur)
            cur, used, seen = [], 0, set()
            cost = n
        cur.append(i)
        used += cost
        if share:
            seen.add(key)
    if cur:
        groups.append(cur)
    return groups


def cut(group: list[int], lengths: list[int], k: int) -> list[list[int]]:
    """``group`` cut, in order, into min(k, len(group)) non-empty runs, each boundary where the
    running total length comes closest to its share of the total."""
    k = min(k, len(group))
    cum = list(accumulate(lengths[i] for i in group))
    bounds = [0]
    for j in range(1, k):
        target = cum[-1] * j / k
        bounds.append(min(range(bounds[-1] + 1, len(group) - (k - j) + 1),
                          key=lambda b: abs(cum[b - 1] - target)))
    bounds.append(len(group))
    return [group[a:b] for a, b in zip(bounds, bounds[1:])] if group else []


def even_out(groups: list[list[int]], want: int) -> list[tuple[list[int], bool]]:
    """``want`` (>= len(groups)) micro-batches as (sequences, real) pairs: the largest groups
    split in halves while that adds some, then the last group repeated with real=False (a pass
    whose results are discarded and whose loss is weighted 0; it only keeps ranks in step)."""
    out = [(g, True) for g in groups]
    while len(out) < want and out:
        i = max(range(len(out)), key=lambda k: len(out[k][0]))
        g = out[i][0]
        if len(g) < 2:
            break
        out[i:i + 1] = [(g[:len(g) // 2], True), (g[len(g) // 2:], True)]
    return out + [(out[-1][0], False)] * (want - len(out)) if out else out


def pack(prompts: list[list[int]], responses: list[list[int]], device) -> Packed:
    ids, cu, src, tgt, row, col = [], [0], [], [], [], []
    for b, (p, r) in enumerate(zip(prompts, responses)):
        start = cu[-1]
        seq = p + r
        ids += seq
        cu.append(start + len(seq))
        for j, t in enumerate(r):
            src.append(start + len(p) - 1 + j)
            tgt.append(t)
            row.append(b)
            col.append(j)
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    lens = [len(p) + len(r) for p, r in zip(prompts, responses)]
    return Packed(as_long(ids), torch.tensor(cu, dtype=torch.int32, device=device), max(lens),
                  as_long(src), as_long(tgt), as_long(row), as_long(col),
                  (len(prompts), max((len(r) for r in responses), default=0)), prompts, responses)


def hidden_states(model, packed: Packed, share_prefix: bool | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's hidden states and, into them, the row predicting each response token (the
    plain packed layout, or the shared-prompt one when it applies and ``share_prefix`` allows)."""
    shared = None
    if (SHARE_PREFIX if share_prefix is None else share_prefix) and packed.prompts is not None:
        shared = prefix.build(packed.prompts, packed.responses, packed.input_ids.device)
    if shared is None:
        return model(packed.input_ids, packed.cu_seqlens, packed.max_seqlen), packed.src
    return shared.forward(model), shared.src


def response_logprobs(model, packed: Packed, temperature: float, need_entropy: bool = True,
                      share_prefix: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(response token) and entropy at logits / temperature, as fp32 [B, T_max] grids (0 at
    padding). Differentiable w.r.t. the model's parameters when grad is enabled. share_prefix
    (default ``SHARE_PREFIX``): run a prompt shared by several sequences once (``onerl.prefix``;
    the same values up to rounding); False: the plain packed forward."""
    hidden, src = hidden_states(model, packed, share_prefix)
    logp, ent = logprobs_entropy(hidden[src], model.lm_head_weight, packed.targets,
                                 temperature=temperature, need_entropy=need_entropy)
    B, T = packed.shape
    grid = hidden.new_zeros((B, T), dtype=logp.dtype)   # fp32 (fp64 for an fp64 model)
    lp = grid.index_put((packed.row, packed.col), logp)
    h = grid.index_put((packed.row, packed.col), ent) if need_entropy else None
    return lp, h


def rows_to_grid(values: list[torch.Tensor], rows: list[int], like: torch.Tensor) -> torch.Tensor:
    """Per-sequence token tensors ``values[i]`` of the sequences ``rows`` laid out as a zero-padded
    grid shaped (and typed, placed) like ``like`` [len(rows), T]."""
    g = torch.zeros_like(like)
    for j, i in enumerate(rows):
        g[j, :values[i].numel()] = values[i]
    return g
