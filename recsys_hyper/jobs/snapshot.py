"""The nightly's training snapshot: append-only, one Parquet partition per night.

::

    WORK/snapshot/interactions.parquet/date=D/part-*.parquet   night D's valid events (never rewritten)
    WORK/snapshot/interactions.parquet/date=D/_digest.txt      their content digest
    WORK/snapshot/users.parquet, items.parquet                 the current side tables

A night writes only its own partition (atomically; a re-run of the night replaces it), so the
merge costs what the night brings, not what the snapshot holds. The one-machine night writes it as
one file (``part-0.parquet``), the Spark engine as several (``part-00000.parquet``, ...: their path
order is the rows' order). The snapshot is still a dataset
directory of the data contract (``interactions.parquet`` may be a folder of Parquet files):
:func:`~recsys_hyper.data.load_dataset` reads it and resolves duplicates across nights as it
resolves them within one file (the latest event per user and item; ties on time keep the later
night), and batch scoring does the same bucket by bucket. What the data steps need from all the
nights (user ids, item ids, counts) is read by column projection, batch by batch.

The snapshot's digest combines the partitions' digests, each computed once, when its night was
merged, on hashed columns (the table is never rendered as text).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..atomic import atomic_file
from ..data import schema as S
from ..data.dataset import content_digest, interactions_table

DIGEST_FILE = "_digest.txt"            # names starting with "_" or "." are not read as data
LEGACY_DATE = "0000-00-00"             # a single-file snapshot of an earlier version becomes this partition
#: column-projected scans: one record batch at a time, no read-ahead (memory flat in the snapshot's size)
SCAN = {"batch_size": 1_000_000, "batch_readahead": 1, "fragment_readahead": 1, "use_threads": False}


def events_dir(snapshot: Path) -> Path:
    """The snapshot's interactions folder (a single file left by an earlier version is moved in
    as the partition ``date=0000-00-00``, so that it still comes first)."""
    root = Path(snapshot) / S.INTERACTIONS_FILE
    legacy = Path(snapshot) / f".{S.INTERACTIONS_FILE}.single-file"
    if root.is_file():
        os.replace(root, legacy)                     # two renames; a crash between them is resumed below
    if legacy.is_file():
        target = root / f"date={LEGACY_DATE}"
        target.mkdir(parents=True, exist_ok=True)
        os.replace(legacy, target / "part-0.parquet")
    return root


def partitions(snapshot: Path, exclude: str | None = None) -> list[Path]:
    """The nights' partition files, oldest night first, each night's in path order (``exclude``:
    leave that night's out)."""
    root = events_dir(snapshot)
    if not root.is_dir():
        return []
    return [f for p in sorted(root.glob("date=*")) if p.name != f"date={exclude}" for f in _files(p)]


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("part-*.parquet") if f.is_file())


def night_files(snapshot: Path, date: str) -> list[Path]:
    """Night ``date``'s partition files (none when it has no partition)."""
    return _files(events_dir(snapshot) / f"date={date}")


def write_night(snapshot: Path, date: str, events: pd.DataFrame, implicit: bool) -> str:
    """Write night ``date``'s (validated) events as its partition, atomically; returns its digest."""
    folder = events_dir(snapshot) / f"date={date}"
    digest = content_digest(events)
    with atomic_file(folder / "part-0.parquet") as tmp:
        pq.write_table(interactions_table(events, implicit=implicit), tmp)
    for stale in _files(folder):                  # the files of an earlier attempt written in parts
        if stale.name != "part-0.parquet":
            stale.unlink()
    with atomic_file(folder / DIGEST_FILE) as tmp:
        tmp.write_text(digest + "\n")
    return digest


def replace_night(snapshot: Path, date: str, staged: Path) -> None:
    """Night ``date``'s partition becomes the folder ``staged`` (written elsewhere in full, its
    digest in it), replacing an earlier attempt's: two renames."""
    import shutil
    import uuid

    folder = events_dir(snapshot) / f"date={date}"
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")    # "." names are never read
    if folder.exists():
        os.replace(folder, old)
    os.replace(staged, folder)
    shutil.rmtree(old, ignore_errors=True)


def digest(snapshot: Path) -> str:
    """SHA-256 over the partitions' digests, in date order: the snapshot's content."""
    h = hashlib.sha256()
    for date in partition_dates(snapshot):
        h.update(f"date={date}:{partition_digest(events_dir(snapshot) / f'date={date}')}\n".encode())
    return h.hexdigest()


def partition_digest(folder: Path) -> str:
    """A night's digest (``folder``: its partition), written beside its files when it was merged;
    computed (once) for a partition that has none (a snapshot of an earlier version)."""
    saved = folder / DIGEST_FILE
    if not saved.is_file():
        with atomic_file(saved) as tmp:
            tmp.write_text(content_digest(pd.concat([pd.read_parquet(f) for f in _files(folder)],
                                                    ignore_index=True)) + "\n")
    return saved.read_text().strip()


