"""Scale-out batch scoring on Spark (optional extra: ``pip install 'recsys-hyper[spark]'``).

:func:`score_dataset_spark` is ``recsys-hyper score`` on Spark (``score --engine spark``, or
``spark-submit`` of :mod:`recsys_hyper.spark_submit` with the same options): the same
checks (:func:`~recsys_hyper.scoring.batch.check_event_batch` on every partition, the row numbers
of the file in the errors), the same duplicate resolution (the latest event per user and item,
ties to the later row of the later file), the same chunk scorer, and the same three tables and
manifest, staged and renamed into ``OUT/<table>/date=D`` at the end (through Hadoop's file
system, so ``s3a://`` / ``hdfs://`` outputs work as local ones do).

The events and the users table's rows are partitioned by user and sorted within each partition
(the user's features row first, then the events by time; ties by file, then row), as flat rows,
and scored through ``mapInArrow``: one function over an iterator of Arrow batches that gathers
whole users into chunks, loads the model once per task and runs the same
:class:`~recsys_hyper.scoring.core.ChunkScorer` as the single-machine scorer; one row per user
(heads and top K) is streamed to a staging table both output tables are written from. (A
``collect_list`` of each user's events into nested arrays cost the JVM three times as much as
the sort, measured at 100k users; ``groupBy().applyInPandas`` would build a frame per user.)

:func:`recsys_hyper.jobs.score_with_spark` gives the recommendations as a DataFrame, for jobs
that go on with them in Spark; it takes a model directory or an MLflow model URI. The registered
model also runs as a row-wise UDF on grouped histories (:func:`grouped_histories`)::

    udf = mlflow.pyfunc.spark_udf(spark, "models:/recsys-hyper@champion", env_manager="local",
                                  result_type="item_ids array<long>, scores array<float>")
    grouped.withColumn("recs", udf("user_id", "item_id", "rating", "timestamp"))
"""

from __future__ import annotations

import dataclasses

import logging
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..data import schema as S
from ..data.frames import histories_from_frame
from ..errors import DataValidationError, RecsysHyperError
from ..recommender import HyperRecommender
from ..recommender.checks import OutsideScale
from .batch import (MANIFEST, TABLES, ScoreReport, check_date, check_event_batch, check_schema, event_columns,
                    finish_checks, latest_per_pair, manifest)
from .core import ChunkScorer, dictionary_columns, heads_columns, heads_schema, item_arrow_type, recs_schema

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# The whole job: recsys-hyper score on Spark

FILE, ROW = "_file", "_row"          # where each event comes from: Spark's file path and row index


def read_events(spark, data_dir: str | Path):
    """The histories (one file or every Parquet file below a folder) with each row's file and row
    number in it, as the single-machine reader orders them."""
    from pyspark.sql import functions as F

    events = spark.read.option("recursiveFileLookup", "true").parquet(join_path(data_dir, S.INTERACTIONS_FILE))
    events = events.select("*", F.col("_metadata.file_path").alias(FILE), F.col("_metadata.row_index").alias(ROW))
    return _seconds(events)


