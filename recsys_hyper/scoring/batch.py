"""Streaming batch scoring: every user of a Parquet dataset, memory bounded by the chunk.

1. **Check before any work**: the histories' schema, and their item vocabulary against the
   model's (read from the ``item_id`` column alone).
2. **Hash-partition** the histories (one file or a folder of many; a user's rows may be spread
   across files) and the users file into buckets on disk, streaming record batches, so that every
   user's rows land in one bucket.
3. **Score bucket by bucket, chunk by chunk**: heads, the whole catalogue (or a candidate list)
   as one GEMM per chunk, seen items excluded, top K; each chunk appended to the run's part files.
4. **Commit atomically**: everything is written under a hidden staging folder and renamed into
   ``OUT/recommendations/date=D``, ``OUT/user_heads/date=D`` and ``OUT/item_vectors/date=D`` at
   the end. A killed run leaves no visible output; a re-run of a date replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ..data import schema as S
from ..data.frames import histories_from_frame
from ..errors import DataValidationError, Problem, RecsysHyperError, annotate
from ..memory import release_freed_memory
from ..recommender import HyperRecommender, check_item_ids, check_item_kind, check_ratings
from ..recommender.checks import OutsideScale
from .core import ChunkScorer, dictionary_columns, heads_columns, heads_schema, item_arrow_type, recs_schema

log = logging.getLogger(__name__)

TABLES = ("recommendations", "user_heads", "item_vectors")
MANIFEST = "_manifest.json"                   # in the recommendations folder
READ_BATCH_ROWS = 1_000_000
# Streaming reads whose memory does not grow with the input: pyarrow's defaults read up to 16
# batches ahead, decode on threads that each keep buffers, and pre-buffer (and keep) column chunks;
# measured on 27M rows: peak RSS 1,263 MiB with the defaults, 574 MiB (flat over batches) with these.
STREAM = {"batch_size": READ_BATCH_ROWS, "batch_readahead": 1, "fragment_readahead": 1, "use_threads": False,
          "fragment_scan_options": pads.ParquetFragmentScanOptions(pre_buffer=False)}
# Freed memory is handed back (glibc's heap, Arrow's pool) every few chunks, on the writer thread
# after that chunk's write, and after each bucket: emitting a chunk's heads leaves ~60 MB of heap
# the next chunk does not reuse, so without it a bucket's high-water mark climbs chunk by chunk
# (1M users: 0.79 GB high-water mark instead of 0.84 GB); a hand-back costs ~12 ms
RELEASE_EVERY_CHUNKS = 2


@dataclass
class ScoreReport:
    date: str
    users: int = 0
    interactions: int = 0
    unknown_item_events: int = 0
    unknown_item_ids: int = 0
    duplicates_dropped: int = 0            # (user, item) events superseded by a later one of the same pair
    users_without_history: int = 0
    buckets: int = 0
    seconds: float = 0.0
    scoring_seconds: float = 0.0
    outputs: dict = field(default_factory=dict)

    @property
    def users_per_second(self) -> float:
        return self.users / self.scoring_seconds if self.scoring_seconds else float("nan")


def _histories_source(data_dir: Path) -> Path:
    path = data_dir / S.INTERACTIONS_FILE
    if not path.exists():
        raise DataValidationError([Problem(S.INTERACTIONS_FILE, None, f"file not found in {data_dir}",
                                           "batch scoring reads the users' histories from it (one Parquet file "
                                           "or a folder of Parquet files)")])
    return path


def open_histories(src: Path) -> pads.Dataset:
    """The histories as one Arrow dataset: a file, or a folder's parts (which must agree)."""
    from ..data.validation import Collector, check_parts, common_schema, parquet_parts

    try:
        if src.is_dir():                      # the parts must agree, or the first part's schema would rule
            parts, parts_check = parquet_parts(src), Collector()
            schemas = check_parts(src, parts, parts_check, (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP))
            parts_check.raise_if_any()
            return pads.dataset([str(p) for p in parts], format="parquet", schema=common_schema(schemas))
        return pads.dataset(src, format="parquet")
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataValidationError([Problem(S.INTERACTIONS_FILE, None, f"is not readable Parquet ({exc})",
                                           "re-export it as Parquet")]) from None


