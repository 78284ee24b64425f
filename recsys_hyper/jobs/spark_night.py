"""The nightly's data steps as Spark jobs: ``pipeline nightly --engine spark`` (optional extra:
``pip install 'recsys-hyper[spark]'``).

The night keeps its state, lock, tracking, gate and layout (:mod:`.nightly`); what reads or
writes the events runs on Spark instead of one process:

* ``validate``: each landing file is checked by a Spark task, with the one-machine reader
  (:func:`.nightly.read_event_file`: the same checks, conversions and messages); the quarantine is
  decided on the driver from the tasks' findings, as on one machine.
* ``merge``: the night's files are read by tasks into the contract's types (one stated schema),
  forgotten users' events dropped, duplicates across files resolved (the latest event per user
  and item; ties to the later file, then row), events the snapshot already holds left out (an
  anti-join with the latest earlier event of each pair), and the rest written as the night's
  partition, in the files' row order (``part-00000.parquet``, ...). The night's new users (a
  cohort) are found by an anti-join with the earlier nights' users and their events written in
  parts too.
* ``split``: the distinct users of the snapshot, labelled by the same stable hash on executors.
* ``train``, ``evaluate``, ``cold_start_eval``: the events of the users they need (a seeded
  sample of training users, ``--train-users``; the evaluation's sampled users) are selected by
  Spark and collected to the driver in the snapshot's order, then fitted and measured as on one
  machine: with every user sampled, the same data as the one-machine night, row for row.
* ``score``: :func:`~recsys_hyper.scoring.spark.score_dataset_spark` on the snapshot.

What stays on the driver: the landing's users / items tables and the night's content digest
(8 bytes per event of the night, sorted), the split's labels (one row per user), the samples'
events, and the cohort step's serving of the night's new users from their events (written by
Spark; on a first night, every user's). The work folder is a local (or mounted) path: its state, lock and records are
files.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..data import schema as S
from ..errors import DataValidationError, RecsysHyperError

log = logging.getLogger(__name__)

FILE, ROW = "_file", "_row"          # the night's file (its place in the night's order) and row in it


def session(cfg):
    """The night's Spark session (``cfg.spark_master``, else ``$SPARK_MASTER``, else ``local[*]``)."""
    from .score import spark_session

    return spark_session(cfg.spark_master, progress=cfg.progress, app="recsys-hyper nightly")


# ------------------------------------------------------------------------------------ validate

def _check_file(args):
    """One landing file checked by :func:`.nightly.check_event_file` (on an executor)."""
    from .nightly import check_event_file

    path, part, scale = args
    return path, check_event_file(Path(path), Path(part), scale)


def check_files(spark, files: list[Path], part: Path, scale) -> list[tuple]:
    """:func:`.nightly.check_event_file` of each landing file, one Spark task a file, in order."""
    if not files:
        return []
    jobs = [(str(f), str(part), scale) for f in files]
    found = dict(spark.sparkContext.parallelize(jobs, len(jobs)).map(_check_file).collect())
    return [found[str(f)] for f in files]


# --------------------------------------------------------------------------------------- merge

def _arrow_schema(kinds: dict, implicit: bool) -> pa.Schema:
    kind = {"int64": pa.int64(), "string": pa.string()}
    schema = S.interactions_schema(kind[kinds[S.USER_ID]], kind[kinds[S.ITEM_ID]])
    if implicit:
        schema = schema.remove(schema.get_field_index(S.RATING))
    return schema


def _night_reader(part: str, schema: pa.Schema, digests: set, work_id: str):
    """The mapInArrow function: (file number, path) rows -> the files' events in ``schema``, with
    their file number, row and whether the user is forgotten."""
    def read(batches):
        from ..data.dataset import interactions_table
        from ..data.validation import Collector, ValidationReport
        from .forget import mask_of
        from .nightly import read_event_file

        for batch in batches:
            for number, path in zip(batch.column(FILE).to_pylist(), batch.column("path").to_pylist()):
                c, rep = Collector(), ValidationReport()
                frame = read_event_file(Path(path), Path(part), c, rep)
                if c.problems:                    # changed since the validate step
                    raise DataValidationError(c.problems)
                table = interactions_table(frame, implicit=S.RATING not in schema.names).cast(schema)
                n = table.num_rows
                table = table.append_column(FILE, pa.array(np.full(n, number, dtype=np.int32)))
                table = table.append_column(ROW, pa.array(np.arange(n, dtype=np.int64)))
                forgotten = mask_of(frame[S.USER_ID].to_numpy(), digests, work_id)
                table = table.append_column("_forgotten", pa.array(forgotten))
                yield from table.to_batches(max_chunksize=65_536)
    return read