def _seconds(events):
    """Times of a timestamp or date type as UTC epoch seconds, as the data contract reads them
    (a time without a zone, and a date, as UTC), so that every later step reads one form."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    if S.TIMESTAMP not in events.columns:
        return events
    t = events.schema[S.TIMESTAMP].dataType
    col = F.col(S.TIMESTAMP)
    if isinstance(t, TimestampType):                    # an instant
        return events.withColumn(S.TIMESTAMP, F.unix_seconds(col))
    if isinstance(t, (TimestampNTZType, DateType)):     # wall-clock time, or a day: its fields read as UTC
        ntz = col.cast("timestamp_ntz")
        utc = F.make_timestamp(F.year(ntz), F.month(ntz), F.dayofmonth(ntz), F.hour(ntz), F.minute(ntz),
                               F.second(ntz), F.lit("UTC"))
        return events.withColumn(S.TIMESTAMP, F.unix_seconds(utc))
    return events


def _file_order(path: str) -> tuple[str, ...]:
    """Files in path order, component by component (as the single-machine reader sorts them)."""
    return tuple(path.split("/"))


def _check_partitions(implicit: bool, unsigned: list[str], columns: list[str], rating_range):
    """The ``mapInArrow`` function of the check pass: every run of consecutive rows of one file is
    checked as one batch of the single-machine scorer; one pickled summary per partition."""
    def run(batches):
        units, ids = [], set()
        for batch in batches:
            files = batch.column(FILE).to_numpy(zero_copy_only=False)
            rows = batch.column(ROW).to_numpy()
            cuts = np.flatnonzero((files[1:] != files[:-1]) | (rows[1:] != rows[:-1] + 1)) + 1
            for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
                part = batch.slice(int(start), int(stop - start))
                unit = {"file": files[start], "first": int(rows[start]), "n": int(stop - start),
                        "null_users": part.column(S.USER_ID).null_count}
                part = part.select(columns)
                try:
                    local, distinct, values = check_event_batch(part, implicit, unsigned)
                except DataValidationError as exc:
                    unit["error"] = exc
                else:
                    ids.update(distinct.to_pylist())
                    unit["problems"] = local
                    if values is not None and rating_range is not None:
                        unit["scale"] = OutsideScale(*rating_range)
                        unit["scale"].add(values)
                units.append(unit)
        yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps({"units": units, "ids": ids})], pa.binary())],
                                         names=["summary"])
    return run


def check_inputs_spark(spark, model: HyperRecommender, data_dir: str | Path, allow_rating_mismatch: bool = False):
    """:func:`~recsys_hyper.scoring.batch.check_inputs` on Spark: the same checks and errors (row
    numbers counted over the files in path order), one pass over the data. Returns the events
    (with their file and row) and the report so far."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from ..data.validation import Collector
    from ..errors import Problem

    source = join_path(data_dir, S.INTERACTIONS_FILE)
    try:
        events = read_events(spark, data_dir)
    except Exception as exc:                      # noqa: BLE001 -- Spark raises AnalysisException and others
        if _is_missing(exc):
            raise DataValidationError([_not_found(data_dir)]) from None
        raise
    schema = to_arrow_schema(events.drop(FILE, ROW).schema)
    users = _read_optional(spark, join_path(data_dir, S.USERS_FILE))
    kind, implicit, unsigned = check_schema(model, schema, users.toArrow() if users is not None else None, source,
                                            allow_rating_mismatch)
    columns = event_columns(schema)
    rating_range = None if implicit or model.rating_range_ is None else tuple(model.rating_range_)
    ddl = "summary binary"
    check = _check_partitions(implicit, unsigned, columns, rating_range)
    selected = events.select(*dict.fromkeys([S.USER_ID, *columns]), FILE, ROW)
    summaries = [pickle.loads(r.summary) for r in selected.mapInArrow(check, ddl).collect()]
    units = sorted((u for s in summaries for u in s["units"]), key=lambda u: (_file_order(u["file"]), u["first"]))
    sizes: dict[str, int] = {}
    for u in units:
        sizes[u["file"]] = max(sizes.get(u["file"], 0), u["first"] + u["n"])
    offsets, total = {}, 0
    for f in sorted(sizes, key=_file_order):
        offsets[f], total = total, total + sizes[f]
    null_users = sum(u["null_users"] for u in units)
    if null_users:                            # as the single machine's partition pass refuses them
        raise DataValidationError([Problem("events file", S.USER_ID, f"has {null_users} null ids", "drop those rows")])
    c, scale = Collector(), OutsideScale(*rating_range) if rating_range else None
    for u in units:
        if "error" in u:
            raise u["error"]
        c.extend_from_batch(u["problems"], offsets[u["file"]] + u["first"])
        if scale is not None and "scale" in u:
            scale.merge(u["scale"], offsets[u["file"]] + u["first"])
    report = ScoreReport(date="", interactions=total)
    distinct = set().union(*(s["ids"] for s in summaries)) if summaries else set()
    report.unknown_item_ids = finish_checks(model, c, scale, distinct, kind, total, source, allow_rating_mismatch)
    return events, report