def schema(snapshot: Path) -> pa.Schema | None:
    """The interactions' schema (from the first partition's footer; nothing else is read)."""
    parts = partitions(snapshot)
    return pq.read_schema(parts[0]) if parts else None


def rating_range(snapshot: Path, exclude: str | None = None) -> tuple[float, float] | None:
    """The lowest and highest rating of the nights (but ``exclude``): the scale the snapshot's
    models are trained on. Read from the partitions' footers (their row groups' statistics; a
    partition written without them is read by column projection). ``None`` when there is no
    partition or no rating column (implicit feedback)."""
    lo, hi = float("inf"), float("-inf")
    parts = partitions(snapshot, exclude=exclude)
    for part in parts:
        meta = pq.read_metadata(part)
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if S.RATING not in names:
            return None
        col = names.index(S.RATING)
        stats = [meta.row_group(g).column(col).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max for s in stats):
            pairs = [(float(s.min), float(s.max)) for s in stats]
        else:
            found = pc.min_max(pq.read_table(part, columns=[S.RATING]).column(0))
            pairs = [] if found["min"].as_py() is None else [(found["min"].as_py(), found["max"].as_py())]
        for a, b in pairs:
            lo, hi = min(lo, a), max(hi, b)
    return (lo, hi) if parts and lo <= hi else None


def distinct(snapshot: Path, columns: tuple[str, ...] = (S.USER_ID, S.ITEM_ID), exclude: str | None = None,
             ) -> tuple[dict[str, np.ndarray], int]:
    """The distinct values of ``columns`` over the nights (but ``exclude``) and the number of rows,
    read by column projection, one record batch at a time."""
    parts = partitions(snapshot, exclude=exclude)
    seen: dict[str, list] = {c: [] for c in columns}
    rows = 0
    if parts:
        for batch in pads.dataset([str(p) for p in parts], format="parquet").to_batches(columns=list(columns), **SCAN):
            rows += batch.num_rows
            for c in columns:
                seen[c].append(pc.unique(batch.column(c)))
    out = {}
    for c, chunks in seen.items():
        values = pa.chunked_array(chunks).unique() if chunks else pa.array([], pa.int64())
        out[c] = np.sort(values.to_numpy(zero_copy_only=False))
    return out, rows


def partition_dates(snapshot: Path) -> list[str]:
    """The nights merged into the snapshot, oldest first."""
    return sorted({p.parent.name.split("=", 1)[1] for p in partitions(snapshot)})


def night_events(snapshot: Path, date: str, users=None) -> pd.DataFrame | None:
    """The events night ``date`` added to the snapshot (its partition), or ``None`` when it has none
    (``users``: only theirs, filtered as the files are read)."""
    files = night_files(snapshot, date)
    if not files:
        return None
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    if users is None:
        return dataset.to_table().to_pandas()
    return dataset.to_table(filter=pc.field(S.USER_ID).isin(pa.array(users))).to_pandas()


def new_events(snapshot: Path, events: pd.DataFrame, exclude: str | None = None) -> tuple[pd.DataFrame, int]:
    """The events of ``events`` (one night's, validated: one per user and item) that the snapshot's
    other nights (all but ``exclude``) do not hold already, and how many were left out.

    An event is already held when the snapshot's latest event of its (user, item) is as recent and
    has the same rating (a re-delivered event), or is more recent (an older event would never be
    read back). A re-rating at the same time is new: a tie on time keeps the later night. Only the
    night's users' events of earlier nights are read (filtered by column projection)."""
    parts = partitions(snapshot, exclude=exclude)
    if not parts or not len(events):
        return events, 0
    dataset = pads.dataset([str(p) for p in parts], format="parquet")
    cols = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING) if c in dataset.schema.names]
    users = pa.array(pd.unique(events[S.USER_ID]))
    before = dataset.to_table(columns=cols, filter=pc.field(S.USER_ID).isin(users)).to_pandas()
    if not len(before):
        return events, 0
    # the latest earlier event of each pair, as the snapshot reads back (ties on time: the later night)
    before = before.sort_values(S.TIMESTAMP, kind="stable").drop_duplicates([S.USER_ID, S.ITEM_ID], keep="last")
    merged = events[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP] + ([S.RATING] if S.RATING in cols else [])].merge(
        before, on=[S.USER_ID, S.ITEM_ID], how="left", suffixes=("", "_before"), validate="one_to_one")
    t_before = merged[f"{S.TIMESTAMP}_before"].to_numpy(dtype=np.float64, na_value=np.nan)
    t_now = merged[S.TIMESTAMP].to_numpy(dtype=np.float64)
    held = t_before > t_now
    same_time = t_before == t_now
    if S.RATING in cols:
        same_time &= merged[S.RATING].to_numpy() == merged[f"{S.RATING}_before"].to_numpy(dtype=np.float64,
                                                                                           na_value=np.nan)
    held |= same_time
    if not held.any():
        return events, 0
    return events[~held].reset_index(drop=True), int(held.sum())
