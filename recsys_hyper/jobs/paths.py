"""Output paths checked before any work: an output never replaces an input, a model directory
never replaces something that is not a model, and a file output is writable."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RecsysHyperError
from ..recommender.base import META_FILE


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_model_out(out: str | os.PathLike, data: str | os.PathLike, overwrite: bool = False) -> None:
    """``train --out``: never the data directory or inside it; an existing non-empty folder only
    when it holds a model (retraining into it), or with ``overwrite``."""
    out_p, data_p = Path(out).resolve(), Path(data).resolve()
    if _inside(out_p, data_p) or _inside(data_p, out_p):
        raise RecsysHyperError(f"--out {out} is {'the data directory' if out_p == data_p else 'inside --data'} "
                               f"or contains it: training would replace the data; choose a folder outside {data}")
    if out_p.exists() and not out_p.is_dir():
        raise RecsysHyperError(f"--out {out} exists and is a file; choose a folder for the model")
    if out_p.is_dir() and any(out_p.iterdir()) and not (out_p / META_FILE).is_file() and not overwrite:
        raise RecsysHyperError(f"--out {out} already exists, is not empty and is not a recsys-hyper model directory "
                               f"(no {META_FILE}); training would replace it: choose another folder, or pass "
                               f"--overwrite to replace it")
    _check_writable(out_p.parent, "--out")


def check_file_out(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> None:
    """An output file: not an existing directory, not one of ``inputs`` (nor inside one), writable."""
    out_p = Path(out).resolve()
    for given in inputs:
        p = Path(given).resolve()
        if _inside(out_p, p):
            raise RecsysHyperError(f"--out {out} is {'an input' if out_p == p else 'inside an input'} ({given}); "
                                   f"writing it would replace what is being read: choose another path")
    if out_p.is_dir():
        raise RecsysHyperError(f"--out {out} is a directory; give a file path such as {Path(out) / 'out.parquet'}")
    _check_writable(out_p.parent, "--out")


def _check_writable(folder: Path, what: str) -> None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RecsysHyperError(f"{what}: cannot write under {folder} (no permission, or {existing} is not a folder); "
                               f"choose a writable location")
