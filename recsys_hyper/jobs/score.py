"""Batch scoring jobs: every user of a dataset on one machine (``recsys-hyper score``), or on Spark."""

from __future__ import annotations

import datetime
import functools
import os
from pathlib import Path

import pandas as pd

from ..data import schema as S
from ..errors import RecsysHyperError
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
          progress: bool = True, allow_rating_mismatch: bool = False, explain: int | None = None,
          engine: str = "local", spark=None, spark_master: str | None = None, score_std: bool = False,
          exclude_items: str | os.PathLike | None = None, excluded=None) -> ScoreReport:
    """Score every user of ``data`` with ``model`` into ``out`` (partition ``date``, default today UTC);
    ``explain``: explanation columns with that many events per recommendation; ``score_std``: each
    recommendation's score standard deviation. ``engine``:
    ``"local"`` (this machine, streaming) or ``"spark"`` (``spark``: a session, else one is
    started on ``spark_master`` / ``$SPARK_MASTER`` / spark-submit's master / ``local[*]`` and
    stopped at the end); both give the same rows, tables and errors. Items never recommended:
    those ``data``'s items table marks retired, those of ``exclude_items`` (a file) and ``excluded``
    (ids)."""
    from .paths import check_dir_out
    from .serve import input_files

    if engine not in ("local", "spark"):
        raise RecsysHyperError(f"--engine {engine!r}: use local or spark")
    if engine == "spark" and (explain or score_std):
        option = "--explain" if explain else "--score-std"
        raise RecsysHyperError(f"{option} is not available with --engine spark; score with the local engine "
                               "to add it")
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    if engine == "local" or not _is_uri(out):
        check_dir_out(out, [*input_files(data, model), *([candidates] if candidates else []),
                            *([exclude_items] if exclude_items else [])],
                      writes=[Path(out) / table for table in TABLES])
    items = read_candidates(candidates)
    rec = load_model(model)
    if items is not None:                     # the model's id type, and at least one item it knows
        kind = "int64" if pd.api.types.is_integer_dtype(items) else "string"
        check_item_ids(rec, items, f"--candidates {candidates}", kind=kind)
    items = without_excluded(rec, data, items, exclude_items, excluded)
    if engine == "spark":
        return _score_on_spark(spark, spark_master, rec, model, data, out, date, progress=progress, top_k=top_k,
                               chunk_users=chunk_users,
                               candidates=items, exclude_seen=not include_seen,
                               allow_rating_mismatch=allow_rating_mismatch)
    return score_dataset(rec, data, out, date, top_k=top_k, chunk_users=chunk_users,
                         candidates=items, exclude_seen=not include_seen, progress=progress,
                         allow_rating_mismatch=allow_rating_mismatch, explain=explain, score_std=score_std)


def without_excluded(rec, data, candidates, exclude_items=None, excluded=None):
    """``candidates`` (default: the model's catalogue) less the items never to recommend: marked
    retired in ``data``'s items table, listed in ``exclude_items``, or in ``excluded``; the
    candidates as they are when nothing is excluded."""
    import numpy as np

    from .catalogue import allowed_items, excluded_items, union

    items_table = None
    if not _is_uri(data) and (Path(data) / S.ITEMS_FILE).exists():
        from ..data.validation import Collector, check_side_table, read_parquet_checked

        c = Collector()
        table = read_parquet_checked(Path(data) / S.ITEMS_FILE, c, required=False)
        items_table = check_side_table(table, S.ITEM_ID, S.ITEMS_FILE, c) if table is not None else None
        c.raise_if_any()
    out = union(excluded_items(items_table, exclude_items, rec.item_map_.kind), excluded)
    catalogue = rec.item_map_.ids(np.arange(len(rec.item_map_)))
    return allowed_items(catalogue, candidates, out)


def _without_retired_on_spark(spark, rec, data, candidates):
    """:func:`without_excluded`'s ``retired`` column for a data folder only Spark reads (a URI):
    the ids of the items it marks retired are collected (a catalogue's few), the rest as there."""
    import numpy as np

    from ..scoring.spark import _read_optional, join_path
    from .catalogue import RETIRED, allowed_items

    items = _read_optional(spark, join_path(data, S.ITEMS_FILE))
    if items is None or RETIRED not in items.columns:
        return candidates
    if items.schema[RETIRED].dataType.simpleString() != "boolean":
        raise RecsysHyperError(f"{join_path(data, S.ITEMS_FILE)}: column '{RETIRED}' marks retired items but holds "
                               f"{items.schema[RETIRED].dataType.simpleString()} values; store true for a retired "
                               f"item, false (or null) otherwise; or rename the column if it is a feature")
    retired = np.array([r[0] for r in items.filter(items[RETIRED]).select(S.ITEM_ID).collect()])
    catalogue = rec.item_map_.ids(np.arange(len(rec.item_map_)))
    return allowed_items(catalogue, candidates, retired)


