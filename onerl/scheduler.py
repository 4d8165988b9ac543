"""Sequences and the continuous-batching scheduler (prefill first, then decode; preemption by
recompute when the block pool runs dry)."""
from __future__ import annotations

from collections import deque

from .block_manager import BlockManager


class Sequence:
    """One sample: prompt + generated tokens, their log-probs and its cache blocks.

    ``forks`` are the other samples of the same prompt: they are forked onto this sequence's
    blocks right after its prefill, so a prompt is prefilled once for all its samples."""

    def __init__(self, token_ids: list[int], prompt_index: int, sample_index: int, seed: int):
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.prompt_index, self.sample_index, self.seed = prompt_index, sample_index, seed
        self.logprobs: list[float] = []
        self.block_table: list[int] = []
        self.row = -1  # row in the block manager's host table mirror
        self.slot = -1  # cache slot of the last token in the current decode step
        self.forks: list[Sequence] = []
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = blocks
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preempted = 0
        self.num_prefill_tokens = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Sequence], bool]:
        """The next batch and whether it is a prefill. Waiting sequences are prefilled as soon as
        blocks, the sequence limit (forks included) and the token budget allow; otherwise up to
        max_num_seqs running sequences decode one token each."""
        batch, tokens, seqs = [], 0, len(self.running)
        while self.waiting:
            seq = self.waiting[0]
            n, group = seq.num_tokens, 1 + len(seq.forks)
            if (batch or self.running) and seqs + group > self.max_num_seqs:
                break  # (a group larger than max_num_seqs starts alone; it decodes in slices)
            if batch and tokens + n > self.max_num_batched_tokens:
                break
            if not self.blocks.can_allocate(n):
                if batch or self.running:
                    break
                self.waiting.popleft()  # cannot fit even alone in an empty cache
                self._abort(seq)
                continue
            self.waiting.popleft()
            self.blocks.allocate(seq)
            batch.append(seq)
            tokens, seqs = tokens + n, seqs + group
        if batch:
            self.num_prefill_tokens += tokens
            return batch, True
        while self.running and len(batch) < self.max_num_seqs:
            seq = self.running.popleft()
            while not self.blocks.can_append(seq):
                victim = self.running.pop() if self.running else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                seq.slot = self.blocks.append_slot(seq)
                batch.append(seq)
        self.running.extendleft(reversed(batch))
        return batch, False

    def _preempt(self, seq: Sequence) -> None:
        """Free ``seq``'s blocks; it is prefilled again later from all its tokens."""
        self.blocks.free(seq)
        self.waiting.appendleft(seq)
        self.num_preempted += 1

    def _abort(self, seq: Sequence) -> None:
        for s in [seq, *seq.forks]:
            s.finish_reason = "abort"
        seq.forks = []

    def admit(self, seqs: list[Sequence]) -> None:
        """After a prefill: fork each sequence's siblings onto its blocks; all become running."""
        for seq in seqs:
            for child in seq.forks:
                self.blocks.fork(seq, child)
            self.running.extend([seq, *seq.forks])
            seq.forks = []

    def retire(self, finished: list[Sequence]) -> None:
        """Release finished sequences' blocks and drop them from the running queue."""
        if not finished:
            return
        for seq in finished:
            self.blocks.free(seq)
        self.running = deque(s for s in self.running if s.finish_reason is None)
