"""Multi-process training through ``torchrun``: FSDP2 sharding of the actor and the reference
model, the batch split across ranks, global token-mean loss, metrics reduced across ranks,
checkpoints written by rank 0 in the Hugging Face format.

    torchrun --nproc-per-node N -m onerl train --recipe ...

Each rank generates the responses of its slice of the prompts with a gathered copy of the weights;
sampling seeds follow the *global* prompt index, so a run on N processes draws the same
responses as a run on one process over the same global batch. NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .batching import even_out


class Dist:
    """Rank / world of this process (1 process: rank 0 of 1, no process group)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        self.device = device
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        self.mesh = None
        if self.enabled:
            from torch.distributed.device_mesh import init_device_mesh
            self.mesh = init_device_mesh(device.type, (self.world,))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: each decoder layer, then the root (embeddings, norm, head)."""
        if not self.enabled:
            return model
        from torch.distributed.fsdp import fully_shard
        for layer in model.layers:
            fully_shard(layer, mesh=self.mesh)
        fully_shard(model, mesh=self.mesh)
        return model

    def gather_into(self, sharded: torch.nn.Module, full: torch.nn.Module) -> None:
        """Copy the full weights of the sharded actor into the rollout model (one all-gather per
        parameter). FSDP2's own unshard() outside a forward re-creates the root's parameters,
        which would detach them from the optimizer, so the engine reads a gathered twin."""
        with torch.no_grad():
            for p, q in zip(sharded.parameters(), full.parameters()):
                q.copy_(p.full_tensor() if hasattr(p, "full_tensor") else p)

    def slice(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's share of n items (n must divide evenly)."""
        if n % self.world:
            raise ValueError(f"train_batch_size {n} must be a multiple of the {self.world} processes")
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def even(self, groups: list[list[int]]) -> list[tuple[list[int], bool]]:
        """The same number of micro-batches on every rank (``batching.even_out`` to the largest
        count): under FSDP every forward is a collective, so a rank with fewer micro-batches
        (other response lengths) would leave the others waiting. One process: unchanged."""
        if not self.enabled:
            return even_out(groups, len(groups))
        t = torch.tensor([len(groups)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return even_out(groups, int(t.item()))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