def _is_missing(exc: Exception) -> bool:
    return "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc)


def _not_found(data_dir):
    from ..errors import Problem

    return Problem(S.INTERACTIONS_FILE, None, f"file not found in {data_dir}",
                   "batch scoring reads the users' histories from it (one Parquet file or a folder of Parquet files)")


def grouped_histories(spark, data_dir: str | Path):
    """One row per user: ``user_id``, the chronological lists ``item_id`` / ``rating`` /
    ``timestamp`` (empty for users known only from users.parquet) and the user's features; and
    the feature columns' names."""
    return _grouped(read_events(spark, data_dir), _read_optional(spark, join_path(data_dir, S.USERS_FILE)))


def _grouped(events, users):
    """One row per user: the chronological lists (ties: file, then row order, as the single
    machine's reader has them) and the user's features (users only in ``users`` get empty lists)."""
    from pyspark.sql import functions as F

    fields = [c for c in (S.TIMESTAMP, FILE, ROW, S.ITEM_ID, S.RATING) if c in events.columns]
    lists = [c for c in (S.ITEM_ID, S.RATING, S.TIMESTAMP) if c in events.columns]
    grouped = events.groupBy(S.USER_ID).agg(F.array_sort(F.collect_list(F.struct(*fields))).alias("events"))
    grouped = grouped.select(S.USER_ID, *[F.col(f"events.{c}").alias(c) for c in lists])
    features: list[str] = []
    if users is not None:
        features = [c for c in users.columns if c != S.USER_ID]
        grouped = grouped.join(users, on=S.USER_ID, how="full")
        for c in lists:
            t = grouped.schema[c].dataType.simpleString()
            grouped = grouped.withColumn(c, F.coalesce(F.col(c), F.array().cast(t)))
    return grouped, features


