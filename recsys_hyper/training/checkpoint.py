"""Checkpoints of a training run: written atomically after every epoch, so a killed run resumes
(``resume=True``) to the same weights as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_file

CHECKPOINT = "checkpoint.pt"


def checkpoint_path(checkpoint_dir) -> Path | None:
    return Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None


def save_checkpoint(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path | None) -> dict | None:
    """The checkpoint at ``path``, or ``None`` when there is none (plain tensors and containers only)."""
    if path is None or not path.is_file():
        return None
    return torch.load(path, weights_only=True)
