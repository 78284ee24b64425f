"""Atomic outputs: everything is written to a temporary sibling and renamed into place.

A crash (even ``kill -9``) at any point leaves either the old output or the new one, never half
a file, plus at worst a hidden ``.<name>.tmp-*`` sibling that the next run cleans up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import RecsysHyperError, annotate


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _clean_stale_siblings(path: Path) -> None:
    """Remove temporaries left by earlier crashed writers of ``path`` (dead pids only)."""
    if not path.parent.exists():
        return
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            pid = int(stale.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_replaceable(path: Path, what: str = "--out") -> None:
    """Refuse to replace anything but a regular file (or nothing): a device node, a pipe or a
    socket named as an output would be replaced by a file (as root, ``/dev/null`` itself)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return                                 # unreadable metadata: the write itself will say why
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise RecsysHyperError(f"{what} {path} is {kind}, not a file: writing the output would replace it; "
                           f"give the path of a regular file")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed onto ``path`` (replacing it). Only a
    regular file (or nothing) is ever replaced; an OS error names ``path``."""
    path = Path(path)
    if path.is_dir():
        raise RecsysHyperError(f"{path} is a directory; give the path of a file")
    check_replaceable(path)
    tmp = _tmp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_siblings(path)
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise annotate(exc, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path``.

    If ``path`` exists and is not empty, ``overwrite`` must be true. The old directory is moved
    aside, the new one renamed in, and only then the old one deleted.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; remove it or choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{path} already exists and is not empty; pass --overwrite to replace it or choose another --out"
        )
    tmp = _tmp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_siblings(path)
        tmp.mkdir()
        yield tmp
        old = None
        if path.exists():
            old = _tmp_sibling(path)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise annotate(exc, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` into ``path`` (a temporary path of an atomic write). Serialised in memory
    first and written with a plain file write, so that a full disk raises ``OSError(ENOSPC)``
    naming the file (torch's own writer raises a ``RuntimeError`` about stream positions)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        Path(path).write_bytes(buffer.getbuffer())
    except OSError as exc:
        raise annotate(exc, path)
