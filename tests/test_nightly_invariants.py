"""The nightly's invariants (DESIGN.md), each tried with an ordinary night that used to break it:
a growing catalogue, a quarantined file fixed and put back, files in sub-folders and uploads still
in flight, two work folders on one store, dates that are not dates, a night run out of order,
events delivered twice, a night resumed from another working directory, one inf in a feature."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_hyper import Config, ModelConfig, TrainConfig
from recsys_hyper.cli import main
from recsys_hyper.errors import DataValidationError, RecsysHyperError
from recsys_hyper.jobs.nightly import NightlyConfig, OutOfOrderError, run_nightly

FAST = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16), train=TrainConfig(epochs=2, k_max=5, patience=2))
#: FAST without the closed-form searches (a third of a small night's time): for the tests of what the
#: data steps do; the searches run in the nights of the tests about models (vocabularies, the gate)
#: here and in test_nightly.py
LEAN = FAST.replace(calibrate=False, mf_special_case=False, item_item_weights=(0.0,))
DATES = ["2026-11-21", "2026-11-22"]


def _cfg(landing: Path, work: Path, **kw) -> NightlyConfig:
    return NightlyConfig(landing=landing, work=work, model_config=kw.pop("model_config", LEAN),
                         eval_methods=("popularity", "hyper"), eval_shots=(0, 1, 3), gate_shots=(0, 1, 3),
                         top_k=10, progress=False, **kw)


def _night_files(landing: Path, date: str) -> list[Path]:
    return sorted((landing / "events" / f"date={date}").rglob("*.parquet"))


def _events(landing: Path, date: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in _night_files(landing, date)], ignore_index=True)


def _snapshot(work: Path) -> pd.DataFrame:
    from recsys_hyper.data import load_dataset

    return load_dataset(work / "snapshot").interactions


def _versions(name: str = "recsys-hyper") -> list:
    try:
        return mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    except Exception:
        return []


# -- every step works whatever the champion's and the challenger's vocabularies are


def test_a_growing_catalogue_never_stops_a_night(landing, tmp_path, monkeypatch):
    """Night 1 knows items <= 100 only; night 2 brings the whole catalogue and the gate keeps the
    night-1 champion: scoring, the cohorts and the cold-start evaluation all run with a champion
    that does not know the new items (they used to die with an IndexError, night after night)."""
    monkeypatch.chdir(tmp_path)
    items = pd.read_parquet(landing / "items.parquet")
    for f in _night_files(landing, DATES[0]):
        frame = pd.read_parquet(f)
        frame[frame["item_id"] <= 100].to_parquet(f, index=False)
    items[items["item_id"] <= 100].to_parquet(landing / "items.parquet", index=False)
    work = tmp_path / "work"
    run_nightly(DATES[0], _cfg(landing, work, model_config=FAST))          # with the searches: MF's item vectors
    items.to_parquet(landing / "items.parquet", index=False)
    assert _events(landing, DATES[1])["item_id"].max() > 100
    # a tolerance no challenger meets: the champion of night 1 stays
    report = run_nightly(DATES[1], _cfg(landing, work, tolerance_mae=-10.0, model_config=FAST))
    assert report.promoted is False and report.champion_version == "1"
    assert report.steps_run[-3:] == ["score", "cohort", "cold_start_eval"]
    results = json.loads((Path(report.evaluation) / "results.json").read_text(),
                         parse_constant=lambda token: pytest.fail(f"results.json holds {token}"))
    assert results and (work / "scores" / "recommendations" / f"date={DATES[1]}").is_dir()
    assert run_nightly(DATES[1], _cfg(landing, work, tolerance_mae=-10.0, model_config=FAST)).steps_run == []


# -- a night reads exactly its date's files; a night is done for the files it saw


def test_a_quarantined_file_fixed_and_put_back_is_merged_by_running_the_night_again(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    part = landing / "events" / f"date={DATES[0]}"
    extra = pd.read_parquet(_night_files(landing, DATES[1])[0]).head(60)          # events of other users' later days
    extra.assign(user_id=extra["user_id"].astype(str)).to_parquet(part / "late.parquet", index=False)
    first = run_nightly(DATES[0], _cfg(landing, work))
    assert [q["file"] for q in first.quarantined] == ["late.parquet"]
    reason = (work / "quarantine" / f"date={DATES[0]}" / "late.parquet.reason.txt").read_text()
    assert "move it back to" in reason and str(part / "late.parquet") in reason
    before = len(_snapshot(work))
    # the fix its reason file asks for: re-export in the snapshot's schema, move it back, run the night again
    fixed = pd.read_parquet(work / "quarantine" / f"date={DATES[0]}" / "late.parquet")
    (work / "quarantine" / f"date={DATES[0]}" / "late.parquet").unlink()
    fixed.assign(user_id=fixed["user_id"].astype("int64")).to_parquet(part / "late.parquet", index=False)
    again = run_nightly(DATES[0], _cfg(landing, work))
    assert again.rerun_for == ["late.parquet"] and again.quarantined == []
    assert again.steps_run[0] == "validate" and len(again.steps_run) == 9
    snap = _snapshot(work)
    key = ["user_id", "item_id", "timestamp"]
    assert len(snap.merge(extra[key], on=key)) == len(extra) and len(snap) > before
    assert again.champion_version == "2"                           # a new model of the new data, a new version
    assert run_nightly(DATES[0], _cfg(landing, work)).steps_run == []      # nothing unseen: done


def test_a_rating_off_the_snapshots_scale_is_quarantined_and_merged_only_when_allowed(landing, tmp_path, monkeypatch):
    from recsys_hyper.jobs import snapshot

    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    run_nightly(DATES[0], _cfg(landing, work))
    scale = snapshot.rating_range(work / "snapshot")
    assert scale == (1.0, 5.0)
    target = _night_files(landing, DATES[1])[0]
    typo = pd.read_parquet(target)
    typo.loc[3, "rating"] = 1e30                                   # finite, and a float32 holds it
    typo.to_parquet(target, index=False)
    night = run_nightly(DATES[1], _cfg(landing, work))             # used to merge it, then fail every night
    assert [q["file"] for q in night.quarantined] == [target.name]
    reason = night.quarantined[0]["reason"]
    assert "column 'rating': has 1 ratings of" in reason and "[1, 5]" in reason and "e.g. 1e+30" in reason
    assert "--allow-rating-mismatch" in reason
    assert snapshot.rating_range(work / "snapshot") == scale and night.champion_version is not None
    # the scale really changed (a 10-point scale from now on): put back, allowed, merged; the night's
    # steps serve the new ratings even with the champion of the old scale kept (the gate refuses)
    moved = work / "quarantine" / f"date={DATES[1]}" / target.name
    fixed = pd.read_parquet(moved).assign(rating=lambda d: d["rating"].clip(upper=10.0))
    moved.unlink()
    fixed.to_parquet(target, index=False)
    kept = _cfg(landing, work, allow_rating_mismatch=True, tolerance_mae=-100.0, tolerance_ndcg=-100.0)
    again = run_nightly(DATES[1], kept)
    assert again.rerun_for == [target.name] and again.quarantined == [] and again.promoted is False
    assert snapshot.rating_range(work / "snapshot") == (1.0, 10.0)
    assert again.steps_run[-3:] == ["score", "cohort", "cold_start_eval"]


def test_on_the_first_night_the_side_tables_decide_the_id_types_not_the_most_events(landing, tmp_path, monkeypatch):
    from recsys_hyper.jobs import nightly
    from recsys_hyper.jobs.state import NightState, work_identity

    monkeypatch.chdir(tmp_path)
    biggest = max(_night_files(landing, DATES[0]), key=lambda f: len(pd.read_parquet(f)))
    export = pd.read_parquet(biggest)
    export.assign(user_id=export["user_id"].astype(str)).to_parquet(biggest, index=False)   # users.parquet: int64
    cfg = _cfg(landing, tmp_path / "work")
    state = NightState.load(cfg.work, DATES[0])
    for step in ("validate", "merge"):                 # the merge used to stop: users.parquet's ids are int64
        state.complete(step, **getattr(nightly, f"_{step}")(DATES[0], cfg, state, work_identity(cfg.work)))
    assert [q["file"] for q in state.done["validate"]["quarantined"]] == [biggest.name]
    assert "has string ids but the snapshot has int64" in state.done["validate"]["quarantined"][0]["reason"]
    assert pd.api.types.is_integer_dtype(_snapshot(cfg.work)["user_id"])


def test_a_link_to_a_file_that_is_gone_is_quarantined_with_what_it_pointed_to(landing, tmp_path, monkeypatch):
    from recsys_hyper.jobs import nightly
    from recsys_hyper.jobs.state import NightState, work_identity

    monkeypatch.chdir(tmp_path)
    part = landing / "events" / f"date={DATES[0]}"
    (part / "staged.parquet").symlink_to(tmp_path / "exports" / "gone.parquet")     # used to be skipped unseen
    cfg = _cfg(landing, tmp_path / "work")
    state = NightState.load(cfg.work, DATES[0])
    for step in ("validate", "merge"):
        state.complete(step, **getattr(nightly, f"_{step}")(DATES[0], cfg, state, work_identity(cfg.work)))
    (quarantined,) = state.done["validate"]["quarantined"]
    assert quarantined["file"] == "staged.parquet"
    assert f"is a link to {tmp_path / 'exports' / 'gone.parquet'}, which does not exist" in quarantined["reason"]
    moved = cfg.work / "quarantine" / f"date={DATES[0]}" / "staged.parquet"
    assert moved.is_symlink() and not (part / "staged.parquet").is_symlink()
    assert state.done["validate"]["n_valid"] == len(_night_files(landing, DATES[0]))
    # one more appears after the night: a file it has not seen, so the night runs again (and quarantines it)
    from recsys_hyper.jobs.landing import landing_files

    (part / "late.parquet").symlink_to(tmp_path / "exports" / "late.parquet")
    assert state.unseen(landing_files(landing, DATES[0])[0], part) == ["late.parquet"]


def test_a_night_reads_its_sub_folders_and_leaves_uploads_in_flight_for_later(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    part = landing / "events" / f"date={DATES[0]}"
    later = _events(landing, DATES[1])
    hourly, uploading = later.iloc[:80], later.iloc[80:160]
    (part / "hour=01").mkdir()
    hourly.to_parquet(part / "hour=01" / "part-0.parquet", index=False)
    uploading.to_parquet(part / ".upload-tmp.parquet", index=False)
    uploading.to_parquet(part / "part-5.parquet.tmp", index=False)
    report = run_nightly(DATES[0], _cfg(landing, work))
    assert report.quarantined == []                                  # in-flight files are not bad files
    assert (part / ".upload-tmp.parquet").exists() and (part / "part-5.parquet.tmp").exists()
    key = ["user_id", "item_id", "timestamp"]
    snap = _snapshot(work)
    assert len(snap.merge(hourly[key], on=key)) == len(hourly)       # the sub-folder was read
    assert snap.merge(uploading[key], on=key).empty                  # the uploads were not (yet)
    (part / "part-5.parquet.tmp").rename(part / "part-5.parquet")     # the upload completes
    again = run_nightly(DATES[0], _cfg(landing, work))
    assert again.rerun_for == ["part-5.parquet"]
    assert len(_snapshot(work).merge(uploading[key], on=key)) == len(uploading)


def test_dates_that_are_not_calendar_dates_are_never_read(landing, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    for name in ("date=latest", "date=2026-13-45"):
        shutil.copytree(landing / "events" / f"date={DATES[0]}", landing / "events" / name)
    shutil.rmtree(landing / "events" / f"date={DATES[1]}")
    (tmp_path / "c.toml").write_text("[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 1\nk_max = 5\n")
    base = ["pipeline", "nightly", "--landing", str(landing), "--work", str(tmp_path / "work"), "--config",
            str(tmp_path / "c.toml"), "--no-progress"]
    assert main(base + ["--date", "latest"]) == 2
    assert "is not a calendar date written YYYY-MM-DD" in capsys.readouterr().err
    assert main(base + ["--date", "2026-13-45"]) == 2
    assert main(base + ["--all"]) == 0
    out = capsys.readouterr().out
    assert f"night {DATES[0]}: ran" in out and "latest" not in out and "2026-13-45" not in out
    assert "date=latest: not a date partition" in caplog.text
    assert sorted(p.name for p in (tmp_path / "work" / "state").iterdir()) == [f"date={DATES[0]}.json"]


def test_a_night_older_than_one_merged_is_refused_unless_forced(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    newer = run_nightly(DATES[1], _cfg(landing, work))
    with pytest.raises(OutOfOrderError, match=f"night {DATES[0]} is older than night\\(s\\) already merged"):
        run_nightly(DATES[0], _cfg(landing, work))
    assert not (work / "state" / f"date={DATES[0]}.json").exists()
    assert str(mlflow.MlflowClient().get_model_version_by_alias("recsys-hyper", "champion").version) == \
        newer.champion_version
    forced = run_nightly(DATES[0], _cfg(landing, work, allow_out_of_order=True))
    assert len(forced.steps_run) == 9


# -- an event already in the snapshot is not counted again


def test_events_delivered_again_are_not_counted_again(landing, tmp_path, monkeypatch):
    """Yesterday's file re-delivered in today's folder: the snapshot's counts and the cohort's
    returning users and metrics are those of the events that are really new."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    run_nightly(DATES[0], _cfg(landing, work))
    day0, day1 = _events(landing, DATES[0]), _events(landing, DATES[1])
    resent = _night_files(landing, DATES[0])[0]
    shutil.copy(resent, landing / "events" / f"date={DATES[1]}" / "resent.parquet")
    report = run_nightly(DATES[1], _cfg(landing, work))
    merge = json.loads((work / "state" / f"date={DATES[1]}.json").read_text())["done"]["merge"]
    assert merge["night_events"] == len(day1) and merge["repeated_events"] == len(pd.read_parquet(resent))
    assert merge["interactions"] == len(day0) + len(day1) == len(_snapshot(work))
    assert f"{len(pd.read_parquet(resent)):,} events already in the snapshot" in report.summary(work)
    cohort = pd.read_parquet(work / "cohorts" / f"date={DATES[0]}" / "events.parquet")
    assert report.cohort["cohort_returning"] == day1[day1["user_id"].isin(cohort["user_id"])]["user_id"].nunique()
    assert report.cohort["cohort_returning"] < cohort["user_id"].nunique()