def merge(spark, snapshot: Path, part: Path, files: list[str], kinds: dict, staging: Path, cohort_staging: Path,
          digests: set, work_id: str) -> dict:
    """The night's new events written to ``staging`` (the partition folder to be), its digest
    beside them, and the night's new users' events to ``cohort_staging`` (a folder of parts, in
    the files' row order; never collected: on a first night they are the whole night); the counts
    of the merge."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from ..data.dataset import row_words, words_digest
    from . import snapshot as snapshot_store

    implicit = kinds["feedback"] == "implicit"
    schema = _arrow_schema(kinds, implicit)
    out = schema.append(pa.field(FILE, pa.int32())).append(pa.field(ROW, pa.int64())) \
        .append(pa.field("_forgotten", pa.bool_()))
    listing = spark.createDataFrame(pd.DataFrame({FILE: np.arange(len(files), dtype=np.int32), "path": files}))
    raw = listing.repartition(len(files), FILE).mapInArrow(_night_reader(str(part), schema, digests, work_id),
                                                           from_arrow_schema(out))
    u, i, t = S.USER_ID, S.ITEM_ID, S.TIMESTAMP
    latest = Window.partitionBy(u, i).orderBy(F.col(t).desc(), F.col(FILE).desc(), F.col(ROW).desc())
    ranked = raw.withColumn("_rank", F.when(~F.col("_forgotten"), F.row_number().over(latest)))
    earlier_files = [str(f) for f in snapshot_store.partitions(snapshot, exclude=part.name.split("=", 1)[1])]
    if earlier_files:
        before = (spark.read.parquet(*earlier_files)
                  .select(u, i, t, *([] if implicit else [S.RATING]), F.col("_metadata.file_path").alias("_path"),
                          F.col("_metadata.row_index").alias("_prow")))
        last = Window.partitionBy(u, i).orderBy(F.col(t).desc(), F.col("_path").desc(), F.col("_prow").desc())
        before = before.withColumn("_r", F.row_number().over(last)).filter("_r = 1") \
            .select(u, i, F.col(t).alias("_t_before"),
                    *([] if implicit else [F.col(S.RATING).alias("_rating_before")]))
        ranked = ranked.join(before, [u, i], "left")
        same = F.col("_t_before") == F.col(t)
        if not implicit:
            same = same & (F.col("_rating_before") == F.col(S.RATING))
        held = (F.col("_t_before") > F.col(t)) | same
        ranked = ranked.withColumn("_held", F.coalesce(held, F.lit(False)))
        earlier_users = spark.read.parquet(*earlier_files).select(u).distinct()
    else:
        ranked = ranked.withColumn("_held", F.lit(False))
        earlier_users = None
    marked = staging.with_name(staging.name + ".marked")
    ranked.write.mode("overwrite").parquet(str(marked))       # one pass over the files; counted below
    try:
        marked_df = spark.read.parquet(str(marked))
        first = F.col("_rank") == 1
        counts = marked_df.agg(F.count(F.lit(1)).alias("rows"),
                               F.sum(F.col("_forgotten").cast("long")).alias("forgotten"),
                               F.sum((F.col("_rank") > 1).cast("long")).alias("duplicates"),
                               F.sum((first & F.col("_held")).cast("long")).alias("repeated")).collect()[0]
        tonight = marked_df.filter((F.col("_rank") == 1) & ~F.col("_held"))
        tonight.orderBy(FILE, ROW).select(*schema.names).write.parquet(str(staging))
        written = sorted(staging.glob("part-*.parquet"))
        for n, f in enumerate(written):          # Spark's names, in their order, as the snapshot names parts
            f.rename(staging / f"part-{n:05d}.parquet")
        if not written:                          # every event held already: an empty partition, as on one machine
            pq.write_table(schema.empty_table(), staging / "part-00000.parquet")
        for f in staging.iterdir():
            if not f.name.startswith("part-") and f.is_file():
                f.unlink()                       # _SUCCESS and checksum files
        if earlier_users is not None:
            new = tonight.join(earlier_users, u, "left_anti").orderBy(FILE, ROW).select(*schema.names)
        else:
            new = tonight.orderBy(FILE, ROW).select(*schema.names)
        new.write.parquet(str(cohort_staging))        # the night's new users' events (on a first night, all)
        for f in list(cohort_staging.iterdir()):
            if not f.name.startswith("part-"):
                f.unlink()                           # _SUCCESS and checksum files
        new_users = spark.read.parquet(str(cohort_staging)).select(u).distinct().count()
        night_rows = tonight.count()
    finally:
        shutil.rmtree(marked, ignore_errors=True)
    # the night's content digest, as content_digest computes it on one machine (8 bytes a row here)
    header = row_words(schema.empty_table().to_pandas())[1]
    words = [row_words(batch.to_pandas())[0] for batch in
             pads.dataset([str(f) for f in sorted(staging.glob("part-*.parquet"))], format="parquet").to_batches()]
    digest = words_digest(np.sort(np.concatenate(words)) if words else np.array([], np.uint64), header)
    (staging / snapshot_store.DIGEST_FILE).write_text(digest + "\n")
    return {"rows": int(counts["rows"]), "forgotten_events": int(counts["forgotten"] or 0),
            "duplicates_dropped": int(counts["duplicates"] or 0), "repeated_events": int(counts["repeated"] or 0),
            "night_events": int(night_rows), "new_users": int(new_users)}


def snapshot_counts(spark, snapshot: Path) -> dict:
    """Rows, distinct users and distinct items over every night of the snapshot."""
    from pyspark.sql import functions as F

    from . import snapshot as snapshot_store

    files = [str(f) for f in snapshot_store.partitions(snapshot)]
    if not files:
        return {"interactions": 0, "users": 0, "items": 0}
    row = spark.read.parquet(*files).agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(S.USER_ID).alias("users"),
                                         F.countDistinct(S.ITEM_ID).alias("items")).collect()[0]
    return {"interactions": int(row["rows"]), "users": int(row["users"]), "items": int(row["items"])}


# --------------------------------------------------------------------------------------- split

def split_users(spark, snapshot: Path, val_fraction: float, test_fraction: float) -> pd.Series:
    """Every user of the snapshot and of its users table, labelled by :func:`.state.stable_split`
    on executors; sorted by user id, as the one-machine split."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from . import snapshot as snapshot_store

    files = [str(f) for f in snapshot_store.partitions(snapshot)]
    ids = spark.read.parquet(*files).select(S.USER_ID)
    if (snapshot / S.USERS_FILE).is_file():
        ids = ids.unionByName(spark.read.parquet(str(snapshot / S.USERS_FILE)).select(S.USER_ID))
    ids = ids.distinct()
    id_type = pa.int64() if dict(ids.dtypes)[S.USER_ID] in ("bigint", "int") else pa.string()
    schema = pa.schema([pa.field(S.USER_ID, id_type), pa.field("split", pa.string())])

    def label(batches):
        from .state import stable_split

        for batch in batches:
            users = batch.column(0).to_numpy(zero_copy_only=False)
            split = stable_split(users, val_fraction, test_fraction)
            yield pa.RecordBatch.from_arrays([pa.array(users, id_type), pa.array(split.to_numpy(), pa.string())],
                                             schema=schema)

    labelled = ids.mapInArrow(label, from_arrow_schema(schema)).orderBy(S.USER_ID)
    table = _collect(labelled)
    return pd.Series(table.column("split").to_numpy(zero_copy_only=False),
                     index=pd.Index(table.column(S.USER_ID).to_numpy(zero_copy_only=False), name=S.USER_ID),
                     name="split")