def _flat_users(table: pa.Table, features: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A chunk of :func:`_user_streams`' rows as (its events, one row per user with features);
    each part selected in Arrow first, so that no column reads as nullable floats."""
    is_event = pc.equal(table.column(KIND), 1)
    cols = [c for c in (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP) if c in table.column_names]
    events = table.filter(is_event).select(cols).to_pandas()
    users = pd.DataFrame({S.USER_ID: pc.unique(table.column(S.USER_ID)).to_numpy(zero_copy_only=False)})
    if features:
        rows = table.filter(pc.invert(is_event)).select([S.USER_ID, *features]).to_pandas()
        users = users.merge(rows, on=S.USER_ID, how="left")
    return events, users


def _scored_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """One row per user; the top K as two lists of primitives, best first (rank = position + 1):
    lists of structs cost Spark several times more to convert from Arrow and to cache."""
    return pa.schema([pa.field(S.USER_ID, user_type), pa.field("support_size", pa.int32()),
                      pa.field("rank_head", pa.list_(pa.float32())), pa.field("rating_head", pa.list_(pa.float32())),
                      pa.field("rec_items", pa.list_(item_type)), pa.field("rec_scores", pa.list_(pa.float32())),
                      pa.field("_dropped", pa.int64()), pa.field("_unknown", pa.int64())])


def _recommendation_rows(scored):
    """``user_id, item_id, score, rank`` rows from the scored users' lists."""
    from pyspark.sql import functions as F

    recs = F.transform(F.arrays_zip("rec_items", "rec_scores"),
                       lambda x, i: F.struct(x["rec_items"].alias(S.ITEM_ID), x["rec_scores"].alias("score"),
                                             (i + 1).cast("int").alias("rank")))
    return scored.select(S.USER_ID, F.inline(recs))


def _chunk_results(load_model, top_k: int, exclude_seen: bool, candidates, features: list[str], chunks):
    """Each chunk of whole users (tables of :func:`_user_streams`' rows) scored: the latest event
    per (user, item), then the single-machine scorer. Yields (the chunk's result, duplicates
    dropped, events on unknown items, users without history). Torch runs on the task's CPUs
    (``spark.task.cpus``), whatever the worker's environment says."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None:
        torch.set_num_threads(max(1, ctx.cpus()))
    scorer = ChunkScorer(load_model(), top_k, exclude_seen, candidates)
    for long_events, users in (_flat_users(chunk, features) for chunk in chunks):
        events, dropped = latest_per_pair(long_events)
        h = histories_from_frame(events, scorer.item_ids, users, warn=False)
        yield scorer.score_histories(h, users), dropped, len(events) - len(h.items), int((h.lengths == 0).sum())


def _score_chunks(load_model, top_k: int, exclude_seen: bool, candidates, features: list[str], schema: pa.Schema):
    """The scoring of chunks of whole users (:func:`_chunk_results`): one row per user with its
    heads and its top K (for outputs only Spark's writers reach)."""
    item_type = schema.field("rec_items").type.value_type

    def run(chunks):
        for res, dropped, unknown_events, _ in _chunk_results(load_model, top_k, exclude_seen, candidates, features,
                                                              chunks):
            heads, recs = res.heads, res.recommendations
            pos = pd.Index(heads[S.USER_ID]).get_indexer(recs[S.USER_ID])
            order = np.lexsort((recs["rank"].to_numpy(), pos))
            counts = np.bincount(pos, minlength=len(heads))
            offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
            extra = np.zeros(len(heads), np.int64)
            unknown = extra.copy()
            if len(heads):
                extra[0], unknown[0] = dropped, unknown_events
            yield pa.RecordBatch.from_arrays([
                *heads_columns(heads, schema.field(S.USER_ID).type),
                pa.ListArray.from_arrays(offsets, pa.array(recs[S.ITEM_ID].to_numpy()[order], item_type)),
                pa.ListArray.from_arrays(offsets, pa.array(recs["score"].to_numpy(np.float32)[order])),
                pa.array(extra), pa.array(unknown)], schema=schema)
    return run


#: what each scoring task that writes its own files returns
WRITTEN = pa.schema([pa.field("file", pa.string()), pa.field("users", pa.int64()), pa.field("dropped", pa.int64()),
                     pa.field("unknown", pa.int64()), pa.field("empty", pa.int64())])


def _write_chunks(load_model, top_k: int, exclude_seen: bool, candidates, features: list[str], staging: str,
                  user_type: pa.DataType, item_type: pa.DataType):
    """The scoring of chunks of whole users (:func:`_chunk_results`) written by the task itself,
    as the single-machine scorer writes them (:func:`~recsys_hyper.scoring.batch.write_chunk`):
    one recommendations file and one heads file per task attempt under ``staging``; one row of
    :data:`WRITTEN` per task (none for a task without users)."""
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    from .batch import write_chunk

    recs_type, heads_type = recs_schema(user_type, item_type), heads_schema(user_type)

    def run(chunks):
        ctx = TaskContext.get()
        name = f"part-{ctx.partitionId():05d}-{ctx.attemptNumber()}-{uuid.uuid4().hex[:8]}.parquet"
        writers, totals = None, np.zeros(4, np.int64)
        try:
            for res, dropped, unknown, empty in _chunk_results(load_model, top_k, exclude_seen, candidates, features,
                                                               chunks):
                if writers is None:
                    writers = [pq.ParquetWriter(os.path.join(staging, table, name), schema,
                                                use_dictionary=dictionary_columns(schema))
                               for table, schema in (("recommendations", recs_type), ("user_heads", heads_type))]
                write_chunk(res, writers[0], recs_type, writers[1], heads_type)
                totals += (len(res.heads), dropped, unknown, empty)
        finally:
            for w in writers or ():
                w.close()
        if writers is not None:
            yield pa.RecordBatch.from_arrays([pa.array([name]), *(pa.array([int(v)]) for v in totals)], schema=WRITTEN)
    return run


def tasks_write(spark, out_dir: str | Path) -> bool:
    """Whether the scoring tasks write the output files themselves (with the single machine's
    writer): the output is a path of the file system the executors share with this process (no
    scheme, and Hadoop's default file system is the local one: ``local[*]``, or a cluster on a
    shared mount). Otherwise (``s3a://``, ``hdfs://``) Spark's writers write them."""
    if "://" in str(out_dir) or str(out_dir).startswith("file:"):
        return False
    return str(spark._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///").startswith("file:")


class _Files:
    """Hadoop's file system, as the job's Spark session sees it (local, HDFS, S3A ...)."""

    def __init__(self, spark):
        self.jvm, self.conf = spark._jvm, spark._jsc.hadoopConfiguration()

    def path(self, uri: str):
        p = self.jvm.org.apache.hadoop.fs.Path(uri)
        return p, p.getFileSystem(self.conf)

    def exists(self, uri: str) -> bool:
        p, fs = self.path(uri)
        return bool(fs.exists(p))

    def rename(self, src: str, dst: str) -> None:
        s, fs = self.path(src)
        d, _ = self.path(dst)
        fs.mkdirs(d.getParent())
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def delete(self, uri: str) -> None:
        p, fs = self.path(uri)
        fs.delete(p, True)

    def write_text(self, uri: str, text: str) -> None:
        p, fs = self.path(uri)
        stream = fs.create(p, True)
        try:
            stream.write(bytearray(text.encode()))
        finally:
            stream.close()


def scored_users(spark, model: HyperRecommender, load_model: Callable[[], HyperRecommender], data_dir: str | Path,
                 top_k: int = 100, chunk_users: int = 4096, candidates=None, exclude_seen: bool = True,
                 allow_rating_mismatch: bool = False, checked: ScoreReport | None = None, write_to: str | None = None):
    """The inputs checked (:func:`check_inputs_spark`), then a lazy DataFrame of one row per user:
    ``user_id, support_size, rank_head, rating_head``, ``rec_items`` and ``rec_scores`` (the top K,
    best first); and the report of the checks. ``model`` is the model on the driver;
    ``load_model()`` gives it on the executors (picklable: e.g. a ``functools.partial`` of a
    module-level loader of a model directory on shared storage or an MLflow model URI), once per task.
    ``write_to``: the tasks write the recommendations and heads under that folder themselves
    (:func:`_write_chunks`) and the DataFrame holds one row of :data:`WRITTEN` per task."""
    from pyspark.sql.pandas.types import from_arrow_schema

    if checked is None:
        events, report = check_inputs_spark(spark, model, data_dir, allow_rating_mismatch)
    else:                                 # checked already (a local folder, by the single machine's checks)
        events, report = read_events(spark, data_dir), dataclasses.replace(checked)
    stream, features = _user_streams(spark, events, _read_optional(spark, join_path(data_dir, S.USERS_FILE)),
                                     report.interactions)
    user_type = pa.string() if stream.schema[S.USER_ID].dataType.simpleString() == "string" else pa.int64()
    item_type = item_arrow_type(model)
    if write_to is None:
        schema = _scored_schema(user_type, item_type)
        score = _score_chunks(load_model, top_k, exclude_seen, candidates, features, schema)
    else:
        schema = WRITTEN
        score = _write_chunks(load_model, top_k, exclude_seen, candidates, features, write_to, user_type, item_type)
    return stream.mapInArrow(_score_streams(score, chunk_users), from_arrow_schema(schema)), report


KIND = "_kind"                      # 0: a user's features row, 1: an event
#: events per partition of the scoring pass (each partition is sorted by Spark, streamed to Python)
EVENTS_PER_PARTITION = 2_000_000


def _user_streams(spark, events, users, n_events: int):
    """Every user's rows together and in order, as flat rows (no nested lists): the users table's
    row first (users only in it included), then the events by time (ties: file, then row, as the
    single machine's reader has them). Partitioned by user; one partition per core at least."""
    from pyspark.sql import functions as F

    cols = [c for c in (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP, FILE, ROW) if c in events.columns]
    rows = events.select(*cols).withColumn(KIND, F.lit(1).cast("byte"))
    features: list[str] = []
    if users is not None:
        features = [c for c in users.columns if c != S.USER_ID]
        rows = rows.unionByName(users.withColumn(KIND, F.lit(0).cast("byte")), allowMissingColumns=True)
    n = max(spark.sparkContext.defaultParallelism, -(-max(n_events, 1) // EVENTS_PER_PARTITION))
    order = [S.USER_ID, KIND] + [c for c in (S.TIMESTAMP, FILE, ROW) if c in cols]
    return rows.repartition(n, S.USER_ID).sortWithinPartitions(*order), features


def _score_streams(score, chunk_users: int):
    """The ``mapInArrow`` function of the scoring pass over :func:`_user_streams`: whole users are
    gathered (a user's rows may span Arrow batches) into chunks of about ``chunk_users``, then the
    chunks are scored by ``score`` (:func:`_score_chunks` or :func:`_write_chunks`)."""

    def chunks(batches):
        pending: list[pa.RecordBatch] = []
        users_pending = 0
        for batch in batches:
            if not batch.num_rows:
                continue
            ids = batch.column(S.USER_ID)
            pending.append(batch)
            users_pending += len(pc.unique(ids))
            if users_pending <= chunk_users:
                continue
            table = pa.Table.from_batches(pending)
            uid = table.column(S.USER_ID)
            last = uid[len(uid) - 1]
            cut = len(uid) - int(pc.sum(pc.equal(uid, last)).as_py())      # the last user may go on
            if cut == 0:
                continue
            yield table.slice(0, cut)
            rest = table.slice(cut)
            pending, users_pending = rest.to_batches(), 1
        if pending:
            yield pa.Table.from_batches(pending)

    def run(batches):
        yield from score(chunks(batches))
    return run


def spark_recommendations(spark, data_dir: str | Path, load_model: Callable[[], HyperRecommender], top_k: int = 100,
                          exclude_seen: bool = True):
    """A Spark DataFrame of ``user_id, item_id, score, rank`` for every user of ``data_dir``, after
    the same checks as ``score`` (``load_model``: see :func:`scored_users`)."""

    scored, _ = scored_users(spark, load_model(), load_model, data_dir, top_k, exclude_seen=exclude_seen)
    return _recommendation_rows(scored)


def score_dataset_spark(spark, model: HyperRecommender, load_model: Callable[[], HyperRecommender],
                        data_dir: str | Path, out_dir: str | Path, date: str, top_k: int = 100,
                        chunk_users: int = 4096, candidates=None, exclude_seen: bool = True,
                        allow_rating_mismatch: bool = False, checked: ScoreReport | None = None) -> ScoreReport:
    """``recsys-hyper score`` on Spark: every user of ``data_dir`` into ``out_dir``'s three tables
    for ``date``, with the single-machine scorer's checks, rows and manifest (``model``,
    ``load_model``: see :func:`scored_users`; ``checked``: the report of
    :func:`~recsys_hyper.scoring.batch.check_inputs` run already, so that Spark does not check
    again). The users are scored once. Where the tasks can write the output's file system
    (:func:`tasks_write`), each task writes its users' recommendations and heads with the single
    machine's writer; otherwise the scored users are streamed to a staging table and Spark writes
    both tables from it (a cache of that size thrashes the JVM's heap: measured 2.3x slower at
    100k users). The tables are staged and renamed into place at the end either way."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    t_start = time.perf_counter()
    check_date(date)
    files = _Files(spark)
    out = str(out_dir).rstrip("/")
    staging = f"{out}/.staging-{date}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    in_tasks = tasks_write(spark, out)
    scored, report = scored_users(spark, model, load_model, data_dir, top_k, chunk_users, candidates, exclude_seen,
                                  allow_rating_mismatch, checked=checked, write_to=staging if in_tasks else None)
    report.date = date
    scorer = ChunkScorer(model, top_k, exclude_seen, candidates)
    item_type = item_arrow_type(model)
    try:
        t_score = time.perf_counter()
        if in_tasks:
            _written_by_tasks(scored, staging, report)
        else:
            scored.write.parquet(f"{staging}/_scored")                 # the one scoring pass, streamed to disk
            scored = spark.read.parquet(f"{staging}/_scored")
            stats = scored.agg(F.count(F.lit(1)).alias("users"), F.sum("_dropped").alias("dropped"),
                               F.sum("_unknown").alias("unknown"),
                               F.sum((F.col("support_size") == 0).cast("long")).alias("empty")).collect()[0]
            report.users, report.duplicates_dropped = int(stats["users"]), int(stats["dropped"] or 0)
            report.unknown_item_events = int(stats["unknown"] or 0)
            report.users_without_history = int(stats["empty"] or 0)
            _recommendation_rows(scored).write.parquet(f"{staging}/recommendations")
            scored.select(S.USER_ID, "support_size", "rank_head", "rating_head").write.parquet(f"{staging}/user_heads")
            files.delete(f"{staging}/_scored")
        report.scoring_seconds = time.perf_counter() - t_score
        vectors = pa.Table.from_pandas(scorer.item_vectors(), preserve_index=False)
        vectors = vectors.cast(pa.schema([pa.field(S.ITEM_ID, item_type), pa.field("phi", pa.list_(pa.float32())),
                                          pa.field("rank_bias", pa.float32()), pa.field("rating_bias", pa.float32())]))
        spark.createDataFrame(vectors.to_pandas(), schema=from_arrow_schema(vectors.schema)).coalesce(1) \
            .write.parquet(f"{staging}/item_vectors")
        if report.unknown_item_events:
            log.warning("%d history events on %d item ids unknown to the model were skipped",
                        report.unknown_item_events, report.unknown_item_ids)
        report.seconds = time.perf_counter() - t_start
        report.outputs = {t: f"{out}/{t}/date={date}" for t in TABLES}
        files.write_text(f"{staging}/recommendations/{MANIFEST}", manifest(report, scorer))
        _commit(files, staging, out, date)
    except Exception as exc:
        mapped = from_executor(exc)
        if mapped is exc:
            raise
        raise mapped from None
    finally:
        files.delete(staging)                 # what a failed run staged; after a commit, the empty folder
    return report


def _written_by_tasks(written, staging: str, report: ScoreReport) -> None:
    """Run the scoring pass whose tasks write the recommendations and heads under ``staging``
    (:func:`_write_chunks`); remove the files of failed or repeated attempts (those no finished
    task reported) and add the tasks' counts to ``report``."""
    tables = [Path(staging, table) for table in ("recommendations", "user_heads")]
    for folder in tables:
        folder.mkdir(parents=True)
    rows = written.toArrow()
    kept = set(rows.column("file").to_pylist())
    for folder in tables:
        for f in folder.iterdir():
            if f.name not in kept:
                f.unlink()
    total = {name: int(pc.sum(rows.column(name)).as_py() or 0) for name in ("users", "dropped", "unknown", "empty")}
    report.users, report.duplicates_dropped = total["users"], total["dropped"]
    report.unknown_item_events, report.users_without_history = total["unknown"], total["empty"]


def _commit(files: _Files, staging: str, out: str, date: str) -> None:
    """Rename each staged table into ``OUT/<table>/date=D``, replacing a previous run of D."""
    trash = []
    for table in TABLES:
        final = f"{out}/{table}/date={date}"
        if files.exists(final):
            old = f"{out}/{table}/.old-date={date}-{uuid.uuid4().hex[:8]}"
            files.rename(final, old)
            trash.append(old)
        files.rename(f"{staging}/{table}", final)
    for old in trash:
        files.delete(old)


def from_executor(exc: Exception) -> Exception:
    """A refusal raised on an executor (non-finite scores ...) as the error the single machine
    raises; anything else unchanged."""
    text = str(exc)
    for name in ("DataValidationError", "RecsysHyperError"):
        marker = f"recsys_hyper.errors.{name}: "
        if marker in text:
            return RecsysHyperError(text.split(marker, 1)[1].strip().splitlines()[0])
    return exc