def check_inputs(model: HyperRecommender, data_dir: Path, allow_rating_mismatch: bool = False
                 ) -> tuple[pads.Dataset, ScoreReport]:
    """What ``recommend`` checks, streamed (no full load): the schema, the item vocabulary, the
    values (ratings finite and, unless ``allow_rating_mismatch``, on the model's scale and of its
    kind; timestamps plausible unix seconds), and ``users.parquet``'s id type."""
    from ..data.validation import Collector, read_parquet_checked

    src = _histories_source(data_dir)
    ds = open_histories(src)
    schema = ds.schema
    users_file = data_dir / S.USERS_FILE
    users_table, side = None, Collector()
    if users_file.exists():
        users_table = read_parquet_checked(users_file, side, required=False)
    kind, implicit, unsigned = check_schema(model, schema, users_table, str(src), allow_rating_mismatch,
                                            users_problems=side.problems)
    report = ScoreReport(date="")
    scale = OutsideScale(*model.rating_range_) if model.rating_range_ and not implicit else None
    distinct: set = set()
    c = Collector()
    null_users = 0
    for batch in ds.to_batches(columns=list(dict.fromkeys([S.USER_ID, *event_columns(schema)])), **STREAM):
        null_users += batch.column(S.USER_ID).null_count
        local, ids, values = check_event_batch(batch, implicit, unsigned)
        distinct.update(ids.to_pylist())
        if values is not None and scale is not None:
            scale.add(values)
        c.extend_from_batch(local, report.interactions)
        report.interactions += batch.num_rows
    if null_users:                            # as the partition pass (and Spark's check) refuse them
        raise DataValidationError([Problem("events file", S.USER_ID, f"has {null_users} null ids", "drop those rows")])
    report.unknown_item_ids = finish_checks(model, c, scale, distinct, kind, report.interactions, str(src),
                                            allow_rating_mismatch)
    return ds, report


def check_schema(model: HyperRecommender, schema: pa.Schema, users: pa.Table | None, source: str,
                 allow_rating_mismatch: bool, users_problems=()) -> tuple[str, bool, list[str]]:
    """The checks on the histories' schema (and ``users.parquet``'s table, or the problems found
    reading it) before any row is read: id columns and types, the id type against the model's, the
    kind of feedback. Returns the item id kind (``"int64"`` / ``"string"``), whether the events
    are implicit, and the unsigned id columns."""
    from ..data.validation import Collector, check_side_table

    problems = []
    for col in (S.USER_ID, S.ITEM_ID):
        if col not in schema.names:
            problems.append(Problem(S.INTERACTIONS_FILE, col, f"is missing (columns present: {', '.join(schema.names)})",
                                    "histories need user_id and item_id (rating and timestamp when available)"))
        elif not _is_id_type(schema.field(col).type):
            problems.append(Problem(S.INTERACTIONS_FILE, col, f"has type {schema.field(col).type}",
                                    "ids must be int64 or string"))
    if not problems:
        problems += users_problems
    if not problems and users is not None:          # the users table is checked as load_dataset checks it
        side = Collector()
        frame = check_side_table(users, S.USER_ID, S.USERS_FILE, side)
        problems += side.problems
        if frame is not None and pd.api.types.is_integer_dtype(frame[S.USER_ID]) != pa.types.is_integer(
                schema.field(S.USER_ID).type):
            problems.append(Problem(S.USERS_FILE, S.USER_ID, f"has type {frame[S.USER_ID].dtype} but the histories' "
                                    f"user ids are {schema.field(S.USER_ID).type}",
                                    "store user ids with the same type in both files"))
    if problems:
        raise DataValidationError(problems)
    kind = "int64" if pa.types.is_integer(schema.field(S.ITEM_ID).type) else "string"
    check_item_kind(model, kind, source)                       # before reading anything
    implicit = S.RATING not in schema.names
    if not allow_rating_mismatch:
        check_ratings(model, np.zeros(0), source, implicit)    # the kind of feedback, from the schema
    unsigned = [col for col in (S.USER_ID, S.ITEM_ID) if schema.field(col).type == pa.uint64()]
    return kind, implicit, unsigned