def _collect(df) -> pa.Table:
    """A Spark DataFrame as one Arrow table on the driver (in its order)."""
    return df.toArrow()


# ---------------------------------------------------------------------- the users' events, collected

def users_events(spark, snapshot: Path, users) -> pa.Table:
    """The snapshot's events of ``users`` (every user when ``None``) in the one-machine reader's
    order (nights, then files, then rows), in the snapshot's schema."""
    from pyspark.sql import functions as F

    from . import snapshot as snapshot_store

    parts = snapshot_store.partitions(snapshot)
    schema = snapshot_store.schema(snapshot)
    events = spark.read.parquet(*[str(f) for f in parts]).select(
        *schema.names, F.col("_metadata.file_path").alias("_path"), F.col("_metadata.row_index").alias("_prow"))
    if users is not None:
        users = np.asarray(users)
        kind = "long" if users.dtype.kind in "iu" else "string"
        wanted = spark.createDataFrame(pd.DataFrame({S.USER_ID: users}), f"{S.USER_ID} {kind}")
        events = events.join(F.broadcast(wanted) if len(users) <= 1_000_000 else wanted, S.USER_ID, "left_semi")
    table = _collect(events.orderBy("_path", "_prow").select(*schema.names))
    return table.cast(pa.schema([schema.field(n) for n in schema.names]))


