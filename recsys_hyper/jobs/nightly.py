"""The nightly training pipeline: ingest a day, meta-train a challenger, promote it only if it is
not worse than the champion, score every user, evaluate cold start.

Steps, each recorded as done in ``WORK/state/date=D.json`` (a re-run skips what is done; a killed
run resumes at the first step not done, and training from its last epoch checkpoint):

1. ``validate``: every file of ``LANDING/events/date=D``, recursively (in-flight names are left for
   later: see :mod:`.landing`); a bad one is moved to ``WORK/quarantine/date=D/`` with a
   ``.reason.txt`` beside it; the rest goes on. A night is done *for the files it saw*: a re-run
   that finds files it has not seen (a quarantined file fixed and put back, a late upload) runs the
   whole night again and merges them.
2. ``merge``: the valid events become the night's partition of the append-only training snapshot
   ``WORK/snapshot`` (see :mod:`.snapshot`; earlier nights are never rewritten; read back, the
   latest event per user and item wins), with the users / items snapshots.
3. ``split``: users into train / validation / cold-test by a stable hash of the id (the snapshot's
   user id column alone is read).
4. ``train``: the challenger, on training users (validation users stop it), warm-started from the
   champion unless ``full_retrain``; registered with alias ``challenger``.
5. ``evaluate``: challenger and champion on the same validation and cold-test users and events.
6. ``gate``: promote the challenger to ``champion`` unless it is worse beyond the tolerance on
   the validation users (the cold-test users' figures are reported, not decided on).
7. ``score``: every user with the champion, into ``WORK/scores`` (partition ``date=D``).
   ``cohort``: the night's new users served from their first day's events; the previous night's
   cohort measured on its users' events of this night (logged night over night).
8. ``cold_start_eval``: the cold-start protocol on the night's split, measuring the champion as
   it is (no second training) against baselines fitted on the same training users.

One MLflow parent run per night (tags: date, data digest, code version), a nested run per step.
A kernel lock on a file (``flock``) stops two runs at once; a dead process's lock is free at once.

The invariants each night keeps (each one a test): it reads exactly its date's files; an event
already in the snapshot is not counted again; nothing non-finite is trained on, registered,
promoted or served (the gate takes a missing or non-finite figure as "not better"); every step
works whatever the champion's and the challenger's vocabularies are; a registered version belongs
to its work folder (tagged with the folder's id) and night, and the champion of another work
folder is never used; a night older than one already merged is refused unless forced; every path
in the state is absolute.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import tracking
from ..atomic import atomic_file
from ..config import NightlyConfig
from ..data import schema as S
from ..data.dataset import Dataset, load_dataset, side_table, validate_frames
from ..data.episodes import capped_sample
from ..errors import DataValidationError, RecsysHyperError
from ..evaluation.protocol import Protocol
from ..evaluation.runner import measure_models
from ..memory import release_freed_memory
from ..recommender import HyperRecommender
from ..recommender.checks import outside_scale
from . import cohorts, forget
from . import snapshot as snapshot_store
from .evaluate import run_cold_start_evaluation
from .landing import check_date, invalid_date_folders, landing_dates, landing_files
from .models import code_version, load_version
from .score import without_excluded
from .state import STEPS, NightState, RunLock, fingerprint, stable_split, work_identity
from .train import checkpoint_dir, train_and_register

log = logging.getLogger(__name__)

class OutOfOrderError(RecsysHyperError):
    """A night older than one already merged into the snapshot."""


@dataclass
class NightReport:
    date: str
    steps_run: list = field(default_factory=list)
    steps_skipped: list = field(default_factory=list)
    quarantined: list = field(default_factory=list)
    champion_version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    recommendations: str = ""
    cohort: dict = field(default_factory=dict)
    evaluation: str = ""
    run_id: str | None = None
    seconds: float = 0.0
    registered_model: str = tracking.REGISTERED_MODEL
    repeated_events: int = 0
    forgotten_events: int = 0
    rerun_for: list = field(default_factory=list)          # the unseen files that made a done night run again
    gone: list = field(default_factory=list)               # the files it had read that are gone since

    def summary(self, work: str | Path) -> str:
        """A few lines: what ran, the champion and why, the key metrics, where the outputs are."""
        m = self.metrics
        done = f"ran {', '.join(self.steps_run)}" if self.steps_run else "already done"
        lines = [f"night {self.date}: {done}"
                 + (f"; skipped {', '.join(self.steps_skipped)}" if self.steps_run and self.steps_skipped else "")]
        if self.rerun_for:
            lines.append(f"  ran again for {len(self.rerun_for)} landing file(s) it had not seen: "
                         f"{', '.join(self.rerun_for[:5])}{', ...' if len(self.rerun_for) > 5 else ''}")
        if self.gone:
            lines.append(f"  ran again without {len(self.gone)} landing file(s) it had read that are gone: "
                         f"{', '.join(self.gone[:5])}{', ...' if len(self.gone) > 5 else ''}")
        if self.quarantined:
            lines.append(f"  quarantined: {', '.join(q['file'] for q in self.quarantined)} "
                         f"(see {work}/quarantine/date={self.date})")
        if self.forgotten_events:
            lines.append(f"  {self.forgotten_events:,} events of forgotten users were refused")
        if self.repeated_events:
            lines.append(f"  {self.repeated_events:,} events already in the snapshot were not counted again")
        lines.append(f"  champion: {self.registered_model} version {self.champion_version} - challenger "
                     f"{'promoted' if self.promoted else 'not promoted'}: {self.reason}")
        lines.append(f"  cold-test users ({int(m.get('challenger_test_users', 0))}): challenger MAE "
                     f"{m.get('challenger_test_mae', float('nan')):.4f}, nDCG@10 "
                     f"{m.get('challenger_test_ndcg@10', float('nan')):.4f}"
                     + (f"; champion MAE {m['champion_test_mae']:.4f}, nDCG@10 {m['champion_test_ndcg@10']:.4f}"
                        if "champion_test_mae" in m else ""))
        lines.append(f"  recommendations: {self.recommendations}")
        c = self.cohort
        lines.append(f"  new users: {int(c.get('cohort_users', 0)):,} served from their first day"
                     + (f"; cohort of {c['cohort_measured']} the next day: {int(c['cohort_returning'])} of "
                        f"{int(c['cohort_users_measured'])} returned, Recall@10 {c['cohort_recall@10']:.4f}, "
                        f"nDCG@10 {c['cohort_ndcg@10']:.4f}, MAE {c['cohort_mae']:.4f}"
                        if "cohort_measured" in c else ""))
        lines.append(f"  cold-start evaluation: {self.evaluation}/results.md")
        return "\n".join(lines)


def nights_to_run(landing: str | Path, date: str | None = None, all_dates: bool = False) -> list[str]:
    """``[date]``, or with ``all_dates`` every landing date (oldest first). Folders that are not
    calendar dates are reported and never read."""
    if not date and not all_dates:
        raise RecsysHyperError("pass --date YYYY-MM-DD, or --all for every landing date")
    if date:
        return [check_date(date)]
    for name in invalid_date_folders(landing):
        log.warning("%s: not a date partition (expected date=YYYY-MM-DD); its files are never read: rename it "
                    "to the date of its events", Path(landing) / "events" / name)
    dates = landing_dates(landing)
    if not dates:
        raise RecsysHyperError(f"{landing}: no landing partitions (events/date=YYYY-MM-DD/*.parquet)")
    return dates


def mlflow_ui_command() -> str:
    uri = tracking.configure()
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the tracking server's UI)"
    return f"mlflow ui --backend-store-uri {uri}"


def run_nightly(date: str, cfg: NightlyConfig) -> NightReport:
    """Run (or resume) the night of ``date``."""
    t0 = time.perf_counter()
    date = check_date(date)
    work, landing = cfg.work, cfg.landing
    if date not in landing_dates(landing):
        raise RecsysHyperError(f"{landing / 'events'}: no partition date={date} (found: "
                               f"{', '.join(landing_dates(landing)) or 'none'}); the landing folder needs "
                               f"events/date=YYYY-MM-DD/*.parquet")
    _check_folders(cfg)
    if cfg.engine == "spark":
        import importlib.util

        if importlib.util.find_spec("pyspark") is None:               # before any work, not in its first step
            raise RecsysHyperError("--engine spark needs PySpark: pip install 'recsys-hyper[spark]' (and Java 17+)")
    tracking.ensure_reachable()                                   # fail fast, before any heavy work
    report = NightReport(date, registered_model=cfg.registered_model)
    with RunLock(work / "nightly.lock"):
        work_id = work_identity(work)
        state = NightState.load(work, date)
        part = landing / "events" / f"date={date}"
        files, later = landing_files(landing, date)
        if later:
            log.info("night %s: %d file(s) still being written are left for a later run (e.g. %s)", date, len(later),
                     later[0].relative_to(part))
        unseen = state.unseen(files, part) if state.started_any else []
        gone = state.gone(files, part) if state.started_any else []
        if unseen or gone:     # a night is done for the files it saw: new, changed or gone ones make it run again
            log.warning("night %s: %s: the night runs again for the files that are there", date, "; ".join(
                what for what in (f"{len(unseen)} landing file(s) it has not seen ({', '.join(unseen[:5])})"
                                  if unseen else "",
                                  f"{len(gone)} file(s) it read are gone ({', '.join(gone[:5])})" if gone else "")
                if what))
            state.reset()
            shutil.rmtree(checkpoint_dir(work / "models" / f"date={date}"), ignore_errors=True)
            report.rerun_for = unseen
            report.gone = gone
        if not state.is_done("gate") and _check_champion_record(cfg, work_id):
            cfg = dataclasses.replace(cfg, adopt_store=True)   # gated against the recorded champion's files
        trained_before = int(state.done.get("train", {}).get("erasure_requests", forget.requests(work)))
        if not state.is_done("gate") and state.is_done("train") and trained_before < forget.requests(work):
            log.warning("night %s: users were forgotten after its training: it trains again without them", date)
            state.redo_from("train")
        missing = _missing_output(state, cfg, date)
        if missing:                         # a step's output removed since: that step and the later ones again
            step, path = missing
            log.warning("night %s: the %s step's output %s is gone: the night runs again from that step", date,
                        step, path)
            state.redo_from(step)
        if not state.complete_night:
            newer = [d for d in snapshot_store.partition_dates(work / "snapshot") if d > date]
            if newer and not cfg.allow_out_of_order:
                raise OutOfOrderError(
                    f"night {date} is older than night(s) already merged ({', '.join(newer)}): run now, it would "
                    f"train on their events and could replace their champion. If that is intended (e.g. a fixed "
                    f"file of {date} put back), pass --allow-out-of-order; or move its files into the newest "
                    f"night's landing folder instead. Nothing was done.")
        with tracking.night_run(date, cfg.experiment, run_id=state.done.get("_run", {}).get("run_id"),
                                tags={"code_version": code_version(), "work_id": work_id,
                                      "work_dir": str(work)}) as run_id:
            if "_run" not in state.done:
                state.complete("_run", run_id=run_id)
            report.run_id = run_id
            steps = {"validate": _validate, "merge": _merge, "split": _split, "train": _train,
                     "evaluate": _evaluate, "gate": _gate, "score": _score, "cohort": _cohort,
                     "cold_start_eval": _cold_start_eval}
            for name in STEPS:
                if state.is_done(name):
                    report.steps_skipped.append(name)
                    continue
                t_step = time.perf_counter()
                log.info("night %s: %s", date, name)
                with tracking.step_run(name, run_id=state.started.get(name),
                                       system_metrics=name == "train") as step_run_id:
                    if state.started.get(name) != step_run_id:
                        state.start(name, step_run_id)
                    outputs = _run_step(steps[name], date, cfg, state, work_id)
                    release_freed_memory()      # a step's freed heap is not carried into the next one
                    outputs["seconds"] = round(time.perf_counter() - t_step, 2)
                    outputs["peak_rss_mib"] = peak_rss_mib()               # the process's high-water mark so far
                    tracking.log_step(outputs)
                state.complete(name, **outputs)
                report.steps_run.append(name)
            # the whole snapshot's; the train step and its version carry their training data's data_digest
            tracking.tag_night(snapshot_digest=state.done["merge"]["digest"], date=date)
    d = state.done
    report.quarantined = d["validate"].get("quarantined", [])
    report.repeated_events = int(d["merge"].get("repeated_events", 0))
    report.forgotten_events = int(d["merge"].get("forgotten_events", 0))
    report.promoted, report.reason = d["gate"]["promoted"], d["gate"]["reason"]
    report.champion_version = d["gate"]["champion_version"]
    report.metrics = d["evaluate"]
    report.recommendations = d["score"]["path"]
    report.cohort = d["cohort"]
    report.evaluation = d["cold_start_eval"]["path"]
    report.seconds = time.perf_counter() - t0
    return report


def _run_step(step, date, cfg, state, work_id) -> dict:
    """One step; on the Spark engine, a refusal raised on an executor is the one-machine night's
    error, and Spark's, Py4J's or Java's own errors one line naming the night's landing folder."""
    try:
        return step(date, cfg, state, work_id) or {}
    except Exception as exc:  # noqa: BLE001 -- mapped below, or raised unchanged
        if cfg.engine != "spark" or isinstance(exc, RecsysHyperError):
            raise
        from ..scoring.spark import from_executor
        from .score import spark_error

        mapped = from_executor(exc)
        if mapped is exc:
            mapped = spark_error(exc, cfg.landing / "events" / f"date={date}")
        if mapped is None:
            raise
        raise mapped from None


def _missing_output(state: NightState, cfg: NightlyConfig, date: str) -> tuple[str, str] | None:
    """The first done step whose recorded output is gone (a snapshot partition, a split, a model,
    the scores or the evaluation removed by a person or a clean-up), with the path."""
    for step in STEPS:
        done = state.done.get(step)
        if done is None:
            continue
        paths = [done[k] for k in ("path", "model_dir") if isinstance(done.get(k), str)]
        if step == "merge" and done.get("night_events") and not snapshot_store.night_files(cfg.work / "snapshot", date):
            return step, str(snapshot_store.events_dir(cfg.work / "snapshot") / f"date={date}")
        for p in paths:
            if not Path(p).exists():
                return step, p
    return None


def _check_folders(cfg: NightlyConfig) -> None:
    """The work folder must not sit inside the landing folder's events (its outputs would be read
    as a night's events), nor the landing folder inside what the night writes."""
    events = cfg.landing / "events"
    if cfg.work == events or events in cfg.work.parents:
        raise RecsysHyperError(f"--work {cfg.work} is inside the landing folder's events ({events}): the night's "
                               f"outputs would be read as events; choose a work folder outside it")
    written = [cfg.work / name for name in ("snapshot", "models", "scores", "state", "quarantine", "evaluation",
                                            "splits", "cohorts")]
    if any(cfg.landing == w or w in cfg.landing.parents for w in written):
        raise RecsysHyperError(f"--landing {cfg.landing} is inside a folder the night writes under --work "
                               f"{cfg.work}; choose a landing folder outside it")


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)   # bytes on macOS, KiB on Linux