def event_columns(schema: pa.Schema) -> list[str]:
    """The columns the value checks read."""
    unsigned = [col for col in (S.USER_ID, S.ITEM_ID) if schema.field(col).type == pa.uint64()]
    columns = [S.ITEM_ID] + [c for c in (S.RATING, S.TIMESTAMP) if c in schema.names]
    return columns + [col for col in unsigned if col not in columns]


def check_event_batch(batch: pa.RecordBatch, implicit: bool, unsigned=()):
    """The value checks on one batch of histories, as every engine runs them: null item ids
    (raised at once), unsigned ids beyond int64, ratings (finite, within float32) and timestamps
    (plausible unix seconds). Returns the problems (row numbers local to the batch), the batch's
    distinct item ids and its ratings (``None`` for implicit events)."""
    from ..data.validation import Collector, coerce_id, coerce_rating, coerce_timestamp

    ids = batch.column(S.ITEM_ID)
    if ids.null_count:
        raise DataValidationError([Problem(S.INTERACTIONS_FILE, S.ITEM_ID, f"has {ids.null_count} null ids",
                                           "drop those rows")])
    local = Collector()
    for col in unsigned:                      # unsigned 64-bit ids must fit int64, as load_dataset checks
        coerce_id(pa.chunked_array([batch.column(col)]), S.INTERACTIONS_FILE, col, local)
    values = (coerce_rating(pa.chunked_array([batch.column(S.RATING)]), S.INTERACTIONS_FILE, local)
              if not implicit else None)
    if S.TIMESTAMP in batch.schema.names:
        coerce_timestamp(pa.chunked_array([batch.column(S.TIMESTAMP)]), S.INTERACTIONS_FILE, local)
    return local, pc.unique(ids), (values.to_numpy() if values is not None else None)


def finish_checks(model: HyperRecommender, c, scale: OutsideScale | None, distinct, kind: str, n_rows: int,
                  source: str, allow_rating_mismatch: bool) -> int:
    """After every batch: the value problems for the whole file, the rating scale, the item
    vocabulary. Returns how many item ids are unknown to the model."""
    c.rows_read(n_rows)
    if scale is not None and not allow_rating_mismatch:
        scale.raise_if_any(source)
    c.raise_if_any()
    ids = np.array(sorted(distinct), dtype=np.int64 if kind == "int64" else object)
    return check_item_ids(model, ids, source, kind=kind)


def _is_id_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _bucket_of(ids: pa.Array, n_buckets: int) -> np.ndarray:
    values = ids.to_numpy(zero_copy_only=False)
    return (pd.util.hash_array(values) % np.uint64(n_buckets)).astype(np.int64)


def partition(source: pads.Dataset, users_file: Path | None, work: Path, n_buckets: int) -> None:
    """Hash-partition histories (and users) by user id into ``n_buckets`` buckets on disk.

    Each input batch writes one small file per bucket and closes it: open Parquet writers hold
    buffers, and one per bucket would make memory grow with the number of buckets (the input)."""
    columns = [c for c in (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP) if c in source.schema.names]
    for kind, ds, cols in (("events", source, columns),
                           ("users", pads.dataset(users_file, format="parquet") if users_file else None, None)):
        if ds is None:
            continue
        for i, batch in enumerate(ds.to_batches(columns=cols, **STREAM)):
            table = pa.Table.from_batches([batch])
            uid = table.column(S.USER_ID).combine_chunks()
            if uid.null_count:
                raise DataValidationError([Problem(f"{kind} file", S.USER_ID, f"has {uid.null_count} null ids",
                                                   "drop those rows")])
            bucket = _bucket_of(uid, n_buckets)
            order = np.argsort(bucket, kind="stable")
            starts = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
            table = table.take(pa.array(order))
            for b in range(n_buckets):
                if starts[b + 1] > starts[b]:
                    feather.write_feather(table.slice(starts[b], starts[b + 1] - starts[b]),
                                          work / f"{kind}-{b:05d}-{i:06d}.arrow", compression="lz4")


