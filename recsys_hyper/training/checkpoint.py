"""Checkpoints of a training run: written atomically after every epoch, so a killed run resumes
(``resume=True``) to the same weights as an uninterrupted one.

A checkpoint belongs to its run: it records the identity of what it was trained on (the data's
content digest, the config, the validation users, the warm start's weights) and a resume with
anything else is refused: it would continue one model's training on another's data and report
the first run's epochs as its own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_file, write_torch
from ..errors import RecsysHyperError

CHECKPOINT = "checkpoint.pt"

_WHAT = {"data": "training data", "config": "config", "validation": "validation users",
         "warm_start": "warm start (the model it started from)"}


def checkpoint_path(checkpoint_dir) -> Path | None:
    return Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def training_identity(config: dict, data_digest: str, validation_users: np.ndarray,
                      warm_start: dict | None = None) -> dict:
    """What a checkpoint belongs to, as short digests: the data, the config, the validation users
    and the warm start's tensors (``None``: none)."""
    users = np.sort(np.asarray(validation_users).astype(str))
    warm = "none"
    if warm_start is not None:
        h = hashlib.sha256()
        for key in sorted(warm_start):
            h.update(key.encode())
            h.update(warm_start[key].detach().cpu().contiguous().numpy().tobytes())
        warm = h.hexdigest()
    return {"data": data_digest, "config": _sha(json.dumps(config, sort_keys=True, default=str).encode()),
            "validation": _sha("\n".join(users).encode()), "warm_start": warm}


def same_identity(saved: dict | None, expected: dict | None) -> bool:
    """Whether a checkpoint's identity is ``expected`` (always, when nothing is expected)."""
    return expected is None or all((saved or {}).get(k) == v for k, v in expected.items())


def check_identity(saved: dict | None, expected: dict | None, path: Path) -> None:
    """Refuse to resume from a checkpoint of another run (or of an earlier version, with no identity)."""
    if same_identity(saved, expected):
        return
    differ = [k for k in expected if (saved or {}).get(k) != expected[k]]
    what = ("it records no identity (written by an earlier version)" if not saved else
            "it was made with other " + ", other ".join(_WHAT.get(k, k) for k in differ)
            + (f" (data digest {str(saved.get('data', '?'))[:12]} there, {expected['data'][:12]} now)"
               if "data" in differ else ""))
    raise RecsysHyperError(f"{path}: this checkpoint belongs to another training run: {what}; resuming would "
                           f"continue that run on this one's data and report its epochs. Resume with the data and "
                           f"config it was made with, or start afresh without --resume (the checkpoint is then replaced)")


def save_checkpoint(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        write_torch(state, tmp)


def load_checkpoint(path: Path | None) -> dict | None:
    """The checkpoint at ``path``, or ``None`` when there is none (plain tensors and containers only)."""
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several types
        raise RecsysHyperError(f"{path}: the checkpoint cannot be read ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); start afresh without --resume "
                               f"(the checkpoint is then replaced)") from None
