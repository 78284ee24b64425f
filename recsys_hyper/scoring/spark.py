"""Scale-out batch scoring on Spark (optional extra: ``pip install 'recsys-hyper[spark]'``).

Each user's events are grouped first (``collect_list`` of (timestamp, item, rating) structs,
sorted), joined with the user's features, and scored by :func:`score_partitions` through
``mapInPandas``: one function over an iterator of pandas batches that loads the model once per
task and runs the same :class:`~recsys_hyper.scoring.core.ChunkScorer` as the single-machine
scorer, so both give the same rows. (``groupBy().applyInPandas`` would shuffle every event
through Python; ``collect_list`` keeps the shuffle in the JVM.)

:func:`recsys_hyper.jobs.score_with_spark` takes a model directory or an MLflow model URI. The
registered model also runs as a row-wise UDF on grouped histories::

    udf = mlflow.pyfunc.spark_udf(spark, "models:/recsys-hyper@champion", env_manager="local",
                                  result_type="item_ids array<long>, scores array<float>")
    grouped.withColumn("recs", udf("user_id", "item_id", "rating", "timestamp"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from ..data import schema as S
from ..data.frames import explode_histories
from ..recommender import HyperRecommender
from .core import ChunkScorer

EVENT_FIELDS = (S.TIMESTAMP, S.ITEM_ID, S.RATING)


def score_partitions(load_model: Callable[[], HyperRecommender], top_k: int, exclude_seen: bool = True,
                     feature_columns=(), chunk_users: int = 4096
                     ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: grouped histories (+ user feature columns) in, top-K out.

    ``load_model()`` returns the model (it must be picklable, e.g. a ``functools.partial`` of a
    module-level loader, and work on the executors: a model directory on shared storage or an
    MLflow model URI); it is called once per task, not per batch.
    """
    feature_columns = list(feature_columns)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = ChunkScorer(load_model(), top_k, exclude_seen)
        for batch in batches:
            for start in range(0, len(batch), chunk_users):
                part = batch.iloc[start:start + chunk_users]
                users = part[[S.USER_ID, *feature_columns]].reset_index(drop=True)
                result = scorer.score(explode_histories(part), users)
                yield result.recommendations

    return run


def grouped_histories(spark, data_dir: str | Path):
    """One row per user: ``user_id``, the chronological lists ``item_id`` / ``rating`` /
    ``timestamp`` (empty for users known only from users.parquet) and the user's features."""
    from pyspark.sql import functions as F

    events = spark.read.parquet(join_path(data_dir, S.INTERACTIONS_FILE))
    if S.RATING not in events.columns:
        events = events.withColumn(S.RATING, F.lit(S.IMPLICIT_RATING))
    ordered = F.array_sort(F.collect_list(F.struct(*[F.col(c) for c in EVENT_FIELDS])))
    grouped = events.groupBy(S.USER_ID).agg(ordered.alias("events"))
    grouped = grouped.select(S.USER_ID, *[F.col(f"events.{c}").alias(c) for c in (S.ITEM_ID, S.RATING, S.TIMESTAMP)])
    features: list[str] = []
    users = _read_optional(spark, join_path(data_dir, S.USERS_FILE))
    if users is not None:
        features = [c for c in users.columns if c != S.USER_ID]
        grouped = grouped.join(users, on=S.USER_ID, how="full")
        for c in (S.ITEM_ID, S.RATING, S.TIMESTAMP):
            t = grouped.schema[c].dataType.simpleString()
            grouped = grouped.withColumn(c, F.coalesce(F.col(c), F.array().cast(t)))
    return grouped, features


def join_path(root: str | Path, name: str) -> str:
    """``root/name`` as a string: a URI such as ``s3://bucket/data`` keeps its scheme (``Path``
    would turn it into ``s3:/bucket/data``)."""
    return f"{str(root).rstrip('/')}/{name}"


def _read_optional(spark, path: str):
    """A Parquet dataset on any filesystem Spark reads, or ``None`` when there is none at ``path``."""
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(path)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            return None
        raise


def recs_ddl(grouped) -> str:
    """The output schema, with the ids' types as they are in the data (int64 or string)."""
    user = grouped.schema[S.USER_ID].dataType.simpleString()
    item = grouped.schema[S.ITEM_ID].dataType.elementType.simpleString()
    return f"user_id {user}, item_id {item}, score float, rank int"


def spark_recommendations(spark, data_dir: str | Path, load_model: Callable[[], HyperRecommender], top_k: int = 100,
                          exclude_seen: bool = True):
    """A Spark DataFrame of ``user_id, item_id, score, rank`` for every user of ``data_dir``
    (``load_model``: see :func:`score_partitions`)."""
    grouped, features = grouped_histories(spark, data_dir)
    return grouped.mapInPandas(score_partitions(load_model, top_k, exclude_seen, features), schema=recs_ddl(grouped))
