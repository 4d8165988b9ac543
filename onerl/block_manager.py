"""Paged KV cache: a pool of fixed-size blocks shared by sequences through reference counts.

The cache is one tensor [layers, 2 (K, V), num_blocks, block_size, kv_heads, head_dim]; layer i's
K cache is ``cache[i, 0]`` ([num_blocks, block_size, Hkv, D], what ``write_kv`` and
``paged_attention`` take). A token at position p of a sequence lives in slot
``block_table[p // block_size] * block_size + p % block_size``.

Sharing: ``fork`` points a child at its parent's blocks (refcount + 1 each). Before a sequence
writes into a block that others still reference, ``append_slot`` gives it a private copy
(copy-on-write: a new block, the old one's refcount - 1, and a pending device copy that
``flush_copies`` performs before the next forward). Blocks return to the pool when their count
reaches zero (a pending copy's source only after the copy, so that it never becomes the
target of another copy of the same batch). Block tables are mirrored in a host int32 array
(one row per live sequence) so a decode batch's tables are one fancy-index away.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from onerl_kernels import copy_blocks


def cache_blocks(block_bytes: int, block_size: int, device: torch.device, max_tokens: int | None,
                 memory_utilization: float) -> int:
    """How many blocks to allocate: ``max_tokens`` worth, and on CUDA no more than
    ``memory_utilization`` of the device's currently free memory."""
    n = None if max_tokens is None else -(-max_tokens // block_size)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit = int(free * memory_utilization) // block_bytes
        n = fit if n is None else min(n, fit)
    if not n or n < 1:
        raise ValueError("KV cache: no room for a single block (raise max_cache_tokens or "
                         "memory_utilization)")
    return n


class BlockManager:
    """Allocates blocks for sequences (objects with ``token_ids``, ``block_table``, ``row``)."""

    def __init__(self, num_blocks: int, block_size: int, max_blocks_per_seq: int,
                 cache: torch.Tensor | None = None):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.cache = cache
        self.tables = np.zeros((64, max_blocks_per_seq), dtype=np.int32)
        self.reset()

    def reset(self) -> None:
        """Every block free (the start of a generate call; nothing outlives one)."""
        self.ref = [0] * self.num_blocks
        self.free_ids = deque(range(self.num_blocks))
        self.copies: list[tuple[int, int]] = []  # pending copy-on-write (src, dst)
        self.held: list[int] = []  # freed copy sources, back in the pool after the copy
        self.free_rows = list(range(self.tables.shape[0] - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take(self) -> int:
        b = self.free_ids.popleft()
        self.ref[b] = 1
        return b

    def _row(self, seq) -> int:
        if seq.row < 0:
            if not self.free_rows:  # grow the host mirror
                n = self.tables.shape[0]
                self.tables = np.concatenate([self.tables, np.zeros_like(self.tables)])
                self.free_rows = list(range(2 * n - 1, n - 1, -1))
            seq.row = self.free_rows.pop()
        return seq.row

    def _set(self, seq, idx: int, block: int) -> None:
        if idx == len(seq.block_table):
            seq.block_table.append(block)
        else:
            seq.block_table[idx] = block
        self.tables[seq.row, idx] = block

    def can_allocate(self, num_tokens: int) -> bool:
        return self.blocks_for(num_tokens) <= self.num_free

    def allocate(self, seq) -> None:
        """Fresh blocks for all of ``seq``'s tokens (a prefill writes every one of them)."""
        assert not seq.block_table, "allocate: sequence already holds blocks"
        self._row(seq)
        for i in range(self.blocks_for(len(seq.token_ids))):
            self._set(seq, i, self._take())

    def fork(self, parent, child) -> None:
        """``child`` shares all of ``parent``'s blocks."""
        assert not child.block_table, "fork: child already holds blocks"
        row = self._row(child)
        for b in parent.block_table:
            self.ref[b] += 1
        child.block_table = list(parent.block_table)
        self.tables[row, :len(child.block_table)] = self.tables[parent.row, :len(child.block_table)]

    def free(self, seq) -> None:
        sources = {src for src, _ in self.copies}
        for b in reversed(seq.block_table):
            self.ref[b] -= 1
            if self.ref[b] == 0:  # a pending copy's source must not become another's target
                (self.held if b in sources else self.free_ids).append(b)
        seq.block_table = []
        if seq.row >= 0:
            self.free_rows.append(seq.row)
            seq.row = -1

    def _append_cost(self, seq) -> int:
        pos = len(seq.token_ids) - 1
        idx = pos // self.block_size
        if idx == len(seq.block_table):
            return 1  # the token opens a new block
        return int(self.ref[seq.block_table[idx]] > 1)  # copy-on-write of a shared block

    def can_append(self, seq) -> bool:
        """Whether the last token's K/V (written by the next decode step) has room."""
        return self._append_cost(seq) <= self.num_free

    def append_slot(self, seq) -> int:
        """Make room for the last token of ``seq`` and return its slot."""
        pos = len(seq.token_ids) - 1
        idx, off = divmod(pos, self.block_size)
        if idx == len(seq.block_table):
            self._set(seq, idx, self._take())
        elif self.ref[seq.block_table[idx]] > 1:
            old, new = seq.block_table[idx], self._take()
            self.ref[old] -= 1
            self.copies.append((old, new))
            self._set(seq, idx, new)
        return seq.block_table[idx] * self.block_size + off

    def flush_copies(self) -> None:
        """Perform the pending copy-on-write block copies on the device (all layers, K and V)."""
        if not self.copies:
            return
        src, dst = zip(*self.copies)
        self.copies.clear()
        self.free_ids.extend(self.held)
        self.held.clear()
        if self.cache is not None:
            dev = self.cache.device
            s, d = torch.tensor(src, device=dev), torch.tensor(dst, device=dev)
            for layer in self.cache:
                copy_blocks(layer[0], layer[1], s, d)

    def block_tables(self, seqs, width: int) -> np.ndarray:
        """int32 [len(seqs), width] tables of a batch (entries past a table's end are stale)."""
        return self.tables[[s.row for s in seqs], :width]
