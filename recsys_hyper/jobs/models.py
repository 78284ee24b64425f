"""Models as jobs see them: loaded from a directory or an MLflow model URI, and the example a
registered model is logged with."""

from __future__ import annotations

import os

import pandas as pd

from .. import tracking
from ..data import schema as S
from ..data.frames import group_histories
from ..recommender import HyperRecommender, recommend_grouped


def load_model(spec: str | os.PathLike) -> HyperRecommender:
    """A model directory (the ``--out`` of ``train``) or an MLflow model URI (``models:/...``, ``runs:/...``;
    the tracking store is checked first, so an unreachable server fails in seconds, not minutes of retries)."""
    if not tracking.is_model_uri(str(spec)):
        return HyperRecommender.load(tracking.model_folder(spec))      # a folder: no tracking store involved
    tracking.ensure_reachable(write=False)
    return HyperRecommender.load(tracking.resolve_model(spec))


def load_alias(alias: str, name: str = tracking.REGISTERED_MODEL) -> HyperRecommender | None:
    """The model behind ``name@alias``, or ``None`` when the alias is not set yet. The alias is
    read once and its version loaded, so a move of the alias in between cannot mix two versions."""
    version = tracking.alias_version(alias, name)
    return None if version is None else load_version(version, name)


def load_version(version: str, name: str = tracking.REGISTERED_MODEL) -> HyperRecommender:
    """One registered version of ``name``."""
    return load_model(tracking.version_uri(version, name))


def promote_command(version: str | None, name: str = tracking.REGISTERED_MODEL) -> str:
    """``recsys-hyper model promote``: ``version`` (default: the challenger's) becomes ``name@champion``."""
    tracking.ensure_reachable()
    if version is None:
        version = tracking.alias_version("challenger", name)
        if version is None:
            from ..errors import RecsysHyperError

            raise RecsysHyperError(f"{name}@challenger is not set: train a model first (recsys-hyper train), or "
                                   f"pass --version N")
    previous = tracking.promote(version, name)
    if previous == str(version):
        return f"{name} version {version} is already the champion; nothing changed"
    return (f"{name}@champion -> version {version}" + (f" (was {previous}; `recsys-hyper model rollback` returns to "
                                                       f"it)" if previous else ""))


def rollback_command(name: str = tracking.REGISTERED_MODEL) -> str:
    """``recsys-hyper model rollback``: ``name@champion`` back to the version it replaced."""
    tracking.ensure_reachable()
    current, previous = tracking.rollback(name)
    return f"{name}@champion -> version {previous} (was {current})"


def model_digest(model_dir: str | os.PathLike) -> str:
    """A saved model's content digest: 32 hex digits (128 bits of SHA-256) over its files' relative
    paths and bytes, in path order. Tagged on the registered version and recorded by the work
    folder, so that a store's version can be told from another model with the same number."""
    import hashlib
    from pathlib import Path

    root = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root).as_posix()}\n".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def code_version() -> str:
    """The package version, with the git commit when run from a checkout."""
    import subprocess
    from pathlib import Path

    from .. import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def example_io(rec: HyperRecommender, interactions: pd.DataFrame, n_users: int = 3, k: int = 10
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The registered model's input example (grouped histories) and the model's answer to it:
    made-up users (``example-user-1`` ... or negative integer ids, in the training data's user id
    type) rating the first items of the catalogue on the training scale. No user's data goes into
    the registry; ``interactions`` only tells the user id type."""
    import numpy as np

    items = rec.item_map_.ids(np.arange(min(len(rec.item_map_), 5 * n_users)))
    lo, hi = rec.rating_range_ if rec.rating_range_ is not None else (S.IMPLICIT_RATING, S.IMPLICIT_RATING)
    integer_users = pd.api.types.is_integer_dtype(interactions[S.USER_ID])
    rows = []
    for u in range(n_users):
        n = min(len(items), 1 + 2 * u)                                   # 1, 3, 5 ... events
        for j in range(n):
            rows.append({S.USER_ID: -(u + 1) if integer_users else f"example-user-{u + 1}",
                         S.ITEM_ID: items[(u + j) % len(items)],
                         S.RATING: float(hi if (u + j) % 2 == 0 else (lo + hi) / 2),
                         S.TIMESTAMP: 1_700_000_000 + 3600 * j})
    example = group_histories(pd.DataFrame(rows))
    return example, recommend_grouped(rec, example, k=k)
