"""Output paths checked before any work: an output never replaces an input, is never written
inside one, never replaces something that is not what the command writes (a folder of other
files, a device node), and is writable.

The one rule for every command: an output path and every folder the command replaces must not
be, hold or sit inside an input (the dataset's files, a model directory, a pairs file ...)."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import check_replaceable
from ..errors import RecsysHyperError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_not_over_inputs(option: str, out: str | os.PathLike, inputs, writes=None) -> None:
    """``out`` must not be an input or inside one; no input may be inside a folder the command
    replaces (``writes``, default ``out`` itself)."""
    out_p = Path(out).resolve()
    replaced = [Path(w).resolve() for w in (writes if writes is not None else [out])]
    for given in inputs:
        p = Path(given).resolve()
        if _inside(out_p, p):
            raise RecsysHyperError(f"{option} {out} is {'an input' if out_p == p else 'inside an input'} ({given}); "
                                   f"writing it would replace what is being read: choose another path")
        for w in replaced:
            if _inside(p, w):
                raise RecsysHyperError(f"{option} {out} holds an input ({given}); writing the output would replace "
                                       f"it: choose a path outside the inputs")


def check_model_out(out: str | os.PathLike, data: str | os.PathLike, overwrite: bool = False) -> None:
    """``train --out``: never the data directory or inside it; an existing non-empty folder only
    when it holds a model (retraining into it), or with ``overwrite``."""
    from ..recommender.base import META_FILE          # here: the dataset commands import this module too

    out_p, data_p = Path(out).resolve(), Path(data).resolve()
    if _inside(out_p, data_p) or _inside(data_p, out_p):
        raise RecsysHyperError(f"--out {out} is {'the data directory' if out_p == data_p else 'inside --data'} "
                               f"or contains it: training would replace the data; choose a folder outside {data}")
    check_dir_out(out, [data], overwrite=overwrite, marker=META_FILE,
                  what="a recsys-hyper model directory", replaces="training would replace it")


def check_dir_out(out: str | os.PathLike, inputs, writes=None, overwrite: bool = True, marker: str | None = None,
                  what: str = "", replaces: str = "", option: str = "--out") -> None:
    """An output folder. ``inputs``: what the command reads; ``writes``: the folders it replaces
    (default: ``out`` itself). ``marker``: a file that marks a folder as one of this command's
    outputs: an existing non-empty folder without it is refused unless ``overwrite``."""
    _check_not_over_inputs(option, out, inputs, writes)
    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise RecsysHyperError(f"{option} {out} exists and is not a folder; choose a folder")
    if marker and out_p.is_dir() and any(out_p.iterdir()) and not (out_p / marker).is_file() and not overwrite:
        raise RecsysHyperError(f"{option} {out} already exists, is not empty and is not {what} (no {marker}); "
                               f"{replaces}: choose another folder, or pass --overwrite to replace it")
    _check_writable(out_p.resolve().parent, option)


def check_file_out(out: str | os.PathLike, inputs: list[str | os.PathLike], option: str = "--out") -> None:
    """An output file: not an existing directory or device, not one of ``inputs`` (nor inside one), writable."""
    _check_not_over_inputs(option, out, inputs, writes=[])       # a file replaces nothing but itself
    out_p = Path(out)
    if out_p.is_dir():
        raise RecsysHyperError(f"{option} {out} is a directory; give a file path such as {Path(out) / 'out.parquet'}")
    check_replaceable(out_p, option)
    _check_writable(out_p.resolve().parent, option)


def _check_writable(folder: Path, what: str) -> None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RecsysHyperError(f"{what}: cannot write under {folder} (no permission, a read-only file system, or "
                               f"{existing} is not a folder); choose a writable location")
