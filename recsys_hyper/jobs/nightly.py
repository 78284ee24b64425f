"""The nightly training pipeline: ingest a day, meta-train a challenger, promote it only if it is
not worse than the champion, score every user, evaluate cold start.

Steps, each recorded as done in ``WORK/state/date=D.json`` (a re-run skips what is done; a killed
run resumes at the first step not done, and training from its last epoch checkpoint):

1. ``validate``: every file of ``LANDING/events/date=D``; a bad one is moved to
   ``WORK/quarantine/date=D/`` with a ``.reason.txt`` beside it; the rest goes on.
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
A lock file stops two runs at once; one left by a dead process is taken over.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import tracking
from ..config import Config
from ..data import schema as S
from ..atomic import atomic_file
from ..data.dataset import Dataset, load_dataset, side_table, validate_frames
from ..data.episodes import capped_sample
from ..errors import DataValidationError, RecsysHyperError
from ..evaluation.protocol import Protocol
from ..evaluation.runner import measure_models
from ..recommender import HyperRecommender
from .evaluate import run_cold_start_evaluation
from .landing import landing_dates
from . import cohorts
from . import snapshot as snapshot_store
from .models import code_version, load_alias, load_model
from .state import STEPS, NightState, RunLock, stable_split
from .train import train_and_register

log = logging.getLogger(__name__)

EXPERIMENT = "recsys-hyper-nightly"


@dataclass(frozen=True)
class NightlyConfig:
    landing: Path
    work: Path
    model_config: Config = field(default_factory=Config)
    full_retrain: bool = False
    warm_max_steps: int | None = 2000  # a warm start refines: a step budget, whatever the number of users
    first_max_steps: int | None = None  # a first (or --full) training: full passes over every user unless set
    max_eval_users: int = 5000         # the gate's and the cold-start step's users: a seeded sample of at most this many
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    tolerance_mae: float = 0.005       # the challenger may be this much worse in MAE ...
    tolerance_ndcg: float = 0.005      # ... and in nDCG@10 (validation users, mean over k)
    gate_shots: tuple[int, ...] = (0, 1, 3, 5, 10)
    top_k: int = 100
    eval_methods: tuple[str, ...] = ("popularity", "bias", "ease", "hyper")   # cheap, strong baselines
    eval_shots: tuple[int, ...] = (0, 1, 3, 5, 10)
    experiment: str = EXPERIMENT
    progress: bool = True


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

    def summary(self, work: str | Path) -> str:
        """A few lines: what ran, the champion and why, the key metrics, where the outputs are."""
        m = self.metrics
        done = f"ran {', '.join(self.steps_run)}" if self.steps_run else "already done"
        lines = [f"night {self.date}: {done}"
                 + (f"; skipped {', '.join(self.steps_skipped)}" if self.steps_run and self.steps_skipped else "")]
        if self.quarantined:
            lines.append(f"  quarantined: {', '.join(q['file'] for q in self.quarantined)} "
                         f"(see {work}/quarantine/date={self.date})")
        lines.append(f"  champion: recsys-hyper version {self.champion_version} - challenger "
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
    """``[date]``, or with ``all_dates`` every landing date (oldest first)."""
    if not date and not all_dates:
        raise RecsysHyperError("pass --date YYYY-MM-DD, or --all for every landing date")
    dates = [date] if date else landing_dates(landing)
    if not dates:
        raise RecsysHyperError(f"{landing}: no landing partitions (events/date=YYYY-MM-DD/*.parquet)")
    return dates


def mlflow_ui_command() -> str:
    return f"mlflow ui --backend-store-uri {tracking.configure()}"


def run_nightly(date: str, cfg: NightlyConfig) -> NightReport:
    """Run (or resume) the night of ``date``."""
    t0 = time.perf_counter()
    work, landing = Path(cfg.work), Path(cfg.landing)
    if date not in landing_dates(landing):
        raise RecsysHyperError(f"{landing / 'events'}: no partition date={date} (found: "
                               f"{', '.join(landing_dates(landing)) or 'none'}); the landing folder needs "
                               f"events/date=YYYY-MM-DD/*.parquet")
    tracking.ensure_reachable()                                   # fail fast, before any heavy work
    report = NightReport(date)
    with RunLock(work / "nightly.lock"):
        state = NightState.load(work, date)
        with tracking.night_run(date, cfg.experiment, run_id=state.done.get("_run", {}).get("run_id"),
                                tags={"code_version": code_version()}) as run_id:
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
                with tracking.step_run(name, run_id=state.started.get(name)) as step_run_id:
                    if state.started.get(name) != step_run_id:
                        state.start(name, step_run_id)
                    outputs = steps[name](date, cfg, state) or {}
                    outputs["seconds"] = round(time.perf_counter() - t_step, 2)
                    outputs["peak_rss_mib"] = peak_rss_mib()               # the process's high-water mark so far
                    tracking.log_step(outputs)
                state.complete(name, **outputs)
                report.steps_run.append(name)
            tracking.tag_night(data_digest=state.done["merge"]["digest"], date=date)
    d = state.done
    report.quarantined = d["validate"].get("quarantined", [])
    report.promoted, report.reason = d["gate"]["promoted"], d["gate"]["reason"]
    report.champion_version = d["gate"]["champion_version"]
    report.metrics = d["evaluate"]
    report.recommendations = d["score"]["path"]
    report.cohort = d["cohort"]
    report.evaluation = d["cold_start_eval"]["path"]
    report.seconds = time.perf_counter() - t0
    return report


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

def _validate(date, cfg, state) -> dict:
    from ..data.validation import Collector, ValidationReport, check_interactions, read_parquet_checked

    part = Path(cfg.landing) / "events" / f"date={date}"
    quarantine = Path(cfg.work) / "quarantine" / f"date={date}"
    reference = _snapshot_kinds(Path(cfg.work) / "snapshot")
    good, bad = [], []
    for f in sorted(part.glob("*.parquet")):
        c, rep = Collector(), ValidationReport()
        table = read_parquet_checked(f, c, required=True)
        frame = check_interactions(table, c, rep, file=f.name) if table is not None else None
        if frame is not None:
            kinds = _kinds(frame, rep.implicit)
            reference = reference or kinds                       # the first night: its first good file
            for what, (want, got) in ((k, (reference[k], kinds[k])) for k in reference):
                if want != got:
                    c.add(f.name, None if what == "feedback" else what,
                          f"{'holds' if what == 'feedback' else 'has'} {got} "
                          f"{'feedback' if what == 'feedback' else 'ids'} but the snapshot has {want}",
                          "the landing file's schema changed: re-export it in the snapshot's schema (columns "
                          "user_id, item_id, rating, timestamp with the same types), then move it back to the "
                          "landing folder and re-run the night")
        if c.problems:
            quarantine.mkdir(parents=True, exist_ok=True)
            reason = str(DataValidationError(c.problems))
            (quarantine / f"{f.name}.reason.txt").write_text(reason + "\n")
            shutil.move(str(f), quarantine / f.name)
            log.warning("quarantined %s: %s", f, reason)
            bad.append({"file": f.name, "reason": reason})
        else:
            good.append(str(f))
    bad += [{"file": p.name, "reason": (p.with_name(p.name + ".reason.txt")).read_text().strip()}
            for p in sorted(quarantine.glob("*.parquet")) if p.name not in {b["file"] for b in bad}]
    if not good:
        log.warning("night %s: no valid event file; the snapshot stays as it was", date)
    return {"valid_files": good, "quarantined": bad, "n_valid": len(good), "n_quarantined": len(bad)}


def _kinds(frame: pd.DataFrame, implicit: bool) -> dict:
    """What must agree between a landing file and the snapshot: id types and the kind of feedback."""
    kind = lambda s: "int64" if pd.api.types.is_integer_dtype(s) else "string"  # noqa: E731
    return {S.USER_ID: kind(frame[S.USER_ID]), S.ITEM_ID: kind(frame[S.ITEM_ID]),
            "feedback": "implicit" if implicit else "explicit (rated)"}


def _snapshot_kinds(snapshot: Path) -> dict | None:
    """:func:`_kinds` of the snapshot, from its schema alone (nothing is read)."""
    import pyarrow as pa

    schema = snapshot_store.schema(snapshot)
    if schema is None:
        return None
    kind = lambda t: "int64" if pa.types.is_integer(t) else "string"  # noqa: E731
    return {S.USER_ID: kind(schema.field(S.USER_ID).type), S.ITEM_ID: kind(schema.field(S.ITEM_ID).type),
            "feedback": "explicit (rated)" if S.RATING in schema.names else "implicit"}


def _merge(date, cfg, state) -> dict:
    """The night's valid events become the snapshot's partition ``date=D`` (earlier nights are read
    by column projection only: their user ids, for the night's cohort, and the counts)."""
    work, landing = Path(cfg.work), Path(cfg.landing)
    snapshot = work / "snapshot"
    files = state.done["validate"]["valid_files"]
    earlier, earlier_rows = snapshot_store.distinct(snapshot, exclude=date)
    if not files and not earlier_rows:
        raise RecsysHyperError(f"night {date}: no valid events and no earlier snapshot; nothing to train on")
    users = pd.read_parquet(landing / S.USERS_FILE) if (landing / S.USERS_FILE).exists() else None
    items = pd.read_parquet(landing / S.ITEMS_FILE) if (landing / S.ITEMS_FILE).exists() else None
    n_new, night = 0, None
    if files:
        raw = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        n_new = cohorts.record(work, date, raw, earlier[S.USER_ID])     # the night's new users: a cohort
        night = validate_frames(raw, users, items, source=f"{landing / 'events'}/date={date}")
        del raw
        side = night
    else:                                     # the side tables' id types, checked against earlier nights
        sample = pads.dataset([str(p) for p in snapshot_store.partitions(snapshot)], format="parquet").head(1000)
        side = validate_frames(sample, users, items, source=str(snapshot))
    for df, name, id_col in ((side.users, S.USERS_FILE, S.USER_ID), (side.items, S.ITEMS_FILE, S.ITEM_ID)):
        if df is None:
            (snapshot / name).unlink(missing_ok=True)
            continue
        with atomic_file(snapshot / name) as tmp:
            pq.write_table(side_table(df, id_col), tmp)
    out = {"interactions": earlier_rows, "night_events": 0, "duplicates_dropped": 0, "new_users": n_new}
    user_ids, item_ids = earlier[S.USER_ID], earlier[S.ITEM_ID]
    if night is not None:
        snapshot_store.write_night(snapshot, date, night.interactions, night.implicit)
        tonight = night.interactions
        out.update(interactions=earlier_rows + len(tonight), night_events=len(tonight),
                   duplicates_dropped=night.report.n_duplicates_dropped)
        user_ids, item_ids = np.union1d(user_ids, tonight[S.USER_ID]), np.union1d(item_ids, tonight[S.ITEM_ID])
    return {**out, "users": len(user_ids), "items": len(item_ids), "digest": snapshot_store.digest(snapshot)}


def _split(date, cfg, state) -> dict:
    """Every user of the snapshot (its user_id column alone) and of the users table, by a stable hash."""
    snapshot = Path(cfg.work) / "snapshot"
    ids = snapshot_store.distinct(snapshot, columns=(S.USER_ID,))[0][S.USER_ID]
    if (snapshot / S.USERS_FILE).exists():
        ids = np.union1d(ids, pq.read_table(snapshot / S.USERS_FILE, columns=[S.USER_ID]).column(0).to_numpy(
            zero_copy_only=False))
    split = stable_split(ids, cfg.val_fraction, cfg.test_fraction)
    path = Path(cfg.work) / "splits" / f"date={date}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        split.reset_index().to_parquet(tmp, index=False)
    counts = split.value_counts().to_dict()
    return {"path": str(path), **{f"n_{k}": int(v) for k, v in counts.items()}}


def _load_split(state) -> pd.Series:
    return pd.read_parquet(state.done["split"]["path"]).set_index(S.USER_ID)["split"]


def _train(date, cfg, state) -> dict:
    ds = load_dataset(Path(cfg.work) / "snapshot")
    split = _load_split(state)
    test_users = split.index[split == "test"]
    train_ds = Dataset(ds.interactions[~ds.interactions[S.USER_ID].isin(test_users)].reset_index(drop=True),
                       ds.users, ds.items, implicit=ds.implicit, source=ds.source)
    del ds                                  # the test users' events are not held through the training
    champion = None if cfg.full_retrain else load_alias("champion")
    config = cfg.model_config
    if champion is not None and cfg.warm_max_steps and config.train.max_steps is None:
        config = config.replace(max_steps=cfg.warm_max_steps)
    elif champion is None and cfg.first_max_steps and config.train.max_steps is None:
        config = config.replace(max_steps=cfg.first_max_steps)
    trained = train_and_register(train_ds, Path(cfg.work) / "models" / f"date={date}", config,
                                 validation_users=split.index[split == "validation"], warm_start=champion,
                                 resume=True, progress=cfg.progress, new_run=False,
                                 version_tags={"night": date}, reuse_tag="night")
    return {"model_dir": str(trained.out), "version": trained.version, "warm_started": champion is not None,
            "best_epoch": trained.model.training_.best_epoch, "val_mae": trained.best["mae"],
            "val_ndcg10": trained.best["ndcg10"]}


def _evaluate(date, cfg, state) -> dict:
    ds = load_dataset(Path(cfg.work) / "snapshot")
    split = _load_split(state)
    models = {"challenger": HyperRecommender.load(state.done["train"]["model_dir"])}
    champion = load_alias("champion")
    if champion is not None:
        models["champion"] = champion
    out = {}
    for part in ("validation", "test"):
        users = _sample(split.index[split == part], cfg.max_eval_users)
        for who, m in measure_models(models, ds, users, cfg.gate_shots, min_query=5).items():
            out.update({f"{who}_{part}_{k}": v for k, v in m.items()})
    return out


def gate_decision(e: dict, tolerance_mae: float, tolerance_ndcg: float) -> tuple[bool, str]:
    """Promote unless the challenger is worse than the champion beyond a tolerance, in MAE or in
    nDCG@10, on the validation users (the test users' figures are reported, never decided on)."""
    if "champion_validation_mae" not in e:
        return True, "no champion yet: the first model becomes champion"
    d_mae = e["challenger_validation_mae"] - e["champion_validation_mae"]
    d_ndcg = e["challenger_validation_ndcg@10"] - e["champion_validation_ndcg@10"]
    worse = []
    if d_mae > tolerance_mae:
        worse.append(f"MAE {e['challenger_validation_mae']:.4f} vs {e['champion_validation_mae']:.4f} "
                     f"(+{d_mae:.4f} > {tolerance_mae})")
    if -d_ndcg > tolerance_ndcg:
        worse.append(f"nDCG@10 {e['challenger_validation_ndcg@10']:.4f} vs {e['champion_validation_ndcg@10']:.4f} "
                     f"({d_ndcg:+.4f} < -{tolerance_ndcg})")
    if worse:
        return False, "worse than the champion on the same validation users: " + "; ".join(worse)
    return True, ("not worse than the champion within tolerance on the same validation users "
                  f"(MAE {d_mae:+.4f}, nDCG@10 {d_ndcg:+.4f})")


def _gate(date, cfg, state) -> dict:
    version = state.done["train"]["version"]
    promoted, reason = gate_decision(state.done["evaluate"], cfg.tolerance_mae, cfg.tolerance_ndcg)
    if promoted:
        tracking.set_alias("champion", version)
    champion = tracking.alias_version("champion")
    log.debug("night %s: challenger v%s %s (%s)", date, version, "promoted" if promoted else "not promoted", reason)
    return {"promoted": promoted, "reason": reason, "challenger_version": version, "champion_version": champion}


def _score(date, cfg, state) -> dict:
    from ..scoring import score_dataset

    champion = load_alias("champion")
    out = Path(cfg.work) / "scores"
    report = score_dataset(champion, Path(cfg.work) / "snapshot", out, date, top_k=cfg.top_k, progress=cfg.progress)
    return {"path": report.outputs["recommendations"], "users": report.users,
            "users_per_second": round(report.users_per_second, 1)}


def _cohort(date, cfg, state) -> dict:
    """Serve the night's new users from their first day's events, and measure the previous
    night's cohort on its users' events of this night (see :mod:`.cohorts`)."""
    work, landing = Path(cfg.work), Path(cfg.landing)
    champion = load_alias("champion")
    users = pd.read_parquet(landing / S.USERS_FILE) if (landing / S.USERS_FILE).exists() else None
    out = {"cohort_users": 0}
    if (cohorts.cohort_dir(work, date) / "events.parquet").exists():
        out["cohort_users"] = cohorts.serve(work, date, champion, state.done["gate"]["champion_version"], users)
    earlier = [d for d in landing_dates(landing) if d < date]
    files = state.done["validate"]["valid_files"]
    if earlier and files:
        row = cohorts.measure(work, earlier[-1], pd.concat([pd.read_parquet(f) for f in files], ignore_index=True),
                              lambda version: load_model(f"models:/{tracking.REGISTERED_MODEL}/{version}"),
                              champion.implicit_, user_features=users)
        if row is not None:
            table = cohorts.append_history(work, row)
            tracking.log_table(table, "cohorts.json")
            out.update({f"cohort_{k}": v for k, v in row.items() if k not in ("cohort_date", "served_by", "users")})
            out["cohort_users_measured"] = row["users"]
            out["cohort_measured"] = row["cohort_date"]
    return out


def _cold_start_eval(date, cfg, state) -> dict:
    """The cold-start protocol on the night's own split: the champion just decided on is measured
    as it is (it never trained on the cold-test users), the baselines are fitted on the same
    training users; no second hypernetwork is trained."""
    from ..evaluation.protocol import Split

    ds = load_dataset(Path(cfg.work) / "snapshot")
    out = Path(cfg.work) / "evaluation" / f"date={date}"
    labels = _load_split(state)
    test = labels.index[labels == "test"]
    unsampled = np.setdiff1d(test, _sample(test, cfg.max_eval_users))
    if len(unsampled):              # test users beyond the cap: neither evaluated nor learned from
        labels = labels.drop(unsampled)
        ds = Dataset(ds.interactions[~ds.interactions[S.USER_ID].isin(unsampled)].reset_index(drop=True), ds.users,
                     ds.items, implicit=ds.implicit, source=ds.source)
    split = Split(labels.rename("split").reset_index())
    result, run_id = run_cold_start_evaluation(
        ds, out, Protocol(shots=tuple(cfg.eval_shots), min_query=5), methods=cfg.eval_methods,
        model_config=cfg.model_config, track=True, experiment=cfg.experiment, progress=cfg.progress,
        tags={"date": date, "champion_version": str(state.done["gate"]["champion_version"])}, nested=True,
        split=split, fitted={"hyper": load_alias("champion")})
    hyper = result.table[result.table["method"] == "hyper"]
    return {"path": str(out), "run_id": run_id, "evaluated_users": result.n_eligible,
            "hyper_mae_mean": float(hyper["mae"].mean()), "hyper_ndcg10_mean": float(hyper["ndcg@10"].mean())}
