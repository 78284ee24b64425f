"""The landing folder the nightly pipeline reads, and a synthetic one for the embedded default.

    LANDING/events/date=YYYY-MM-DD/**/*.parquet   the day's interaction events (data contract columns),
                                                  in the date's folder or any folder below it
    LANDING/users.parquet                         the current users snapshot (optional)
    LANDING/items.parquet                         the current items snapshot (optional)

A night reads exactly the files of its date's folder, recursively (``date=D/hour=01/part.parquet``
included), in path order, except files still being written: **in-flight names** are ignored and
left where they are, so that a later re-run of the night picks them up once they are complete:

* a name (of the file, or of a folder on its path) starting with ``.`` or ``_`` (hidden files and
  uploads such as ``.upload-tmp.parquet``, ``_temporary/`` and ``_SUCCESS`` as Spark and Hadoop
  write them);
* a file name that does not end in ``.parquet`` (``part-0.parquet.tmp``, ``x.parquet._COPYING_``);
* a ``.parquet`` name with an in-flight word as one of its ``.``-separated pieces: ``tmp``, ``temp``,
  ``partial``, ``inprogress``, ``in-progress``, ``uploading``, ``upload-tmp``, ``incomplete``,
  ``copying`` (``events.tmp.parquet``, ``part-3.uploading.parquet``).

Date folders must be calendar dates (``date=2026-11-22``); others (``date=latest``) are reported
and never read.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_directory
from ..data import schema as S
from ..data.synthetic import generate, preset
from ..errors import RecsysHyperError

log = logging.getLogger(__name__)

#: ``.``-separated pieces of a ``.parquet`` name that mark it as still being written
IN_FLIGHT_WORDS = frozenset({"tmp", "temp", "partial", "inprogress", "in-progress", "uploading", "upload-tmp",
                             "incomplete", "copying"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_date(date: str, what: str = "--date") -> str:
    """``date`` if it is a calendar date written YYYY-MM-DD, else a clear error."""
    text = str(date)
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        datetime.date.fromisoformat(text)
    except ValueError:
        raise RecsysHyperError(f"{what} {text!r} is not a calendar date written YYYY-MM-DD "
                               f"(e.g. 2026-11-22)") from None
    return text


def is_date(text: str) -> bool:
    try:
        check_date(text)
        return True
    except RecsysHyperError:
        return False


def landing_dates(landing: str | os.PathLike) -> list[str]:
    """Dates with a partition in ``LANDING/events``, oldest first (calendar dates only)."""
    events = Path(landing) / "events"
    if not events.is_dir():
        return []
    found = [p.name.split("=", 1)[1] for p in events.iterdir() if p.is_dir() and p.name.startswith("date=")]
    return sorted(d for d in found if is_date(d))


def invalid_date_folders(landing: str | os.PathLike) -> list[str]:
    """Folders of ``LANDING/events`` that are not ``date=YYYY-MM-DD`` partitions (never read)."""
    events = Path(landing) / "events"
    if not events.is_dir():
        return []
    return sorted(p.name for p in events.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_"))
                  and not (p.name.startswith("date=") and is_date(p.name.split("=", 1)[1])))


def in_flight(name: str, folder: bool = False) -> bool:
    """Whether a file name (or, ``folder``, a folder's) marks something still being written (see
    the module docstring)."""
    if name.startswith((".", "_")):
        return True
    if folder:
        return False
    lower = name.lower()
    if not lower.endswith(".parquet"):
        return True
    return any(piece in IN_FLIGHT_WORDS for piece in lower[: -len(".parquet")].split(".")[1:])


def landing_files(landing: str | os.PathLike, date: str) -> tuple[list[Path], list[Path]]:
    """(the night's files to read, the in-flight files left for later): every file below
    ``LANDING/events/date=D``, recursively, in path order; a link to a file that is gone counts as
    a file (the night quarantines it with what it pointed to, rather than skip it unseen)."""
    part = Path(landing) / "events" / f"date={date}"
    if not part.is_dir():
        return [], []
    read, later = [], []
    for f in sorted(p for p in part.rglob("*") if p.is_file() or (p.is_symlink() and not p.exists())):
        rel = f.relative_to(part).parts
        if any(in_flight(n, folder=True) for n in rel[:-1]) or in_flight(rel[-1]):
            later.append(f)
        else:
            read.append(f)
    return read, later


def make_synthetic_landing(out: str | os.PathLike, days: int = 3, end_date: str = "2026-11-22",
                           preset_name: str = "default", seed: int = 0, overwrite: bool = False,
                           n_users: int | None = None, n_items: int | None = None) -> list[str]:
    """A landing folder from a synthetic dataset: its events cut by time into ``days`` daily
    partitions (the first day carries the history before it, as a backfill), ending at
    ``end_date``; ``n_users`` / ``n_items`` override the preset's. Returns the dates."""
    end = datetime.date.fromisoformat(end_date)
    dates = [(end - datetime.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    with tempfile.TemporaryDirectory() as tmp:
        generate(preset(preset_name, seed=seed, n_users=n_users, n_items=n_items), Path(tmp) / "ds")
        events = pd.read_parquet(Path(tmp) / "ds" / S.INTERACTIONS_FILE).sort_values(S.TIMESTAMP, kind="stable")
        # the first day holds 70% of the events (the backlog); the others share the rest
        cuts = [0, int(0.7 * len(events))] + [int(0.7 * len(events) + 0.3 * len(events) * (i + 1) / (days - 1))
                                              for i in range(days - 1)] if days > 1 else [0, len(events)]
        with atomic_directory(out, overwrite=overwrite) as root:
            for i, date in enumerate(dates):
                part = root / "events" / f"date={date}"
                part.mkdir(parents=True)
                chunk = events.iloc[cuts[i]:cuts[i + 1]]
                for j, piece in enumerate(np.array_split(np.arange(len(chunk)), 2)):
                    chunk.iloc[piece].to_parquet(part / f"part-{j}.parquet", index=False)
            for name in (S.USERS_FILE, S.ITEMS_FILE):
                shutil.copy(Path(tmp) / "ds" / name, root / name)
    return dates