def _sample(users, cap: int, seed: int = 0) -> np.ndarray:
    """At most ``cap`` of ``users``, a seeded sample (all of them when fewer)."""
    users = np.sort(np.asarray(users))
    return users[capped_sample(len(users), cap, [seed, 7121])]


# ------------------------------------------------------------------------------------------ steps

def _validate(date, cfg, state, work_id) -> dict:
    """Every landing file of the night checked on its own; the ids' types and the kind of feedback
    must be the snapshot's (on the first night: the side tables' id types where there are side
    tables, otherwise those of the most events), and so must the scale of the ratings (the earlier
    nights' lowest and highest; unless ``allow_rating_mismatch``): a file that differs is
    quarantined with the reason, so the snapshot never takes it in."""
    part = cfg.landing / "events" / f"date={date}"
    quarantine = cfg.work / "quarantine" / f"date={date}"
    checked = []                                                 # (file, problems, kinds, rows)
    files, _ = landing_files(cfg.landing, date)
    scale = None if cfg.allow_rating_mismatch else snapshot_store.rating_range(cfg.work / "snapshot", exclude=date)
    converted = []
    if cfg.engine == "spark":                     # one Spark task a file, with the same function
        from . import spark_night

        found = spark_night.check_files(spark_night.session(cfg), files, part, scale)
    else:
        found = [check_event_file(f, part, scale) for f in files]
    for f, (c, kinds, rows, conversions) in zip(files, found):
        converted += conversions
        checked.append((f, c, kinds, rows))
    reference = _snapshot_kinds(cfg.work / "snapshot")
    if reference is None and any(kinds for _, _, kinds, _ in checked):       # the first night: the most events'
        votes: dict = {}
        for _, _, kinds, rows in checked:
            if kinds is not None:
                votes[tuple(sorted(kinds.items()))] = votes.get(tuple(sorted(kinds.items())), 0) + rows
        reference = {**dict(max(votes, key=votes.get)), **_side_table_kinds(cfg.landing)}
    good, bad, seen = [], [], {}
    for f, c, kinds, _ in checked:
        rel = f.relative_to(part)
        for what, (want, got) in ((k, (reference[k], kinds[k])) for k in (reference if kinds else {})):
            if want != got:
                c.add(str(rel), None if what == "feedback" else what,
                      f"{'holds' if what == 'feedback' else 'has'} {got} "
                      f"{'feedback' if what == 'feedback' else 'ids'} but the snapshot has {want}",
                      "the landing file's schema changed: re-export it in the snapshot's schema (columns "
                      "user_id, item_id, rating, timestamp with the same types)")
        if c.problems:
            target = quarantine / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            reason = str(DataValidationError(c.problems))
            with atomic_file(target.with_name(target.name + ".reason.txt")) as tmp:
                tmp.write_text(f"{reason}\n\nTo fix: correct the file, move it back to {f} and run the night "
                               f"again (recsys-hyper pipeline nightly --date {date}): a night re-runs when it finds "
                               f"files it has not seen, and merges them.\n")
            shutil.move(str(f), target)
            log.warning("quarantined %s: %s", f, reason)
            bad.append({"file": str(rel), "reason": reason})
        else:
            good.append(str(f))
            seen[str(rel)] = fingerprint(f)
    listed = {b["file"] for b in bad}
    for q in sorted(quarantine.rglob("*.parquet")) if quarantine.is_dir() else []:
        rel = str(q.relative_to(quarantine))
        if rel not in listed:                            # quarantined by an earlier attempt, still there
            why = q.with_name(q.name + ".reason.txt")
            bad.append({"file": rel, "reason": why.read_text().strip() if why.is_file() else ""})
    if not good:
        log.warning("night %s: no valid event file; the snapshot stays as it was", date)
    return {"valid_files": good, "seen": seen, "quarantined": bad, "n_valid": len(good), "n_quarantined": len(bad),
            "converted": converted, "kinds": reference, "rows": sum(rows for f, c, _, rows in checked
                                                                   if not c.problems)}


