"""New-user cohorts, night over night: the cold-start adaptation of real new users, tracked.

Each night, the users first seen in that night's landing partition form a cohort. Their heads
are emitted by the champion from their first day's events alone, and their top 10 are kept with
the champion's version (``WORK/cohorts/date=D/``). On the following night their next-day events
are scored against what they were recommended and predicted: Recall@10 and nDCG@10 (relevant =
next-day events rated >= 4, every event for implicit data), MAE of the ratings the same model
predicts from the first day's events, and coverage (distinct recommended items / catalogue).
Every measured cohort is a row of ``WORK/cohorts/history.parquet``, logged each night.

The first night's cohort is the backlog: every user is first seen then.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..data import schema as S
from ..numerics.metrics import mean_absolute_error, ranked_list_metrics
from ..recommender import HyperRecommender

TOP_K = 10


def cohort_dir(work: Path, date: str) -> Path:
    return Path(work) / "cohorts" / f"date={date}"


def _write(frame: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def record(work: Path, date: str, day_events: pd.DataFrame, known_users) -> int:
    """Keep the first-day events of the users of ``day_events`` not in ``known_users``."""
    new = day_events[~day_events[S.USER_ID].isin(known_users)]
    _write(new.reset_index(drop=True), cohort_dir(work, date) / "events.parquet")
    return int(new[S.USER_ID].nunique())


def replace_events(work: Path, date: str, staged: Path) -> None:
    """The night's new users' events become the folder ``staged`` (written in parts elsewhere, by
    Spark), replacing what an earlier attempt recorded: :func:`record` of the Spark night."""
    import os
    import shutil
    import uuid

    target = cohort_dir(work, date) / "events.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".events.parquet.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink(missing_ok=True)


def serve(work: Path, date: str, champion: HyperRecommender, version: str, users: pd.DataFrame | None,
          allow_rating_mismatch: bool = False, exclude_items=None) -> int:
    """The champion's top 10 for the night's cohort, from their first day's events alone
    (``allow_rating_mismatch``, ``exclude_items``: as for
    :meth:`~recsys_hyper.recommender.base.Recommender.recommend`)."""
    folder = cohort_dir(work, date)
    events = pd.read_parquet(folder / "events.parquet")
    recs = champion.recommend(events, k=TOP_K, users=users, user_ids=pd.unique(events[S.USER_ID]),
                              allow_rating_mismatch=allow_rating_mismatch, exclude_items=exclude_items)
    _write(recs, folder / "recommendations.parquet")
    with atomic_file(folder / "served.json") as tmp:
        tmp.write_text(json.dumps({"version": str(version), "catalogue": len(champion.item_map_)}))
    return int(recs[S.USER_ID].nunique())


def measure(work: Path, cohort_date: str, next_events: pd.DataFrame, load_version, implicit: bool,
            user_features: pd.DataFrame | None = None, threshold: float = 4.0,
            allow_rating_mismatch: bool = False) -> dict | None:
    """The cohort of ``cohort_date`` against its users' events of the next night; ``None`` when
    that cohort was never served. ``load_version(v)`` loads the model that served it (``None``:
    it is gone, and the MAE, which needs it, is left unmeasured); ``user_features``: the users
    table it was served with."""
    folder = cohort_dir(work, cohort_date)
    if not (folder / "served.json").is_file():
        return None
    served = json.loads((folder / "served.json").read_text())
    first = pd.read_parquet(folder / "events.parquet")
    recs = pd.read_parquet(folder / "recommendations.parquet")
    cohort = pd.unique(first[S.USER_ID])
    nxt = next_events[next_events[S.USER_ID].isin(cohort)]
    row = {"cohort_date": cohort_date, "users": len(cohort), "returning": int(nxt[S.USER_ID].nunique()),
           "recall@10": np.nan, "ndcg@10": np.nan, "mae": np.nan,
           "coverage": recs[S.ITEM_ID].nunique() / max(1, served["catalogue"]), "served_by": served["version"]}
    relevant = nxt if implicit else nxt[nxt[S.RATING] >= threshold]
    users = pd.unique(relevant[S.USER_ID])
    if len(users):
        row["recall@10"], row["ndcg@10"] = ranked_list_metrics(recs, relevant, users, TOP_K)
    model = load_version(served["version"]) if len(nxt) and not implicit else None
    if model is not None:
        pred = model.predict(first, nxt[[S.USER_ID, S.ITEM_ID]], users=user_features,
                             allow_rating_mismatch=allow_rating_mismatch)
        row["mae"] = mean_absolute_error(pred, nxt[S.RATING].to_numpy().astype(np.float64))
    return row


def append_history(work: Path, row: dict) -> pd.DataFrame:
    """Add (or replace) one measured cohort in ``WORK/cohorts/history.parquet``; returns the table."""
    path = Path(work) / "cohorts" / "history.parquet"
    table = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    if len(table):
        table = table[table["cohort_date"] != row["cohort_date"]]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values("cohort_date")
    _write(table, path)
    return table
