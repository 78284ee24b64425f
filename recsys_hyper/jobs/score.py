"""Batch scoring jobs: every user of a dataset on one machine (``recsys-hyper score``), or on Spark."""

from __future__ import annotations

import datetime
import functools
import os
from pathlib import Path

import pandas as pd

from ..data import schema as S
from ..scoring import ScoreReport, score_dataset
from ..scoring.batch import TABLES
from ..recommender import check_item_ids
from .models import load_model


def read_candidates(path: str | os.PathLike | None):
    """The item ids of a candidates file (an ``item_id`` column), or ``None`` for the whole
    catalogue; checked as the data contract's ids are (no nulls, int64 or string)."""
    from ..data.validation import Collector, coerce_id, read_parquet_checked

    if path is None:
        return None
    path = Path(path)
    c = Collector()
    table = read_parquet_checked(path, c, required=True)
    ids = None
    if table is not None:
        if S.ITEM_ID not in table.column_names:
            c.add(path.name, S.ITEM_ID, f"is missing (columns present: {', '.join(table.column_names)})",
                  "--candidates needs an item_id column with the items to score")
        else:
            ids = coerce_id(table.column(S.ITEM_ID), path.name, S.ITEM_ID, c)
    c.raise_if_any()
    return pd.unique(ids.to_numpy())


def score(model: str, data: str | os.PathLike, out: str | os.PathLike, date: str | None = None, top_k: int = 100,
          chunk_users: int = 4096, candidates: str | os.PathLike | None = None, include_seen: bool = False,
          progress: bool = True, allow_rating_mismatch: bool = False, explain: int | None = None) -> ScoreReport:
    """Score every user of ``data`` with ``model`` into ``out`` (partition ``date``, default today UTC);
    ``explain``: explanation columns with that many events per recommendation."""
    from .paths import check_dir_out
    from .serve import input_files

    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    check_dir_out(out, [*input_files(data, model), *([candidates] if candidates else [])],
                  writes=[Path(out) / table for table in TABLES])
    items = read_candidates(candidates)
    rec = load_model(model)
    if items is not None:                     # the model's id type, and at least one item it knows
        kind = "int64" if pd.api.types.is_integer_dtype(items) else "string"
        check_item_ids(rec, items, f"--candidates {candidates}", kind=kind)
    return score_dataset(rec, data, out, date, top_k=top_k, chunk_users=chunk_users,
                         candidates=items, exclude_seen=not include_seen, progress=progress,
                         allow_rating_mismatch=allow_rating_mismatch, explain=explain)


def summary(report: ScoreReport, out: str | os.PathLike) -> str:
    return (f"scored {report.users:,} users ({report.users_without_history:,} without history) for {report.date} in "
            f"{report.seconds:.1f}s ({report.users_per_second:,.0f} users/s scoring)"
            + (f"; {report.unknown_item_events:,} events on {report.unknown_item_ids:,} unknown items skipped"
               if report.unknown_item_events else "")
            + f" -> {Path(out) / 'recommendations' / f'date={report.date}'}")


def score_with_spark(spark, data_dir: str | Path, model: str, top_k: int = 100, exclude_seen: bool = True):
    """A Spark DataFrame of ``user_id, item_id, score, rank`` for every user of ``data_dir``;
    ``model`` is a model directory the executors can read or an MLflow model URI (resolved on
    each executor, once per task)."""
    from ..scoring.spark import spark_recommendations

    return spark_recommendations(spark, data_dir, functools.partial(load_model, model), top_k, exclude_seen)