def check_event_file(f: Path, part: Path, scale: tuple[float, float] | None) -> tuple:
    """One landing file of the night's folder ``part`` checked as the validate step checks it
    (``scale``: the snapshot's ratings' ``(lo, hi)``, or ``None``): its problems (a
    :class:`~recsys_hyper.data.validation.Collector`), what must agree with the snapshot (id
    types, kind of feedback; ``None`` when unreadable), its rows and the conversions made."""
    from ..data.validation import Collector, ValidationReport

    c, rep = Collector(), ValidationReport()
    frame = read_event_file(f, part, c, rep)
    if frame is None:
        return c, None, 0, rep.conversions
    if scale is not None and not rep.implicit:
        _check_scale(frame[S.RATING].to_numpy(), scale, str(f.relative_to(part)), c)
    return c, _kinds(frame, rep.implicit), len(frame), rep.conversions


def read_event_file(f: Path, part: Path, c, rep) -> pd.DataFrame | None:
    """One landing file read and checked as the data contract's interactions, its columns in the
    contract's types (ids int64 or string, ratings float32, times UTC epoch seconds); ``None``
    after recording its problems in ``c``. What the validate step admits, the merge reads the same
    way."""
    from ..data.validation import check_interactions, read_parquet_checked

    rel = str(f.relative_to(part))
    if f.is_symlink() and not f.exists():
        c.add(rel, None, f"is a link to {os.readlink(f)}, which does not exist",
              "put the file it points to back, or copy the file itself here")
        return None
    table = read_parquet_checked(f, c, required=True, columns=(S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP),
                                 optional=(S.RATING,))
    return check_interactions(table, c, rep, file=rel) if table is not None else None