def users_dataset(spark, snapshot: Path, users):
    """A :class:`~recsys_hyper.data.Dataset` of ``users``' events (all users: ``None``) with the
    snapshot's users / items tables: what :func:`~recsys_hyper.data.load_dataset` of the snapshot
    gives for those users, row for row (duplicates across nights resolved the same way)."""
    from ..data.dataset import validate_frames

    events = users_events(spark, snapshot, users)
    side = [pq.read_table(snapshot / name) if (snapshot / name).is_file() else None
            for name in (S.USERS_FILE, S.ITEMS_FILE)]
    if events.num_rows == 0:
        raise RecsysHyperError(f"{snapshot}: none of the {len(users) if users is not None else 0} users sampled has "
                               f"an event in the snapshot")
    return validate_frames(events, *side, source=str(snapshot))


# --------------------------------------------------------------------------------------- train

def fit_on_executors(spark, ds, out: Path, config, validation_users, warm_start, processes: int,
                     progress: bool = True):
    """Meta-train across ``processes`` Spark tasks with ``TorchDistributor`` (PyTorch DDP, gloo):
    each task runs :func:`~recsys_hyper.jobs.train.fit_rank` on the data the driver collected
    (written once beside ``out`` as a data directory; every task reads it: on a cluster, the work
    folder is a path every executor mounts), warm-started from ``warm_start`` (saved beside it);
    the first task saves the model to ``out``. Returns (the model loaded from ``out``, the number
    of processes). Each task trains on ``spark.task.cpus`` threads."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from ..data.dataset import write_dataset
    from ..recommender import HyperRecommender
    from .train import fit_rank, rank_error_file

    out = Path(out)
    data, warm = out.parent / f".{out.name}.data", out.parent / f".{out.name}.warm"
    write_dataset(ds, data, overwrite=True)
    if warm_start is not None:
        warm_start.save(warm)
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    errors = [rank_error_file(out, rank) for rank in range(processes)]
    for f in errors:
        f.unlink(missing_ok=True)
    log.info("training on %d Spark tasks (TorchDistributor, %d thread%s each)", processes, threads,
             "s" if threads > 1 else "")
    try:
        done = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=False).run(
            fit_rank, str(data), str(out), config, validation_users, str(warm) if warm_start is not None else None,
            threads, progress, ds.source)
    except Exception as exc:                 # noqa: BLE001 -- the tasks' own refusal, else one line of Spark's
        refused = next((f.read_text() for f in errors if f.is_file()), None)
        if refused is not None:
            raise RecsysHyperError(refused) from None
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise RecsysHyperError(f"training across {processes} Spark tasks (TorchDistributor) failed: "
                               f"{type(exc).__name__}: {(lines[0] if lines else '')[:400]}; the tasks' output is "
                               f"in Spark's executor logs (on local[*], above)") from None
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(warm, ignore_errors=True)
        for f in errors:
            f.unlink(missing_ok=True)
    return HyperRecommender.load(out), int(done["processes"])