# -- a registered version belongs to its work folder; state paths are absolute


def test_two_work_folders_on_one_store_never_take_each_others_models(landing_src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_land = Path(shutil.copytree(landing_src, tmp_path / "a"))
    b_land = Path(shutil.copytree(landing_src, tmp_path / "b"))
    a = run_nightly(DATES[0], _cfg(a_land, tmp_path / "work-a"))
    assert a.champion_version == "1"
    with pytest.raises(RecsysHyperError, match="registered by the nightly of another work folder .*--registered-model"):
        run_nightly(DATES[0], _cfg(b_land, tmp_path / "work-b"))
    assert [str(v.version) for v in _versions()] == ["1"]                      # nothing of B's under A's name
    b = run_nightly(DATES[0], _cfg(b_land, tmp_path / "work-b", registered_model="recsys-hyper-b"))
    assert b.champion_version == "1" and b.registered_model == "recsys-hyper-b"
    (va,), (vb,) = _versions(), _versions("recsys-hyper-b")
    assert va.tags["work_dir"] == str(tmp_path / "work-a") and vb.tags["work_dir"] == str(tmp_path / "work-b")
    assert va.tags["work_id"] != vb.tags["work_id"] and va.tags["night"] == vb.tags["night"] == DATES[0]


def test_a_version_deleted_from_the_registry_between_nights_never_stops_the_next(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_nightly(DATES[0], _cfg(landing, tmp_path / "work"))
    assert first.champion_version == "1" and first.cohort["cohort_users"] > 0
    mlflow.MlflowClient().delete_model_version("recsys-hyper", "1")      # a person tidies the registry up
    night = run_nightly(DATES[1], _cfg(landing, tmp_path / "work", tolerance_mae=10.0, tolerance_ndcg=10.0))
    assert night.steps_run[-3:] == ["score", "cohort", "cold_start_eval"] and night.champion_version == "2"
    assert "champion_validation_mae" in night.metrics       # gated against the recorded champion's files, never bypassed
    history = pd.read_parquet(tmp_path / "work" / "cohorts" / "history.parquet")
    measured = history[history["cohort_date"] == DATES[0]].iloc[0]
    assert measured["served_by"] == "1" and measured["returning"] > 0
    assert np.isnan(measured["mae"]) and 0 < measured["coverage"] <= 1      # the rest of the cohort's figures stay
    assert _non_finite_floats(tmp_path / "work") == []      # an unmeasured figure is stored as null, never as NaN


def _non_finite_floats(work: Path) -> list[str]:
    """Every float column of the work folder's Parquet outputs (the quarantine holds inputs as
    sent) that holds a NaN or an infinity."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found = []
    for f in sorted(work.rglob("*.parquet")):
        if "quarantine" in f.parts:
            continue
        table = pq.read_table(f)
        for name, col in zip(table.column_names, table.columns):
            if pa.types.is_floating(col.type) and pc.any(pc.invert(pc.is_finite(col))).as_py():
                found.append(f"{f.relative_to(work)}:{name}")
    return found


def test_a_killed_night_resumes_from_another_working_directory(landing, tmp_path, monkeypatch):
    from recsys_hyper.jobs import nightly
    from recsys_hyper.jobs.state import NightState, work_identity

    first_cwd = tmp_path / "here"
    first_cwd.mkdir()
    shutil.move(str(landing), first_cwd / "landing")
    monkeypatch.chdir(first_cwd)
    cfg = _cfg(Path("landing"), Path("work"))                          # relative paths, as a user types them
    state = NightState.load(cfg.work, DATES[0])
    for step in ("validate", "merge", "split"):                        # the night is killed after its split
        state.complete(step, **getattr(nightly, f"_{step}")(DATES[0], cfg, state, work_identity(cfg.work)))
    saved = json.loads((first_cwd / "work" / "state" / f"date={DATES[0]}.json").read_text())["done"]
    assert all(Path(f).is_absolute() for f in saved["validate"]["valid_files"])
    assert Path(saved["split"]["path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = run_nightly(DATES[0], _cfg(first_cwd / "landing", first_cwd / "work"))
    assert report.steps_run == ["train", "evaluate", "gate", "score", "cohort", "cold_start_eval"]


# -- nothing non-finite is trained on, registered, promoted or served


def test_one_inf_in_a_user_feature_stops_the_night_before_anything_is_trained(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    users = pd.read_parquet(landing / "users.parquet")
    users["age"] = users["age"].astype("float64")
    users.loc[5, "age"] = np.inf
    users.to_parquet(landing / "users.parquet", index=False)
    with pytest.raises(DataValidationError, match="users.parquet: column 'age': has 1 infinite values"):
        run_nightly(DATES[0], _cfg(landing, tmp_path / "work"))
    done = json.loads((tmp_path / "work" / "state" / f"date={DATES[0]}.json").read_text())["done"]
    assert "merge" not in done and "train" not in done and _versions() == []


def test_a_steps_figure_that_could_not_be_measured_never_stops_the_night():
    from recsys_hyper import tracking

    # a cohort whose returning users rated nothing relevant has no recall: NaN, under an '@' name
    outputs = {"cohort_recall@10": float("nan"), "cohort_mae": float("inf"), "cohort_users": 12,
               "cohort_measured": "2026-11-21", "served_by@night": "3"}
    mlflow.set_experiment("steps")
    with mlflow.start_run() as run:
        tracking.log_step(outputs)
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.metrics == {"cohort_users": 12.0}
    assert logged.params == {"cohort_measured": "2026-11-21", "served_by_at_night": "3"}


def test_the_gate_never_promotes_on_a_missing_or_non_finite_figure():
    from recsys_hyper.jobs.nightly import gate_decision

    champion = {"champion_validation_mae": 0.8, "champion_validation_ndcg@10": 0.3}
    for bad in (float("nan"), float("inf"), None):
        e = {**champion, "challenger_validation_mae": bad, "challenger_validation_ndcg@10": 0.5}
        promoted, reason = gate_decision(e, 0.005, 0.005)
        assert not promoted and "missing or not finite" in reason
        e = {**champion, "challenger_validation_mae": 0.7, "challenger_validation_ndcg@10": bad}
        assert not gate_decision(e, 0.005, 0.005)[0]
    # a champion whose figures are not finite is replaced by a challenger whose figures are
    e = {"champion_validation_mae": float("nan"), "champion_validation_ndcg@10": 0.3,
         "challenger_validation_mae": 0.9, "challenger_validation_ndcg@10": 0.1}
    assert gate_decision(e, 0.005, 0.005)[0]


def test_a_damaged_state_is_kept_aside_and_a_lock_its_writer_never_finished_is_taken_over(tmp_path, caplog):
    from recsys_hyper.jobs.state import NightState, RunLock

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / f"date={DATES[0]}.json").write_text("{not json")
    assert NightState.load(tmp_path, DATES[0]).done == {}            # the night runs from its first step
    assert (tmp_path / "state" / f"date={DATES[0]}.json.damaged").read_text() == "{not json"
    assert "the night's state is damaged" in caplog.text
    lock = tmp_path / "nightly.lock"
    lock.write_text("")                              # its writer died between creating the file and writing it
    with RunLock(lock):                              # nobody holds it: taken at once
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_the_spark_engine_without_pyspark_stops_before_any_work(landing, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyspark" else real(name, *a))
    cfg = _cfg(landing, tmp_path / "work", engine="spark")
    with pytest.raises(RecsysHyperError, match=r"recsys-hyper\[spark\]"):
        run_nightly(DATES[0], cfg)
    assert not (tmp_path / "work" / "state").exists()           # nothing started, nothing to resume