def combine_events(frames: list[pd.DataFrame], implicit: bool, source: str) -> pd.DataFrame:
    """The night's files as one table, in one stated schema (the contract's, with the ids' types
    the files agree on: nothing is inferred from whichever file comes first). Every row and every
    distinct id of every file is kept; files whose ids differ in kind are refused (the validate
    step quarantines them before this)."""
    from ..data.dataset import interactions_table

    kinds = {col: {"int64" if pd.api.types.is_integer_dtype(f[col]) else "string" for f in frames}
             for col in (S.USER_ID, S.ITEM_ID)}
    mixed = [col for col, k in kinds.items() if len(k) > 1]
    if mixed:
        raise RecsysHyperError(f"{source}: the night's files store {', '.join(mixed)} with different types "
                               f"(integers in some, strings in others); re-export them with one type")
    tables = [interactions_table(f, implicit=implicit) for f in frames]
    combined = pa.concat_tables(tables).to_pandas()                   # one schema: nothing is promoted
    n_rows = sum(len(f) for f in frames)
    for col in (S.USER_ID, S.ITEM_ID):
        before = len(pd.unique(np.concatenate([pd.unique(f[col]) for f in frames]))) if frames else 0
        if len(combined) != n_rows or combined[col].nunique() != before:       # never silently: a loud stop
            raise RecsysHyperError(f"{source}: combining the night's files changed {col} ({n_rows} rows and "
                                   f"{before} distinct ids before, {len(combined)} and "
                                   f"{combined[col].nunique()} after); nothing was merged")
    return combined


def _check_scale(ratings: np.ndarray, scale: tuple[float, float], file: str, c) -> None:
    """Ratings of a landing file outside the snapshot's scale ``[lo, hi]`` (as the serving checks
    read it) become a problem of ``c``."""
    lo, hi = scale
    outside = outside_scale(ratings, lo, hi)
    if outside.any():
        c.add(file, S.RATING, f"has {int(outside.sum())} ratings of {len(ratings)} outside the scale of the "
              f"snapshot's ratings so far, [{lo:g}, {hi:g}]",
              f"correct them (rescale to [{lo:g}, {hi:g}]); if the scale really changed, run the night with "
              f"--allow-rating-mismatch", mask=outside, values=ratings)


def _kinds(frame: pd.DataFrame, implicit: bool) -> dict:
    """What must agree between a landing file and the snapshot: id types and the kind of feedback."""
    kind = lambda s: "int64" if pd.api.types.is_integer_dtype(s) else "string"  # noqa: E731
    return {S.USER_ID: kind(frame[S.USER_ID]), S.ITEM_ID: kind(frame[S.ITEM_ID]),
            "feedback": "implicit" if implicit else "explicit (rated)"}


def _side_table_kinds(landing: Path) -> dict:
    """The id types of the landing's users / items tables, from their schemas (nothing else is
    read): what the events must agree with. A table that is absent or unreadable, or whose ids are
    neither integers nor strings, says nothing here (the merge reports it)."""
    kinds = {}
    for name, column in ((S.USERS_FILE, S.USER_ID), (S.ITEMS_FILE, S.ITEM_ID)):
        try:
            schema = pq.read_schema(landing / name)
        except (OSError, pa.ArrowException):
            continue
        kind = schema.field(column).type if column in schema.names else pa.null()
        if pa.types.is_integer(kind):
            kinds[column] = "int64"
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            kinds[column] = "string"
    return kinds


def _snapshot_kinds(snapshot: Path) -> dict | None:
    """:func:`_kinds` of the snapshot, from its schema alone (nothing is read)."""
    schema = snapshot_store.schema(snapshot)
    if schema is None:
        return None
    kind = lambda t: "int64" if pa.types.is_integer(t) else "string"  # noqa: E731
    return {S.USER_ID: kind(schema.field(S.USER_ID).type), S.ITEM_ID: kind(schema.field(S.ITEM_ID).type),
            "feedback": "explicit (rated)" if S.RATING in schema.names else "implicit"}


def _landing_side_tables(landing: Path):
    """The landing folder's users / items snapshots as Arrow tables (read like the data contract's
    files: a corrupt or empty one is a clear error naming it), ``None`` where absent."""
    from ..data.validation import Collector, read_parquet_checked

    c = Collector()
    tables = [read_parquet_checked(landing / name, c, required=False) for name in (S.USERS_FILE, S.ITEMS_FILE)]
    if c.problems:
        raise DataValidationError([dataclasses.replace(p, file=str(landing / p.file)) for p in c.problems])
    return tables


def _merge(date, cfg, state, work_id) -> dict:
    """The night's valid events become the snapshot's partition ``date=D`` (earlier nights are read
    by column projection only: their user ids, for the night's cohort, and the counts), less the
    events the snapshot already holds (re-delivered ones)."""
    work, landing = cfg.work, cfg.landing
    snapshot = work / "snapshot"
    files = state.done["validate"]["valid_files"]
    earlier, earlier_rows = snapshot_store.distinct(snapshot, exclude=date)
    if not files and not earlier_rows:
        raise RecsysHyperError(f"night {date}: no valid events and no earlier snapshot; nothing to train on")
    users, items = _landing_side_tables(landing)
    n_new, night, repeated, forgotten_events = 0, None, 0, 0
    if files and cfg.engine == "spark":
        return _merge_on_spark(date, cfg, state, work_id, users, items, earlier_rows)
    if files:
        from ..data.validation import Collector, ValidationReport

        part = landing / "events" / f"date={date}"
        frames, c, implicit = [], Collector(), False
        for f in map(Path, files):
            rep = ValidationReport()
            frames.append(read_event_file(f, part, c, rep))
            implicit |= rep.implicit
        if c.problems:                         # changed since the validate step: run the night again
            raise DataValidationError([dataclasses.replace(p, fix=p.fix + f"; then run the night again "
                                                           f"(recsys-hyper pipeline nightly --date {date})")
                                       for p in c.problems])
        raw = combine_events(frames, implicit, source=str(part))
        del frames
        erased = forget.forgotten_mask(raw[S.USER_ID].to_numpy(), work, work_id)
        if erased.any():                       # users forgotten: their later events never enter again
            forgotten_events = int(erased.sum())
            log.warning("night %s: %d events of forgotten users refused", date, forgotten_events)
            raw = raw[~erased].reset_index(drop=True)
        users = _without_forgotten(users, work, work_id)
        if len(raw):
            night = validate_frames(raw, users, items, source=str(part))
            side = night
        elif not earlier_rows:
            raise RecsysHyperError(f"night {date}: every event of the night belongs to forgotten users and there is "
                                   f"no earlier snapshot; nothing to train on")
        else:
            sample = pads.dataset([str(p) for p in snapshot_store.partitions(snapshot)], format="parquet").head(1000)
            side = validate_frames(sample, users, items, source=str(snapshot))
        del raw
    else:                                     # the side tables' id types, checked against earlier nights
        users = _without_forgotten(users, work, work_id)
        sample = pads.dataset([str(p) for p in snapshot_store.partitions(snapshot)], format="parquet").head(1000)
        side = validate_frames(sample, users, items, source=str(snapshot))
    _write_side_tables(snapshot, side)
    out = {"interactions": earlier_rows, "night_events": 0, "duplicates_dropped": 0, "repeated_events": 0,
           "new_users": 0, "forgotten_events": forgotten_events}
    user_ids, item_ids = earlier[S.USER_ID], earlier[S.ITEM_ID]
    if night is not None:
        tonight, repeated = snapshot_store.new_events(snapshot, night.interactions, exclude=date)
        if repeated:
            log.info("night %s: %d events are already in the snapshot (re-delivered); not counted again", date,
                     repeated)
        n_new = cohorts.record(work, date, tonight, earlier[S.USER_ID])     # the night's new users: a cohort
        snapshot_store.write_night(snapshot, date, tonight, night.implicit)
        out.update(interactions=earlier_rows + len(tonight), night_events=len(tonight), repeated_events=repeated,
                   duplicates_dropped=night.report.n_duplicates_dropped, new_users=n_new)
        user_ids, item_ids = np.union1d(user_ids, tonight[S.USER_ID]), np.union1d(item_ids, tonight[S.ITEM_ID])
    return {**out, "users": len(user_ids), "items": len(item_ids), "digest": snapshot_store.digest(snapshot)}


