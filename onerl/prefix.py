"""The training forward with a shared prompt computed once.

In 1-shot RLVR every sequence of a step has the same prompt (about half of the tokens in the
paper's shapes), and GRPO samples n responses per prompt in any case. The plain packed forward
(``onerl.batching.pack``) runs that prompt once per sequence; this layout runs it once per
micro-batch. Sequences with identical prompt token ids form a group; the compact token stream is

    [prompt of group 0 | prompt of group 1 | ... | response of sequence 0 minus its last token | ...]

with positions t for prompt token t and P + j for response token j after a P-token prompt. The
last response token is never an input: nothing reads its hidden state (it predicts nothing, and
under causal attention no other token sees it).

Attention (``SharedPrefix.attend``): a prompt token attends causally within its prompt (the plain
varlen attention over the prompts); response token j of a sequence attends to the P tokens of its
group's prompt, then to its own response tokens 0..j. The responses whose prompts have the same
length form one batched call: queries [n, Hq, Rmax, D] (right-padded), keys and values gathered
as [the group's prompt ; the own response right-padded to Rmax], one lower-right causal mask
[Rmax, P + Rmax] for all rows; a real query never sees a pad key, and key 0 is visible to every
query row, so no row is empty.

Log-probs: response token 0 is predicted by the hidden state of the prompt's last token, token
j > 0 by that of response token j - 1 (``src``, in the order of ``pack``'s targets).

Gradients: the K/V of a prompt token are gathered into every row that reads them, and the
backward of that gather sums the rows' contributions; the prompt's own hidden states receive the
sum of what each sequence sends back. That is the same sum the duplicated forward computes, so
log-probs and gradients equal the plain path up to floating-point rounding (tested in fp64).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models.transformer import varlen_attention


@dataclass
class Bucket:
    """The responses whose prompts have ``prompt_len`` tokens: one attention call."""
    prompt_len: int
    qidx: torch.Tensor   # [n, Rmax] compact index of each query (pad rows: 0, dropped)
    kidx: torch.Tensor   # [n, prompt_len + Rmax] compact index of each key / value
    mask: torch.Tensor   # bool [Rmax, prompt_len + Rmax]: key visible to query (lower-right causal)


@dataclass
class SharedPrefix:
    input_ids: torch.Tensor   # [N] the compact token stream
    positions: torch.Tensor   # [N]
    max_len: int              # > every position
    src: torch.Tensor         # [R] compact hidden state predicting each response token
    n_prompt: int             # the prompts are the first n_prompt tokens,
    cu_prompts: torch.Tensor  # int32 [G+1] their boundaries
    max_prompt: int
    buckets: list[Bucket]
    order: torch.Tensor       # [N] row of each compact token in the concatenated attention outputs

    def forward(self, model) -> torch.Tensor:
        """Hidden states [N, H] of the compact stream (through ``model.__call__``, so module
        hooks such as FSDP's run as for the plain forward)."""
        return model(self.input_ids, max_seqlen=self.max_len, positions=self.positions,
                     attend=self.attend)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
        """q [N, Hq, D], k / v [N, Hkv, D] of the compact stream -> [N, Hq, D]."""
        Hq, D, Hkv = q.shape[1], q.shape[2], k.shape[1]
        gqa = dict(enable_gqa=True) if Hkv != Hq else {}
        n_p = self.n_prompt
        outs = [varlen_attention(q[:n_p], k[:n_p], v[:n_p], self.cu_prompts, self.max_prompt,
                                 scale)]
        for b in self.buckets:
            (n, R), L = b.qidx.shape, b.kidx.shape[1]
            take = lambda x, idx, rows, h: x.index_select(0, idx.reshape(-1)).view(  # noqa: E731
                n, rows, h, D).transpose(1, 2)
            o = F.scaled_dot_product_attention(take(q, b.qidx, R, Hq), take(k, b.kidx, L, Hkv),
                                               take(v, b.kidx, L, Hkv), attn_mask=b.mask,
                                               scale=scale, **gqa)
            outs.append(o.transpose(1, 2).reshape(n * R, Hq, D))
        return torch.cat(outs).index_select(0, self.order)


def groups_of(prompts: list[list[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct prompts (first-seen order) and the group of each sequence."""
    index: dict[tuple[int, ...], int] = {}
    group = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return list(index), group


def build(prompts: list[list[int]], responses: list[list[int]], device
          ) -> SharedPrefix | None:
    """The shared-prompt layout of a micro-batch, or None when it saves nothing (no prompt occurs
    twice) or does not apply (an empty prompt)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        return None
    uniq, group = groups_of(prompts)
    if len(uniq) == len(prompts):
        return None
    S, G = len(prompts), len(uniq)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    plen = as_long([len(u) for u in uniq])                          # [G]
    pend = plen.cumsum(0)                                           # [G] end of each prompt
    n_prompt = int(pend[-1])
    g = as_long(group)                                              # [S]
    rlen = as_long([len(r) for r in responses])                     # [S] targets per sequence
    rin = (rlen - 1).clamp(min=0)                                   # [S] response inputs
    rstart = n_prompt + rin.cumsum(0) - rin                         # [S]
    ids = [t for u in uniq for t in u] + [t for r in responses for t in r[:-1]]
    N = len(ids)

    # positions: arange within each segment (prompts, then response inputs), offset by the base
    seg_len = torch.cat([plen, rin])
    seg_start = seg_len.cumsum(0) - seg_len
    seg_base = torch.cat([torch.zeros(G, dtype=torch.long), plen[g]])
    positions = torch.arange(N) - torch.repeat_interleave(seg_start - seg_base, seg_len,
                                                          output_size=N)
    # src, in pack's target order (sequence by sequence)
    R = int(rlen.sum())
    seq = torch.repeat_interleave(torch.arange(S), rlen, output_size=R)
    j = torch.arange(R) - torch.repeat_interleave(rlen.cumsum(0) - rlen, rlen, output_size=R)
    src = torch.where(j == 0, pend[g[seq]] - 1, rstart[seq] + j - 1)

    buckets, order = [], torch.arange(N)
    offset = n_prompt
    for P in sorted(set(plen[g].tolist())):
        rows = torch.nonzero(plen[g] == P).flatten()
        Rmax = int(rin[rows].max())
        if Rmax == 0:
            continue
        col = torch.arange(Rmax)
        valid = col < rin[rows, None]
        qidx = torch.where(valid, rstart[rows, None] + col, 0)
        kidx = torch.cat([pend[g[rows], None] - P + torch.arange(P), qidx], 1)
        mask = torch.ones(Rmax, P + Rmax, dtype=torch.bool).tril(P)
        flat = offset + torch.arange(rows.numel() * Rmax).view(-1, Rmax)
        order[qidx[valid]] = flat[valid]
        offset += rows.numel() * Rmax
        buckets.append(Bucket(P, qidx.to(device), kidx.to(device), mask.to(device)))
    cu = torch.cat([torch.zeros(1, dtype=torch.long), pend]).to(torch.int32)
    max_len = int((plen[g] + rin).max())
    return SharedPrefix(as_long(ids).to(device), positions.to(device), max(max_len, 1),
                        src.to(device), n_prompt, cu.to(device), int(plen.max()), buckets,
                        order.to(device))