def latest_per_pair(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One event per (user, item), the latest (ties on time, and histories without timestamps:
    the later row, i.e. the later file), as the training data's reader resolves them; and how many
    were dropped. A user's rows all land in one bucket, so a bucket at a time is exact."""
    from ..data.validation import ValidationReport, drop_duplicate_events

    if S.TIMESTAMP not in events.columns:
        keep = ~events.duplicated([S.USER_ID, S.ITEM_ID], keep="last").to_numpy()
        return (events, 0) if keep.all() else (events[keep].reset_index(drop=True), int((~keep).sum()))
    rep = ValidationReport()
    return drop_duplicate_events(events, S.INTERACTIONS_FILE, rep), rep.n_duplicates_dropped


def _read_bucket(work: Path, kind: str, b: int) -> pd.DataFrame | None:
    files = sorted(work.glob(f"{kind}-{b:05d}-*.arrow"))
    if not files:
        return None
    frame = pa.concat_tables([feather.read_table(f, memory_map=False) for f in files]).to_pandas()
    for f in files:
        f.unlink()
    return frame


def score_dataset(model: HyperRecommender, data_dir: str | os.PathLike, out_dir: str | os.PathLike, date: str,
                  top_k: int = 100, chunk_users: int = 4096, candidates=None, exclude_seen: bool = True,
                  rows_per_bucket: int = 500_000, progress: bool = True,
                  allow_rating_mismatch: bool = False, explain: int | None = None,
                  score_std: bool = False) -> ScoreReport:
    """Score every user of ``data_dir`` (histories + optional users file) into ``out_dir``.
    ``explain``: add each recommendation's explanation with that many events (see
    :meth:`~recsys_hyper.recommender.HyperRecommender.explain`); ``score_std``: each
    recommendation's score standard deviation (see
    :meth:`~recsys_hyper.recommender.HyperRecommender.score_std`)."""
    from ..progress import progress as progress_bar

    t_start = time.perf_counter()
    check_date(date)
    data_dir, out = Path(data_dir), Path(out_dir)
    source, report = check_inputs(model, data_dir, allow_rating_mismatch)
    report.date = date
    users_file = data_dir / S.USERS_FILE
    users_file = users_file if users_file.exists() else None
    scorer = ChunkScorer(model, top_k, exclude_seen, candidates, explain=explain, score_std=score_std)

    created = [p for p in (out, *out.parents) if not p.exists()]          # removed again if the run fails
    staging = out / f".staging-{date}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work = staging / "_buckets"
    committed = False
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clean_stale(out)
        work.mkdir(parents=True)
        n_buckets = max(1, -(-report.interactions // rows_per_bucket))
        report.buckets = n_buckets
        partition(source, users_file, work, n_buckets)

        item_type = item_arrow_type(model)
        user_type = source.schema.field(S.USER_ID).type
        user_type = pa.int64() if pa.types.is_integer(user_type) else pa.string()
        for table in TABLES:
            (staging / table).mkdir()
        pq.write_table(pa.Table.from_pandas(scorer.item_vectors(), preserve_index=False),
                       staging / "item_vectors" / "part-00000.parquet")

        bar = progress_bar(desc=f"score {date}", unit="users", unit_scale=True, enabled=progress)
        t_score = time.perf_counter()
        recs_type, heads_type = recs_schema(user_type, item_type, bool(explain), score_std), heads_schema(user_type)
        with ThreadPoolExecutor(1, thread_name_prefix="score-writer") as pool:
            pending = None                    # the previous chunk's write, overlapping this chunk's scoring
            for b in range(n_buckets):
                events, users = _read_bucket(work, "events", b), _read_bucket(work, "users", b)
                if events is None and users is None:
                    continue
                if events is not None:
                    events, dropped = latest_per_pair(events)
                    report.duplicates_dropped += dropped
                rec_writer = pq.ParquetWriter(staging / "recommendations" / f"part-{b:05d}.parquet", recs_type,
                                              use_dictionary=dictionary_columns(recs_type))
                head_writer = pq.ParquetWriter(staging / "user_heads" / f"part-{b:05d}.parquet", heads_type,
                                               use_dictionary=dictionary_columns(heads_type))
                try:
                    h = histories_from_frame(events, scorer.item_ids, users, warn=False)
                    report.unknown_item_events += (len(events) if events is not None else 0) - len(h.items)
                    report.users_without_history += int((h.lengths == 0).sum())
                    for start in range(0, len(h), chunk_users):
                        rows = np.arange(start, min(len(h), start + chunk_users))
                        res = scorer.score_histories(h.select(rows), users)
                        if pending is not None:
                            pending.result()
                        pending = pool.submit(write_chunk, res, rec_writer, recs_type, head_writer, heads_type)
                        report.users += len(rows)
                        bar.update(len(rows))
                        if start // chunk_users % RELEASE_EVERY_CHUNKS == RELEASE_EVERY_CHUNKS - 1:
                            pool.submit(release_freed_memory)       # on the writer, after this write
                finally:
                    if pending is not None:     # the bucket's last write (or the failed one's error)
                        pending, done = None, pending
                        done.result()
                    rec_writer.close()
                    head_writer.close()
                events = users = h = res = None
                release_freed_memory()
        bar.close()
        report.scoring_seconds = time.perf_counter() - t_score
        shutil.rmtree(work)
        if report.unknown_item_events:
            log.warning("%d history events on %d item ids unknown to the model were skipped",
                        report.unknown_item_events, report.unknown_item_ids)
        report.seconds = time.perf_counter() - t_start
        report.outputs = {t: str(out / t / f"date={date}") for t in TABLES}
        (staging / "recommendations" / MANIFEST).write_text(manifest(report, scorer))
        _commit(staging, out, date)
        committed = True
    except OSError as exc:
        raise annotate(exc, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:                     # the folders this run created, if nothing else is in them
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return report


def write_chunk(res, rec_writer: pq.ParquetWriter, recs_type: pa.Schema, head_writer: pq.ParquetWriter,
                heads_type: pa.Schema) -> None:
    """One chunk's recommendations and heads converted to Arrow and appended (on the writer thread;
    on Spark, by the scoring task)."""
    rec_writer.write_table(pa.Table.from_pandas(res.recommendations, preserve_index=False).cast(recs_type))
    head_writer.write_table(pa.Table.from_arrays(heads_columns(res.heads, heads_type.field(S.USER_ID).type),
                                                 schema=heads_type))


def manifest(report: ScoreReport, scorer: ChunkScorer) -> str:
    """The run's manifest (JSON): the report, the settings and the dot-product formula."""
    return json.dumps({**asdict(report), "model_items": len(scorer.model.item_map_), "top_k": scorer.top_k,
                       "exclude_seen": scorer.exclude_seen, "formula": {
                           "ranking score": "rank_bias[item] + dot(rank_head[user], phi[item])",
                           "rating": "mu + rating_bias[item] + dot(rating_head[user], phi[item])",
                           "mu": float(scorer.items.mu)}}, indent=2)


def _commit(staging: Path, out: Path, date: str) -> None:
    """Rename each staged table into ``OUT/<table>/date=D``, replacing a previous run of D."""
    trash = []
    for table in TABLES:
        final = out / table / f"date={date}"
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            trash.append(old)
        os.replace(staging / table, final)
    for old in trash:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale(out: Path) -> None:
    """Remove staging folders of scorers that are no longer running."""
    from ..atomic import pid_alive

    for stale in out.glob(".staging-*"):
        try:
            pid = int(stale.name.split("-")[4])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    for table in TABLES:
        for old in (out / table).glob(".old-*") if (out / table).exists() else []:
            shutil.rmtree(old, ignore_errors=True)


def check_date(date: str) -> None:
    import datetime
    import re

    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(date)):
        raise RecsysHyperError(f"--date {date!r} is not a date: use YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise RecsysHyperError(f"--date {date!r} is not a calendar date: use YYYY-MM-DD") from None