def _merge_on_spark(date, cfg, state, work_id, users, items, earlier_rows: int) -> dict:
    """:func:`_merge` with the night's events read, resolved and written by Spark (see
    :mod:`.spark_night`); the side tables and the counts as on one machine."""
    import uuid

    from . import spark_night

    spark = spark_night.session(cfg)
    work, snapshot = cfg.work, cfg.work / "snapshot"
    part = cfg.landing / "events" / f"date={date}"
    validated = state.done["validate"]
    kinds = validated.get("kinds") or _snapshot_kinds(snapshot)
    staging = snapshot_store.events_dir(snapshot) / f".date={date}.staging-{uuid.uuid4().hex[:8]}"
    cohort_staging = cohorts.cohort_dir(work, date).with_name(f".date={date}.staging-{uuid.uuid4().hex[:8]}")
    try:
        merged = spark_night.merge(spark, snapshot, part, validated["valid_files"], kinds, staging, cohort_staging,
                                   forget.forgotten_digests(work), work_id)
        if merged["rows"] != int(validated.get("rows", merged["rows"])):      # never silently: a loud stop
            raise RecsysHyperError(f"{part}: the night's files held {validated['rows']} rows when validated and "
                                   f"{merged['rows']} when merged; nothing was merged: run the night again")
        if merged["forgotten_events"]:
            log.warning("night %s: %d events of forgotten users refused", date, merged["forgotten_events"])
        if merged["repeated_events"]:
            log.info("night %s: %d events are already in the snapshot (re-delivered); not counted again", date,
                     merged["repeated_events"])
        kept = merged["rows"] - merged["forgotten_events"]
        if not kept and not earlier_rows:
            raise RecsysHyperError(f"night {date}: every event of the night belongs to forgotten users and there is "
                                   f"no earlier snapshot; nothing to train on")
        sample = pads.dataset([str(p) for p in sorted(staging.glob("part-*.parquet"))], format="parquet").head(1000)
        if not sample.num_rows:                  # the side tables' ids are checked against these events
            sample = pads.dataset([str(p) for p in snapshot_store.partitions(snapshot, exclude=date)],
                                  format="parquet").head(1000)
        side = validate_frames(sample, _without_forgotten(users, work, work_id), items, source=str(part))
        _write_side_tables(snapshot, side)
        n_new = 0
        if kept:
            n_new = merged["new_users"]
            cohorts.replace_events(work, date, cohort_staging)
            snapshot_store.replace_night(snapshot, date, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(cohort_staging, ignore_errors=True)
    counts = spark_night.snapshot_counts(spark, snapshot)
    return {"interactions": counts["interactions"], "night_events": merged["night_events"],
            "duplicates_dropped": merged["duplicates_dropped"], "repeated_events": merged["repeated_events"],
            "new_users": n_new, "forgotten_events": merged["forgotten_events"], "users": counts["users"],
            "items": counts["items"], "digest": snapshot_store.digest(snapshot)}


def _write_side_tables(snapshot: Path, side) -> None:
    """The snapshot's users / items tables: the landing's, checked (removed when the landing has none)."""
    for df, name, id_col in ((side.users, S.USERS_FILE, S.USER_ID), (side.items, S.ITEMS_FILE, S.ITEM_ID)):
        if df is None:
            (snapshot / name).unlink(missing_ok=True)
            continue
        with atomic_file(snapshot / name) as tmp:
            pq.write_table(side_table(df, id_col), tmp)


def _without_forgotten(users, work: Path, work_id: str):
    """The landing's users table (an Arrow table, or ``None``) less the rows of forgotten users."""
    if users is None or S.USER_ID not in users.column_names:
        return users
    erased = forget.forgotten_mask(users.column(S.USER_ID).to_numpy(zero_copy_only=False), work, work_id)
    return users.filter(pa.array(~erased)) if erased.any() else users


def _split(date, cfg, state, work_id) -> dict:
    """Every user of the snapshot (its user_id column alone) and of the users table, by a stable hash."""
    snapshot = cfg.work / "snapshot"
    if cfg.engine == "spark":
        from . import spark_night

        split = spark_night.split_users(spark_night.session(cfg), snapshot, cfg.val_fraction, cfg.test_fraction)
    else:
        ids = snapshot_store.distinct(snapshot, columns=(S.USER_ID,))[0][S.USER_ID]
        if (snapshot / S.USERS_FILE).exists():
            ids = np.union1d(ids, pq.read_table(snapshot / S.USERS_FILE, columns=[S.USER_ID]).column(0).to_numpy(
                zero_copy_only=False))
        split = stable_split(ids, cfg.val_fraction, cfg.test_fraction)
    path = cfg.work / "splits" / f"date={date}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        split.reset_index().to_parquet(tmp, index=False)
    counts = split.value_counts().to_dict()
    return {"path": str(path), **{f"n_{k}": int(v) for k, v in counts.items()}}


def _load_split(state) -> pd.Series:
    return pd.read_parquet(state.done["split"]["path"]).set_index(S.USER_ID)["split"]


def _champion(cfg: NightlyConfig, work_id: str, version: str | None = None) -> tuple[str | None, HyperRecommender | None]:
    """The champion (``version``, or the one ``@champion`` names now) and its model; ``(None, None)``
    when there is none yet. A champion registered by another work folder's nightly is refused: two
    pipelines on one store must register under different names."""
    name = cfg.registered_model
    if version == ADOPTED:
        return ADOPTED, _adopted_champion(cfg)
    if version is None:
        version = tracking.alias_version("champion", name)
        if version is None:
            if cfg.adopt_store and read_champion_record(cfg.work) is not None:
                return ADOPTED, _adopted_champion(cfg)
            return None, None
    tags = tracking.version_tags(version, name)
    owner = tags.get("work_id")
    if owner is not None and owner != work_id:
        raise RecsysHyperError(
            f"{name}@champion is version {version}, registered by the nightly of another work folder "
            f"({tags.get('work_dir', 'unknown')}, night {tags.get('night', '?')}), not by {cfg.work}: two nightly "
            f"pipelines on one tracking store must register under different names: pass --registered-model NAME "
            f"to one of them (or give each its own store). Nothing was decided.")
    return version, load_version(version, name)


def _users_dataset(cfg: NightlyConfig, users) -> Dataset:
    """The snapshot's events of ``users`` (an array of ids; ``None``: everyone's), with its users /
    items tables: read in full by this process (one machine), or selected by Spark and collected
    (``--engine spark``)."""
    if cfg.engine == "spark":
        from . import spark_night

        return spark_night.users_dataset(spark_night.session(cfg), cfg.work / "snapshot", users)
    ds = load_dataset(cfg.work / "snapshot")
    keep = ds.interactions[S.USER_ID].isin(users) if users is not None else None
    if keep is None or keep.all():
        return ds
    return Dataset(ds.interactions[keep].reset_index(drop=True), ds.users, ds.items, implicit=ds.implicit,
                   source=ds.source)


def _train(date, cfg, state, work_id) -> dict:
    split = _load_split(state)
    learners = split.index[split != "test"]           # training and validation users (validation stops it)
    if cfg.train_users is not None and len(learners) > cfg.train_users:
        learners = _sample(learners, cfg.train_users, seed=1)
        log.info("night %s: training on a seeded sample of %d of %d users (--train-users)", date, len(learners),
                 int((split != "test").sum()))
    train_ds = _users_dataset(cfg, learners)  # the test users' events are never held through the training
    version, champion = _champion(cfg, work_id)
    erasure, requests = forget.retrain_pending(cfg.work), forget.requests(cfg.work)
    if cfg.full_retrain or erasure:           # never warm-started from a model that saw forgotten users
        champion = None
    config = cfg.model_config
    if champion is not None and cfg.warm_max_steps and config.train.max_steps is None:
        config = config.replace(max_steps=cfg.warm_max_steps)
    elif champion is None and cfg.first_max_steps and config.train.max_steps is None:
        config = config.replace(max_steps=cfg.first_max_steps)
    out, validation = cfg.work / "models" / f"date={date}", split.index[split == "validation"]
    fit_elsewhere = None
    if cfg.train_processes > 1:                   # across Spark tasks (TorchDistributor)
        from . import spark_night

        def fit_elsewhere():
            return spark_night.fit_on_executors(spark_night.session(cfg), train_ds, out, config,
                                                validation.to_numpy(), champion, cfg.train_processes, cfg.progress)
    trained = train_and_register(train_ds, out, config, validation_users=validation, warm_start=champion,
                                 resume=True, progress=cfg.progress, new_run=False,
                                 version_tags={"night": date, "work_id": work_id, "work_dir": str(cfg.work)},
                                 reuse_tags=("night", "work_id"), registered_model=cfg.registered_model,
                                 restart_stale=True, fit_elsewhere=fit_elsewhere)
    return {"model_dir": str(trained.out), "version": trained.version, "warm_started": champion is not None,
            "erasure_requests": requests,
            "warm_started_from": version if champion is not None else None,
            "best_epoch": trained.model.training_.best_epoch, "val_mae": trained.best["mae"],
            "processes": trained.processes,
            "val_ndcg10": trained.best["ndcg10"]}


def _evaluate(date, cfg, state, work_id) -> dict:
    split = _load_split(state)
    models = {"challenger": HyperRecommender.load(state.done["train"]["model_dir"])}
    version, champion = _champion(cfg, work_id)
    if champion is not None:
        models["champion"] = champion
    out = {"champion_version": version}
    sampled = {part: _sample(split.index[split == part], cfg.max_eval_users) for part in ("validation", "test")}
    ds = _users_dataset(cfg, np.concatenate(list(sampled.values())))
    for part, users in sampled.items():
        for who, m in measure_models(models, ds, users, cfg.gate_shots, min_query=5).items():
            out.update({f"{who}_{part}_{k}": v for k, v in m.items()})
    return out


def _figure(e: dict, who: str, metric: str) -> float | None:
    """One validation figure of the gate, or ``None`` when it is missing or not finite."""
    v = e.get(f"{who}_validation_{metric}")
    try:
        return float(v) if v is not None and math.isfinite(float(v)) else None
    except (TypeError, ValueError):
        return None


def gate_decision(e: dict, tolerance_mae: float, tolerance_ndcg: float) -> tuple[bool, str]:
    """Promote unless the challenger is worse than the champion beyond a tolerance, in MAE or in
    nDCG@10, on the validation users (the test users' figures are reported, never decided on). A
    missing or non-finite figure of the challenger's is "not better": never promoted on it."""
    if "champion_validation_mae" not in e:
        return True, "no champion yet: the first model becomes champion"
    c_mae, c_ndcg = _figure(e, "challenger", "mae"), _figure(e, "challenger", "ndcg@10")
    if c_mae is None or c_ndcg is None:
        return False, (f"the challenger's validation figures are missing or not finite (MAE "
                       f"{e.get('challenger_validation_mae')}, nDCG@10 {e.get('challenger_validation_ndcg@10')} on "
                       f"{e.get('challenger_validation_users', 0)} users): not promoted on them")
    h_mae, h_ndcg = _figure(e, "champion", "mae"), _figure(e, "champion", "ndcg@10")
    if h_mae is None or h_ndcg is None:
        return True, (f"the champion's validation figures are missing or not finite (MAE "
                      f"{e.get('champion_validation_mae')}, nDCG@10 {e.get('champion_validation_ndcg@10')}); the "
                      f"challenger's are (MAE {c_mae:.4f}, nDCG@10 {c_ndcg:.4f})")
    d_mae = c_mae - h_mae
    d_ndcg = c_ndcg - h_ndcg
    worse = []
    if d_mae > tolerance_mae:
        worse.append(f"MAE {c_mae:.4f} vs {h_mae:.4f} (+{d_mae:.4f} > {tolerance_mae})")
    if -d_ndcg > tolerance_ndcg:
        worse.append(f"nDCG@10 {c_ndcg:.4f} vs {h_ndcg:.4f} ({d_ndcg:+.4f} < -{tolerance_ndcg})")
    if worse:
        return False, "worse than the champion on the same validation users: " + "; ".join(worse)
    return True, ("not worse than the champion within tolerance on the same validation users "
                  f"(MAE {d_mae:+.4f}, nDCG@10 {d_ndcg:+.4f})")


def _gate(date, cfg, state, work_id) -> dict:
    version = state.done["train"]["version"]
    if not state.done["train"]["warm_started"]:          # an erasure's retraining, if one was due, is done
        forget.retrained(cfg.work, upto=int(state.done["train"].get("erasure_requests", 0)))
    e = state.done["evaluate"]
    promoted, reason = gate_decision(e, cfg.tolerance_mae, cfg.tolerance_ndcg)
    if promoted:
        tracking.promote(version, cfg.registered_model)
    champion = version if promoted else e.get("champion_version")
    if champion is None:
        raise RecsysHyperError(f"night {date}: no champion: the first challenger was not promoted ({reason})")
    if champion == ADOPTED:                 # the recorded champion stays: registered in this store, then promoted
        champion = _register_adopted(cfg, work_id)
        tracking.promote(champion, cfg.registered_model)
        reason += f" (the work folder's recorded champion, registered in this store as version {champion})"
    write_champion_record(cfg, champion, state.done["train"]["model_dir"] if promoted
                          else _champion_files(cfg, champion, adopted=e.get("champion_version") == ADOPTED))
    log.debug("night %s: challenger v%s %s (%s)", date, version, "promoted" if promoted else "not promoted", reason)
    return {"promoted": promoted, "reason": reason, "challenger_version": version, "champion_version": champion}


#: the champion version of a night that adopted a store: the recorded champion's files, not yet registered there
ADOPTED = "adopted"


def champion_record_path(work: Path) -> Path:
    return Path(work) / "champion.json"


def read_champion_record(work: Path) -> dict | None:
    """What the work folder records of its champion (``WORK/champion.json``), ``None`` if nothing."""
    import json

    path = champion_record_path(work)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RecsysHyperError(f"{path}: the work folder's champion record cannot be read ({exc}); restore it, or "
                               f"remove it to let the tracking store's {'champion'} alias decide alone") from None
    return record if isinstance(record, dict) and record.get("version") else None


def write_champion_record(cfg: NightlyConfig, version: str, model_dir: str | None) -> None:
    """Record the champion the gate decided on: registered name, version, store, the model's digest
    and where its files are in the work folder (what ``--adopt-store`` gates against)."""
    import json

    from .models import model_digest

    tags = tracking.version_tags(version, cfg.registered_model)
    digest = tags.get("model_digest") or (model_digest(model_dir) if model_dir and Path(model_dir).is_dir() else None)
    record = {"registered_model": cfg.registered_model, "version": str(version),
              "tracking_uri": tracking.configure(), "model_digest": digest,
              "model_dir": model_dir, "night": tags.get("night"), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_file(champion_record_path(cfg.work)) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def _champion_files(cfg: NightlyConfig, version: str, adopted: bool) -> str | None:
    """Where a champion that stayed has its files in the work folder: the recorded ones (the same
    version, or adopted), else the folder of the night that trained it (its ``night`` tag)."""
    record = read_champion_record(cfg.work)
    if record and (adopted or str(record.get("version")) == str(version)) and record.get("model_dir"):
        return record["model_dir"]
    night = tracking.version_tags(version, cfg.registered_model).get("night")
    folder = cfg.work / "models" / f"date={night}"
    return str(folder) if night and folder.is_dir() else None


def _check_champion_record(cfg: NightlyConfig, work_id: str) -> bool:
    """Whether the night must gate against the champion's files the work folder records, because
    its store does not know that champion; never "no champion yet" while the work folder has one.
    A store that knows nothing of this work folder (lost, replaced, pointed elsewhere) stops the
    night before any work, unless ``adopt_store``; in a store that holds the folder's other
    versions, a champion a person removed (its version or its alias) is gated against from its
    files, with a warning."""
    record = read_champion_record(cfg.work)
    if record is None:
        return False
    name, version = cfg.registered_model, str(record["version"])
    renamed = record.get("registered_model", name) != name
    current = tracking.alias_version("champion", name)
    model_dir = record.get("model_dir")
    files = bool(model_dir) and Path(model_dir).is_dir()
    problem = None
    if current is None and renamed:                 # --registered-model changed: the new name has no champion
        problem = (f"the night registers under {name}, which has no champion, while the work folder's champion is "
                   f"{record['registered_model']} version {version}; pass --registered-model "
                   f"{record['registered_model']} to go on with it")
    elif renamed:
        return False                                # the new name has a champion: the store's say
    elif current is None:
        if tracking.knows_work_folder(work_id, name, cfg.experiment):      # this store, tidied by a person
            if files:
                log.warning("%s@champion is not set although %s records version %s (its version or alias was "
                            "removed from the registry): the challenger is gated against the recorded champion's "
                            "files in %s", name, champion_record_path(cfg.work), version, model_dir)
                return True
            log.warning("%s@champion is not set although %s records version %s, and its files (%s) are gone too: "
                        "the challenger has no champion to be gated against and becomes champion", name,
                        champion_record_path(cfg.work), version, model_dir)
            return False
        problem = f"the store has no {name}@champion"
    elif current == version and record.get("model_digest"):
        found = tracking.version_tags(current, name).get("model_digest")
        if found is not None and found != record["model_digest"]:
            problem = (f"its {name} version {current} is another model (digest {found}, recorded "
                       f"{record['model_digest']})")
    if problem is None:
        return False                        # the store knows it (a promote or rollback by hand is the store's say)
    if cfg.adopt_store:
        if not files:
            raise RecsysHyperError(f"--adopt-store: the recorded champion's model files ({model_dir}) are gone; "
                                   f"restore them, or point MLFLOW_TRACKING_URI at the store {record.get('tracking_uri')}")
        log.warning("%s, although %s records %s version %s (store %s): adopting this store, the challenger is gated "
                    "against the recorded champion's files in %s", problem, champion_record_path(cfg.work), name,
                    version, record.get("tracking_uri"), model_dir)
        return True
    raise RecsysHyperError(
        f"the work folder {cfg.work} records its champion as {record.get('registered_model', name)} version {version} (store "
        f"{record.get('tracking_uri')}, model digest {record.get('model_digest')}), but the tracking store "
        f"{tracking.configure()} does not know it: {problem}. A night on it would read \"no champion yet\" and promote "
        f"without a gate, so nothing was done. Point MLFLOW_TRACKING_URI at the store that holds it; or, if this store "
        f"replaces it on purpose, run the night with --adopt-store (the challenger is gated against the recorded "
        f"champion's files in {record.get('model_dir')} and the winner registered here): recsys-hyper pipeline nightly "
        f"--landing {cfg.landing} --work {cfg.work} --adopt-store")


def _adopted_champion(cfg: NightlyConfig) -> HyperRecommender:
    """The recorded champion, from its files in the work folder (their digest checked)."""
    from .models import model_digest

    record = read_champion_record(cfg.work)
    model_dir = record["model_dir"]
    digest = model_digest(model_dir)
    if record.get("model_digest") and digest != record["model_digest"]:
        raise RecsysHyperError(f"--adopt-store: the recorded champion's files in {model_dir} changed since (digest "
                               f"{digest}, recorded {record['model_digest']}); restore them")
    return HyperRecommender.load(model_dir)


def _register_adopted(cfg: NightlyConfig, work_id: str) -> str:
    """Register the recorded champion's files in the adopted store (tagged as the night's versions are)."""
    from .models import example_io, model_digest

    record = read_champion_record(cfg.work)
    model = _adopted_champion(cfg)
    kinds = _snapshot_kinds(cfg.work / "snapshot") or {S.USER_ID: "int64"}
    ids = pd.DataFrame({S.USER_ID: pd.Series(dtype="int64" if kinds[S.USER_ID] == "int64" else "object")})
    example, example_out = example_io(model, ids)                  # the user id type tells the example's
    return tracking.log_pyfunc_model(
        record["model_dir"], example, example_out, alias=None, name=cfg.registered_model,
        version_tags={"night": record.get("night"), "work_id": work_id, "work_dir": str(cfg.work),
                      "model_digest": model_digest(record["model_dir"]), "adopted_from": record.get("tracking_uri")},
        description=f"the work folder's champion (version {record['version']} of {record.get('tracking_uri')}), "
                    f"adopted into this store")


def _night_champion(cfg, state, work_id) -> HyperRecommender:
    """The champion the night's gate decided on (its version, whatever the alias says later)."""
    return _champion(cfg, work_id, version=str(state.done["gate"]["champion_version"]))[1]


def _score(date, cfg, state, work_id) -> dict:
    from ..scoring import score_dataset

    champion = _night_champion(cfg, state, work_id)
    out = cfg.work / "scores"
    retired = _retired(cfg, champion)
    candidates = without_excluded(champion, cfg.work / "snapshot", None, excluded=retired)
    if cfg.engine == "spark":
        import functools

        from ..scoring.spark import score_dataset_spark
        from . import spark_night
        from .models import load_model

        record = read_champion_record(cfg.work) or {}
        files = record.get("model_dir") if str(record.get("version")) == str(state.done["gate"]["champion_version"]) \
            else None
        spec = files if files and Path(files).is_dir() else f"models:/{cfg.registered_model}/" \
            f"{state.done['gate']['champion_version']}"
        report = score_dataset_spark(spark_night.session(cfg), champion, functools.partial(load_model, spec),
                                     str(cfg.work / "snapshot"), str(out), date, top_k=cfg.top_k,
                                     allow_rating_mismatch=cfg.allow_rating_mismatch, candidates=candidates)
    else:
        report = score_dataset(champion, cfg.work / "snapshot", out, date, top_k=cfg.top_k, progress=cfg.progress,
                               allow_rating_mismatch=cfg.allow_rating_mismatch, candidates=candidates)
    n_left_out = 0 if candidates is None else len(champion.item_map_) - len(candidates)
    if n_left_out:
        log.info("night %s: %d items retired or gone from the catalogue are not recommended", date, n_left_out)
    return {"path": report.outputs["recommendations"], "users": report.users,
            "users_per_second": round(report.users_per_second, 1), "retired_items": n_left_out}


def _retired(cfg: NightlyConfig, model: HyperRecommender) -> np.ndarray:
    """The model's items that are retired: gone from the current catalogue (the landing's
    ``items.parquet``, kept as the snapshot's; none when there is no catalogue) or marked retired
    in it (its boolean ``retired`` column)."""
    from .catalogue import retired_items, union

    path = cfg.work / "snapshot" / S.ITEMS_FILE
    if not path.is_file():
        return np.array([])
    catalogue = pd.read_parquet(path)
    known = model.item_map_.ids(np.arange(len(model.item_map_)))
    gone = known[~pd.Index(known).isin(catalogue[S.ITEM_ID])]
    return union(gone, retired_items(catalogue))


def _cohort(date, cfg, state, work_id) -> dict:
    """Serve the night's new users from their first day's events, and measure the previous
    night's cohort on its users' events of this night (see :mod:`.cohorts`): the events the night
    added to the snapshot, so that a re-delivered event never counts as a return."""
    work, snapshot = cfg.work, cfg.work / "snapshot"
    champion = _night_champion(cfg, state, work_id)
    users = pd.read_parquet(snapshot / S.USERS_FILE) if (snapshot / S.USERS_FILE).exists() else None
    out = {"cohort_users": 0}
    if (cohorts.cohort_dir(work, date) / "events.parquet").exists():
        out["cohort_users"] = cohorts.serve(work, date, champion, state.done["gate"]["champion_version"], users,
                                            allow_rating_mismatch=cfg.allow_rating_mismatch,
                                            exclude_items=_retired(cfg, champion))
    earlier = [d for d in snapshot_store.partition_dates(snapshot) if d < date]
    cohort_events = cohorts.cohort_dir(work, earlier[-1]) / "events.parquet" if earlier else None
    if state.done["merge"].get("night_events") and cohort_events is not None and cohort_events.exists():
        # the previous cohort's users' events of the night (they alone are measured), read filtered
        cohort_users = pd.unique(pd.read_parquet(cohort_events, columns=[S.USER_ID])[S.USER_ID])
        tonight = snapshot_store.night_events(snapshot, date, users=cohort_users)
        row = cohorts.measure(work, earlier[-1], tonight, lambda version: _served_model(cfg, version),
                              champion.implicit_, user_features=users,
                              allow_rating_mismatch=cfg.allow_rating_mismatch)
        if row is not None:
            table = cohorts.append_history(work, row)
            tracking.log_table(table, "cohorts.json")
            out.update({f"cohort_{k}": v for k, v in row.items() if k not in ("cohort_date", "served_by", "users")})
            out["cohort_users_measured"] = row["users"]
            out["cohort_measured"] = row["cohort_date"]
    return out


def _served_model(cfg, version: str) -> HyperRecommender | None:
    """The registered version that served a cohort; ``None`` (with a warning) when a person has
    deleted it from the registry since: its cohort's MAE is then not measured, the rest is."""
    if not tracking.version_exists(version, cfg.registered_model):
        log.warning("%s version %s, which served the previous cohort, is no longer in the registry: that cohort's "
                    "MAE is not measured (its ranking figures are)", cfg.registered_model, version)
        return None
    return load_version(version, cfg.registered_model)


def _cold_start_eval(date, cfg, state, work_id) -> dict:
    """The cold-start protocol on the night's own split: the champion just decided on is measured
    as it is (it never trained on the cold-test users), the baselines are fitted on the same
    training users; no second hypernetwork is trained."""
    from ..evaluation.protocol import Split

    out = cfg.work / "evaluation" / f"date={date}"
    labels = _load_split(state)
    test = labels.index[labels == "test"]
    unsampled = np.setdiff1d(test, _sample(test, cfg.max_eval_users))
    # test users beyond the cap: unlabelled, so neither evaluated nor learned from (the protocol
    # learns from labelled training and validation users only), without a copy of the events
    labels = labels.drop(unsampled)
    learners = labels.index[labels != "test"]
    sampled = cfg.train_users is not None and len(learners) > cfg.train_users
    if sampled:                                      # the baselines learn from the training step's sample
        labels = labels.drop(np.setdiff1d(learners, _sample(learners, cfg.train_users, seed=1)))
    ds = _users_dataset(cfg, labels.index.to_numpy() if sampled or cfg.engine == "spark" else None)
    split = Split(labels.rename("split").reset_index())
    result, run_id = run_cold_start_evaluation(
        ds, out, Protocol(shots=tuple(cfg.eval_shots), min_query=5), methods=cfg.eval_methods,
        model_config=cfg.model_config, track=True, experiment=cfg.experiment, progress=cfg.progress,
        tags={"date": date, "champion_version": str(state.done["gate"]["champion_version"])}, nested=True,
        split=split, fitted={"hyper": _night_champion(cfg, state, work_id)})
    hyper = result.table[result.table["method"] == "hyper"]
    return {"path": str(out), "run_id": run_id, "evaluated_users": result.n_eligible,
            "hyper_mae_mean": float(hyper["mae"].mean()), "hyper_ndcg10_mean": float(hyper["ndcg@10"].mean())}