def _is_uri(path) -> bool:
    return "://" in str(path)


def spark_session(master: str | None = None, progress: bool = True, app: str = "recsys-hyper score"):
    """A Spark session for the scoring job: ``master`` (or ``$SPARK_MASTER``); under spark-submit,
    the master it was given; else ``local[*]``. Spark's console bar of stages only with
    ``progress`` on a terminal (off one, it wrote hundreds of bar lines into a log)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError:
        raise RecsysHyperError("--engine spark needs PySpark: pip install 'recsys-hyper[spark]' (and Java 17+)") \
            from None
    import sys

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)     # executors run this environment's Python
    builder = SparkSession.builder.appName(app)
    master = master or os.environ.get("SPARK_MASTER")
    if master:
        builder = builder.master(master)
    elif not SparkConf().contains("spark.master"):
        builder = builder.master("local[*]")
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")   # tested on ours
    bar = progress and sys.stderr.isatty()
    spark = (builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.ui.showConsoleProgress", "true" if bar else "false").getOrCreate())
    # Spark's own WARN lines (stack traces of paths it probes) would drown the command's output
    spark.sparkContext.setLogLevel("WARN" if logging.getLogger("recsys_hyper").isEnabledFor(logging.DEBUG) else "ERROR")
    return spark


def _score_on_spark(spark, master, rec, model: str, data, out, date, **kwargs) -> ScoreReport:
    from ..scoring.batch import check_inputs
    from ..scoring.spark import score_dataset_spark

    if not _is_uri(data):               # the single machine's checks and errors, before Spark starts
        kwargs["checked"] = check_inputs(rec, Path(data), kwargs.get("allow_rating_mismatch", False))[1]
    progress = kwargs.pop("progress", True)
    own = spark is None
    spark = spark or spark_session(master, progress=progress)
    try:
        if _is_uri(data):                 # the items table's retired items, read where the data is
            kwargs["candidates"] = _without_retired_on_spark(spark, rec, data, kwargs.get("candidates"))
        return score_dataset_spark(spark, rec, functools.partial(load_model, model), data, out, date, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- Spark's and Java's errors: one line naming the input
        mapped = spark_error(exc, data)
        if mapped is None:
            raise
        raise mapped from None
    finally:
        if own:
            spark.stop()


def spark_error(exc: BaseException, data) -> RecsysHyperError | None:
    """A Spark, Py4J or Java error as one line naming the input and its first cause (exit 2), or
    ``None`` for anything that is not Spark's (a bug keeps its traceback)."""
    kind = type(exc).__module__ or ""
    if not (kind.startswith(("py4j", "pyspark")) or "Py4JJavaError" in type(exc).__name__):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line[len("Caused by: "):] for line in lines if line.startswith("Caused by: ")]
    cause = causes[-1] if causes else next((line for line in lines if "Exception" in line or "Error" in line),
                                           lines[0] if lines else "")      # the root cause, where Java gives one
    for marker in ("org.apache.spark.SparkException: ", "java.lang.", "py4j.protocol.Py4JJavaError: "):
        cause = cause.replace(marker, "")
    return RecsysHyperError(f"Spark could not read or score {data}: {type(exc).__name__}: {cause[:300]}; check "
                            f"that every Parquet file under it is complete and readable (the local engine, "
                            f"`score` without --engine spark, names the file), then run again")


def summary(report: ScoreReport, out: str | os.PathLike) -> str:
    return (f"scored {report.users:,} users ({report.users_without_history:,} without history) for {report.date} in "
            f"{report.seconds:.1f}s ({report.users_per_second:,.0f} users/s scoring)"
            + (f"; {report.unknown_item_events:,} events on {report.unknown_item_ids:,} unknown items skipped"
               if report.unknown_item_events else "")
            + f" -> {str(out).rstrip('/')}/recommendations/date={report.date}")


def score_with_spark(spark, data_dir: str | Path, model: str, top_k: int = 100, exclude_seen: bool = True):
    """A Spark DataFrame of ``user_id, item_id, score, rank`` for every user of ``data_dir``;
    ``model`` is a model directory the executors can read or an MLflow model URI (resolved on
    each executor, once per task)."""
    from ..scoring.spark import spark_recommendations

    return spark_recommendations(spark, data_dir, functools.partial(load_model, model), top_k, exclude_seen)
