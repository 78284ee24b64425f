"""The landing folder the nightly pipeline reads, and a synthetic one for the embedded default.

    LANDING/events/date=YYYY-MM-DD/*.parquet   the day's interaction events (data contract columns)
    LANDING/users.parquet                       the current users snapshot (optional)
    LANDING/items.parquet                       the current items snapshot (optional)
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_directory
from ..data import schema as S
from ..data.synthetic import generate, preset


def landing_dates(landing: str | os.PathLike) -> list[str]:
    """Dates with a partition in ``LANDING/events``, oldest first."""
    events = Path(landing) / "events"
    if not events.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in events.iterdir() if p.is_dir() and p.name.startswith("date="))


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
