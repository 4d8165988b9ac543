"""Atomic checkpoints and exact resume.

Layout of ``OUT/checkpoints``::

    step_000020/            Hugging Face model folder (config.json, model.safetensors, tokenizer)
        trainer_state.pt    optimizer, RNG states, step, data position
    latest                  text file naming the newest complete checkpoint

A checkpoint is written into ``.tmp-step_N`` and renamed into place only when complete, then
``latest`` is replaced atomically, so a kill at any moment leaves the previous checkpoint
intact and ``latest`` always names a complete one.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(root: str | Path, step: int, save_model, state: dict, keep: int = 3) -> Path:
    """Write checkpoint ``step``: ``save_model(folder)`` writes the HF model files, ``state`` the
    rest. Returns the final folder. Older checkpoints beyond ``keep`` are removed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp)                     # creates the folder
    tmp.mkdir(exist_ok=True)
    torch.save(state, tmp / "trainer_state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(root / "latest", final.name)
    ckpts = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    marker = Path(root) / "latest"
    if not marker.is_file():
        return None
    folder = Path(root) / marker.read_text().strip()
    if not (folder / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"checkpoint {folder} named by {marker} is incomplete")
    return folder


def load_state(folder: str | Path) -> dict:
    return torch.load(Path(folder) / "trainer_state.pt", weights_only=False)
