"""PPO's critic: the actor's decoder, loaded from the same base checkpoint, with a scalar value
head (Linear hidden -> 1, small random weights, zero bias).

The value of response token j is read at the hidden state that predicts it (the position of
its log-prob), as verl's critic does. The head is applied inside ``forward`` so
FSDP2 (which shards the decoder layers, then this module as the root) gathers its weights.

On disk a critic is a Hugging Face model folder (the decoder) plus ``value_head.safetensors``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import models
from .batching import Packed, hidden_states

HEAD_FILE = "value_head.safetensors"


class Critic(nn.Module):
    def __init__(self, body: models.Transformer, head_std: float = 1e-3, seed: int = 0):
        super().__init__()
        self.body = body
        w = body.embed_tokens.weight
        self.value_head = nn.Linear(body.config.hidden_size, 1, dtype=w.dtype, device=w.device)
        gen = torch.Generator(device=w.device).manual_seed(seed)
        with torch.no_grad():
            self.value_head.weight.normal_(0.0, head_std, generator=gen)
            self.value_head.bias.zero_()

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers (FSDP2 shards each, then the critic as the root)."""
        return self.body.layers

    def forward(self, packed: Packed) -> torch.Tensor:
        """fp32 values [R] of the response tokens (a prompt shared by several sequences runs
        once, as in the actor's forward)."""
        hidden, src = hidden_states(self.body, packed)
        return self.value_head(hidden[src]).squeeze(-1).float()

    def values(self, packed: Packed) -> torch.Tensor:
        """fp32 [B, T_max] grid of the response tokens' values (0 at padding)."""
        v = self(packed)
        grid = v.new_zeros(packed.shape)
        return grid.index_put((packed.row, packed.col), v)


def load_critic(folder: str, dtype: str, device, seed: int = 0) -> Critic:
    """A critic from a base model folder (fresh head) or a saved critic folder (its head)."""
    critic = Critic(models.load(folder, dtype=dtype, device=device), seed=seed)
    head = Path(folder) / HEAD_FILE
    if head.is_file():
        load_head(critic, head)
    return critic


def load_head(critic: Critic, path: Path) -> None:
    tensors = load_file(str(path))
    with torch.no_grad():
        for name, p in critic.value_head.named_parameters():
            p.copy_(tensors[name].to(p.dtype))


def head_tensors(critic: Critic) -> dict[str, torch.Tensor]:
    """The head's tensors on the CPU (gathered when sharded: a collective)."""
    out = {}
    for name, p in critic.value_head.named_parameters():
        t = p.detach()
        out[name] = (t.full_tensor() if hasattr(t, "full_tensor") else t).to("cpu", copy=True)
    return out


def gathered(critic: Critic) -> tuple[dict, dict]:
    """(decoder tensors, head tensors), full, on the CPU; every rank must call it."""
    return models.hf_state_dict(critic.body), head_tensors(critic)


def save_critic(critic: Critic, folder: str | Path, tensors: tuple[dict, dict]) -> None:
    body, head = tensors
    models.save(critic.body, str(folder), state_dict=body)
    save_file(head, str(Path(folder) / HEAD_FILE))


def load_critic_weights(critic: Critic, folder: str | Path) -> None:
    """Copy a saved critic's weights into ``critic`` (same shapes; single process)."""
    loaded = models.load(str(folder), dtype=critic.body.embed_tokens.weight.dtype,
                         device=critic.body.embed_tokens.weight.device)
    with torch.no_grad():
        for p, q in zip(critic.body.parameters(), loaded.parameters()):
            p.copy_(q)
    load_head(critic, Path(folder) / HEAD_FILE)
