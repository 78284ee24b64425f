"""A night's files as one table, every timestamp form the contract admits read the same way by
every step, nights that recover without a person editing their state, and the gate that is never
bypassed: each case that used to lose data or stick a night, then cases generated beyond them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_hyper.cli import main
from recsys_hyper.jobs import nightly
from recsys_hyper.jobs.nightly import NightlyConfig, run_nightly
from recsys_hyper.jobs.state import NightState, work_identity

from tests.test_nightly_invariants import DATES, _cfg                 # the same nights, on a smaller landing

SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None)
BIG = 2**60                                   # ids beyond 2^53: a float64 cannot hold each of them


def _files(landing: Path, date: str) -> list[Path]:
    return sorted((landing / "events" / f"date={date}").rglob("*.parquet"))


def _data_steps(cfg: NightlyConfig, date: str, steps=("validate", "merge")) -> NightState:
    """The night's data steps alone (nothing is trained)."""
    state = NightState.load(cfg.work, date)
    for step in steps:
        state.complete(step, **getattr(nightly, f"_{step}")(date, cfg, state, work_identity(cfg.work)))
    return state


def _snapshot_events(work: Path) -> pd.DataFrame:
    from recsys_hyper.data import load_dataset

    return load_dataset(work / "snapshot").interactions


# -- 1. a night's files are one table


def test_whole_number_float_ids_never_merge_users_of_another_file(landing, tmp_path, monkeypatch):
    """Used to be: one file's int64 ids beyond 2^53 and another's whole-number float ids were
    combined by pd.concat as float64: 62 users became 2, 1,419 of 1,619 events dropped as duplicates."""
    monkeypatch.chdir(tmp_path)
    a, b = _files(landing, DATES[0])
    ints, floats = pd.read_parquet(a), pd.read_parquet(b)
    ints.assign(user_id=ints["user_id"].astype("int64") + BIG).to_parquet(a, index=False)
    floats.assign(user_id=(floats["user_id"] + BIG).astype("float64")).to_parquet(b, index=False)
    (landing / "users.parquet").unlink()
    cfg = _cfg(landing, tmp_path / "work")
    state = _data_steps(cfg, DATES[0])
    (quarantined,) = state.done["validate"]["quarantined"]
    assert quarantined["file"] == b.name and "beyond 2^53" in quarantined["reason"]
    merged = _snapshot_events(cfg.work)
    assert merged["user_id"].dtype == np.int64
    assert merged["user_id"].nunique() == ints["user_id"].nunique()             # every user of the int64 file
    assert len(merged) == len(ints.drop_duplicates(["user_id", "item_id"]))


def test_exact_float_and_narrow_integer_ids_are_converted_and_reported(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = _files(landing, DATES[0])
    ints, floats = pd.read_parquet(a), pd.read_parquet(b)
    ints.assign(user_id=ints["user_id"].astype("int32")).to_parquet(a, index=False)
    floats.assign(user_id=floats["user_id"].astype("float64")).to_parquet(b, index=False)
    cfg = _cfg(landing, tmp_path / "work")
    state = _data_steps(cfg, DATES[0])
    assert state.done["validate"]["quarantined"] == []
    assert any(b.name in line and "converted exactly to int64" in line for line in state.done["validate"]["converted"])
    merged = _snapshot_events(cfg.work)
    both = pd.concat([ints, floats.assign(user_id=floats["user_id"].astype("int64"))])
    assert set(merged["user_id"]) == set(both["user_id"])
    assert len(merged) == len(both.drop_duplicates(["user_id", "item_id"]))


def test_validate_refuses_float_ids_it_cannot_convert_exactly(tmp_path, capsys):
    rows = 6
    pq.write_table(pa.table({"user_id": pa.array([2.0**64 + 2.0**12 * i for i in range(rows)]),
                             "item_id": pa.array(range(rows), pa.int64()),
                             "rating": pa.array([4.0] * rows), "timestamp": pa.array([1_700_000_000] * rows)}),
                   (tmp_path / "ds").mkdir() or tmp_path / "ds" / "interactions.parquet")
    code = main(["data", "validate", str(tmp_path / "ds"), "--out", str(tmp_path / "clean")])
    err = capsys.readouterr().err
    assert code == 2 and "user_id" in err and "beyond 2^53" in err and "6 ids" in err
    assert not (tmp_path / "clean").exists()
    narrow = pq.read_table(tmp_path / "ds" / "interactions.parquet")             # a float32 holds fewer: 2^24
    ids = pa.array([2.0**24 + 2 * i for i in range(rows)], pa.float32())
    pq.write_table(narrow.set_column(0, "user_id", ids), tmp_path / "ds" / "interactions.parquet")
    code = main(["data", "validate", str(tmp_path / "ds"), "--out", str(tmp_path / "clean")])
    assert code == 2 and "beyond 2^24" in capsys.readouterr().err


# -- 2. every timestamp form the contract admits, normalised once


def _timestamp_forms(events: pd.DataFrame) -> dict[str, pa.Array]:
    """The same instants in every form the contract admits."""
    t = events["timestamp"].to_numpy()
    utc = pd.to_datetime(t, unit="s", utc=True)
    la = utc.tz_convert("America/Los_Angeles")
    return {
        "seconds": pa.array(t, pa.int64()),
        "milliseconds_typed": pa.array(utc, pa.timestamp("ms", tz="UTC")),
        "zoned": pa.array(la, pa.timestamp("us", tz="America/Los_Angeles")),
        "naive": pa.array(utc.tz_localize(None), pa.timestamp("ns")),
        "iso_offset": pa.array([x.isoformat() for x in la]),
        "iso_z": pa.array([x.strftime("%Y-%m-%dT%H:%M:%SZ") for x in utc]),
    }


def test_every_timestamp_form_passes_the_whole_night(landing, tmp_path, monkeypatch):
    """Used to be: a zoned timestamp type or ISO strings with an offset passed validate, then the
    merge died with ArrowInvalid (rc 1), on every re-run."""
    monkeypatch.chdir(tmp_path)
    part = landing / "events" / f"date={DATES[1]}"
    events = pd.concat([pd.read_parquet(f) for f in _files(landing, DATES[1])], ignore_index=True)
    for f in _files(landing, DATES[1]):
        f.unlink()
    forms = list(_timestamp_forms(events))
    chunks = np.array_split(np.arange(len(events)), len(forms))
    for form, rows in zip(forms, chunks):
        chunk = events.iloc[rows]
        table = pa.Table.from_pandas(chunk.drop(columns="timestamp"), preserve_index=False)
        pq.write_table(table.append_column("timestamp", _timestamp_forms(chunk)[form]), part / f"{form}.parquet")
    cfg = _cfg(landing, tmp_path / "work")
    assert run_nightly(DATES[0], cfg).champion_version is not None
    second = run_nightly(DATES[1], cfg)
    assert second.quarantined == [] and second.steps_run[-1] == "cold_start_eval"
    tonight = pd.read_parquet(cfg.work / "snapshot" / "interactions.parquet" / f"date={DATES[1]}" / "part-0.parquet")
    expected = events.set_index(["user_id", "item_id"])["timestamp"]
    got = tonight.set_index(["user_id", "item_id"])["timestamp"]
    assert len(got) > 0 and (got == expected.reindex(got.index)).all()          # UTC epoch seconds, each form
    assert pd.read_parquet(second.recommendations)["score"].notna().all()


def test_a_folder_dataset_of_parts_in_different_time_forms_reads_as_one(tmp_path):
    from recsys_hyper.data import load_dataset

    events = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], "rating": [4.0, 3.0, 5.0, 2.0],
                           "timestamp": [1_700_000_000, 1_700_000_100, 1_700_000_200, 1_700_000_300]})
    folder = tmp_path / "ds" / "interactions.parquet"
    folder.mkdir(parents=True)
    forms = _timestamp_forms(events)
    for i, form in enumerate(("zoned", "naive")):
        rows = events.iloc[2 * i: 2 * i + 2]
        table = pa.Table.from_pandas(rows.drop(columns="timestamp"), preserve_index=False)
        pq.write_table(table.append_column("timestamp", forms[form][2 * i: 2 * i + 2]), folder / f"part-{i}.parquet")
    got = load_dataset(tmp_path / "ds").interactions
    assert got["timestamp"].tolist() == events["timestamp"].tolist()


# -- generated: any set of files that each pass validation merges with every row and id, or is quarantined


def _ids_of(draw, n: int, pool: int):
    kind = draw(st.sampled_from(["int64", "int32", "exact_float", "big_int", "big_float", "string"]))
    values = [draw(st.integers(0, pool)) for _ in range(n)]
    if kind == "int64":
        return kind, pa.array(values, pa.int64()), values
    if kind == "int32":
        return kind, pa.array(values, pa.int32()), values
    if kind == "exact_float":
        return kind, pa.array([float(v) for v in values], pa.float64()), values
    if kind == "big_int":
        return kind, pa.array([BIG + v for v in values], pa.int64()), [BIG + v for v in values]
    if kind == "big_float":
        return kind, pa.array([float(BIG + v) for v in values], pa.float64()), None      # cannot be exact
    return kind, pa.array([f"u{v}" for v in values]), [f"u{v}" for v in values]


@st.composite
def nights(draw):
    """1-4 landing files of one night, each valid on its own, in every id and time form."""
    files = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 25))
        kind, users, expected = _ids_of(draw, n, pool=draw(st.integers(1, 15)))
        items = [draw(st.integers(0, 9)) for _ in range(n)]
        base = pd.DataFrame({"user_id": range(n), "item_id": items,
                             "timestamp": [1_700_000_000 + draw(st.integers(0, 10**6)) for _ in range(n)]})
        form = draw(st.sampled_from(list(_timestamp_forms(base.head(1)))))
        table = pa.table({"user_id": users, "item_id": pa.array(items, pa.int64()),
                          "rating": pa.array([float(draw(st.integers(1, 5))) for _ in range(n)]),
                          "timestamp": _timestamp_forms(base)[form]})
        files.append((kind, table, expected, base["timestamp"].tolist()))
    return files


@settings(max_examples=40, **SETTINGS)
@given(nights())
def test_a_nights_files_merge_with_every_row_and_id_or_are_quarantined(files):
    """Whatever files each pass validation (ids in every kind, times in every form) are merged
    with every row and distinct id, and split, or the offending files are quarantined; the whole
    night (train, score) on every time form is `test_every_timestamp_form_passes_the_whole_night`."""
    with tempfile.TemporaryDirectory() as tmp:
        landing, work = Path(tmp) / "landing", Path(tmp) / "work"
        part = landing / "events" / f"date={DATES[0]}"
        part.mkdir(parents=True)
        for n, (_, table, _, _) in enumerate(files):
            pq.write_table(table, part / f"part-{n}.parquet")
        cfg = _cfg(landing, work)
        state = _data_steps(cfg, DATES[0], steps=("validate",))
        quarantined = {q["file"] for q in state.done["validate"]["quarantined"]}
        accepted = [f for n, f in enumerate(files) if f"part-{n}.parquet" not in quarantined]
        for n, (kind, _, _, _) in enumerate(files):
            if kind == "big_float":                             # lossy: always quarantined, with the reason
                assert f"part-{n}.parquet" in quarantined
        if not accepted:
            return
        state.complete("merge", **nightly._merge(DATES[0], cfg, state, work_identity(work)))
        kinds = {"string" if k == "string" else "int" for k, _, _, _ in accepted}
        assert len(kinds) == 1                                  # files of another kind were quarantined
        expected = pd.concat([pd.DataFrame({"user_id": ids, "item_id": t.column("item_id").to_pylist(),
                                            "timestamp": times})
                              for _, t, ids, times in accepted], ignore_index=True)
        merged = _snapshot_events(work)
        assert set(merged["user_id"].tolist()) == set(expected["user_id"].tolist())    # every distinct id
        assert len(merged) == len(expected.drop_duplicates(["user_id", "item_id"]))      # every (user, item)
        latest = expected.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
        got = merged.set_index(["user_id", "item_id"])["timestamp"].sort_index()
        assert got.tolist() == latest.set_index(["user_id", "item_id"])["timestamp"].sort_index().tolist()
        state.complete("split", **nightly._split(DATES[0], cfg, state, work_identity(work)))     # and the next step
        split = pd.read_parquet(state.done["split"]["path"])
        assert set(split["user_id"].tolist()) == set(merged["user_id"].tolist())


# -- 3. a night recovers without a person editing its state


def test_a_file_moved_away_after_a_crash_is_a_change_and_the_night_runs_again(landing, tmp_path, monkeypatch, capsys):
    """Used to be: after a crash in the merge, moving the offending file away (the obvious fix) left
    the night failing forever with `error: <path of the file that is gone>`."""
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(landing, tmp_path / "work")
    _data_steps(cfg, DATES[0], steps=("validate",))                    # the crash: validated, never merged
    first, second = _files(landing, DATES[0])
    shutil.move(str(second), tmp_path / "aside.parquet")
    report = run_nightly(DATES[0], cfg)
    assert report.gone == [second.name] and report.steps_run[0] == "validate"
    assert "ran again without 1 landing file(s) it had read that are gone" in report.summary(cfg.work)
    assert len(_snapshot_events(cfg.work)) == len(pd.read_parquet(first).drop_duplicates(["user_id", "item_id"]))


def test_no_state_a_crash_leaves_can_make_every_later_run_fail(landing, tmp_path, monkeypatch):
    """A crash in every step in turn, each followed by what people and clean-ups do (a step's
    output removed, a landing file moved away, the state file damaged); each next run goes on."""
    from recsys_hyper.jobs.state import STEPS

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(landing, tmp_path / "work")
    damages = {
        "split": lambda: next((cfg.work / "snapshot" / "interactions.parquet").glob("date=*/part-0.parquet")).unlink(),
        "train": lambda: (cfg.work / "splits" / f"date={DATES[0]}.parquet").unlink(),
        "gate": lambda: shutil.rmtree(cfg.work / "models" / f"date={DATES[0]}"),
        "cohort": lambda: (cfg.work / "state" / f"date={DATES[0]}.json").write_text('{"done": {"validate": 1'),
        "cold_start_eval": lambda: shutil.move(str(_files(landing, DATES[0])[-1]), tmp_path / "aside.parquet"),
    }
    for crash in STEPS:
        real = getattr(nightly, f"_{crash}")

        def boom(*a, _step=crash, **kw):
            raise OSError(f"the machine went away during {_step}")
        monkeypatch.setattr(nightly, f"_{crash}", boom)
        with pytest.raises(OSError, match=crash):
            run_nightly(DATES[0], cfg)
        monkeypatch.setattr(nightly, f"_{crash}", real)
        if crash in damages:
            damages[crash]()
    report = run_nightly(DATES[0], cfg)
    assert report.steps_run and report.champion_version is not None
    assert pd.read_parquet(report.recommendations)["score"].notna().all()
    assert len(_snapshot_events(cfg.work)) == len(pd.concat([pd.read_parquet(f) for f in _files(landing, DATES[0])])
                                                  .drop_duplicates(["user_id", "item_id"]))
    assert run_nightly(DATES[0], cfg).steps_run == []                               # and then it stays done


def test_a_nights_error_names_the_next_command(landing, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (landing / "users.parquet").unlink()
    (landing / "users.parquet").symlink_to(landing / "users.parquet")             # a link to itself
    code = main(["pipeline", "nightly", "--date", DATES[0], "--landing", str(landing), "--work",
                 str(tmp_path / "work"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "users.parquet" in err and "cannot be followed" in err
    assert f"recsys-hyper pipeline nightly --date {DATES[0]} --landing {landing}" in err


# -- 4. the gate is never bypassed silently


def test_a_store_that_forgot_the_champion_stops_the_night_until_adopted(landing, tmp_path, monkeypatch, _mlflow_template):
    """Used to be: with the tracking store replaced, the next night said "no champion yet" and
    promoted without a gate, although the work folder had a champion."""
    import mlflow

    from recsys_hyper import tracking
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.jobs.models import model_digest

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(landing, tmp_path / "work")
    first = run_nightly(DATES[0], cfg)
    record = json.loads((cfg.work / "champion.json").read_text())
    assert record["version"] == first.champion_version and record["model_digest"] == model_digest(record["model_dir"])
    with pytest.raises(RecsysHyperError, match="pass --registered-model recsys-hyper to go on with it"):
        run_nightly(DATES[1], dataclasses.replace(cfg, registered_model="renamed-by-mistake"))
    fresh = tmp_path / "fresh.db"                                       # the store lost and replaced
    shutil.copy(_mlflow_template, fresh)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh}")
    mlflow.set_tracking_uri(f"sqlite:///{fresh}")
    with pytest.raises(RecsysHyperError, match=r"records its champion as recsys-hyper version 1 .*--adopt-store"):
        run_nightly(DATES[1], cfg)
    assert not (cfg.work / "state" / f"date={DATES[1]}.json").exists()          # stopped before any work
    assert tracking.alias_version("champion") is None
    # adopted: the challenger gated against the recorded champion's files; a worse one is not promoted
    adopted = dataclasses.replace(cfg, adopt_store=True, tolerance_mae=-10.0)
    second = run_nightly(DATES[1], adopted)
    assert second.promoted is False and "champion_validation_mae" in second.metrics
    champion = tracking.alias_version("champion")
    assert champion == second.champion_version != "adopted"
    assert tracking.version_tags(champion)["model_digest"] == record["model_digest"]   # the recorded model, registered
    assert json.loads((cfg.work / "champion.json").read_text())["version"] == champion


# -- 8. retire an item


def _popular(recs: pd.DataFrame, n: int) -> list:
    return recs["item_id"].value_counts().index[:n].tolist()


def test_retired_and_excluded_items_are_never_recommended(trained, tmp_path, capsys):
    data = Path(shutil.copytree(trained / "ds", tmp_path / "ds"))
    assert main(["score", "--model", str(trained / "model"), "--data", str(data), "--out", str(tmp_path / "before"),
                 "--date", DATES[0], "--no-progress"]) == 0
    before = pd.read_parquet(tmp_path / "before" / "recommendations" / f"date={DATES[0]}")
    retired, excluded = _popular(before, 3), _popular(before, 6)[3:]
    items = pd.read_parquet(data / "items.parquet")
    items.assign(retired=items["item_id"].isin(retired)).to_parquet(data / "items.parquet", index=False)
    (tmp_path / "exclude.txt").write_text("# withdrawn by legal\n" + "\n".join(map(str, excluded)) + "\n")
    assert main(["score", "--model", str(trained / "model"), "--data", str(data), "--out", str(tmp_path / "after"),
                 "--date", DATES[0], "--exclude-items", str(tmp_path / "exclude.txt"), "--no-progress"]) == 0
    after = pd.read_parquet(tmp_path / "after" / "recommendations" / f"date={DATES[0]}")
    assert not after["item_id"].isin(retired + excluded).any()
    assert after.groupby("user_id").size().eq(before.groupby("user_id").size()).all()     # still K per user
    assert main(["recommend", "--model", str(trained / "model"), "--data", str(data), "--top-k", "10", "--out",
                 str(tmp_path / "recs.parquet"), "--exclude-items", str(tmp_path / "exclude.txt")]) == 0
    assert not pd.read_parquet(tmp_path / "recs.parquet")["item_id"].isin(retired + excluded).any()
    assert "6 retired or excluded items left out" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("12\nnot-an-id\n")
    assert main(["recommend", "--model", str(trained / "model"), "--data", str(data), "--top-k", "10", "--out",
                 str(tmp_path / "recs2.parquet"), "--exclude-items", str(tmp_path / "bad.txt")]) == 2
    assert "not integer item ids" in capsys.readouterr().err and not (tmp_path / "recs2.parquet").exists()


def test_an_item_gone_from_the_landing_catalogue_is_not_recommended_from_the_next_night(landing, tmp_path, monkeypatch):
    """Used to be: an item removed from the landing's items.parquet kept being recommended."""
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(landing, tmp_path / "work")
    first = run_nightly(DATES[0], cfg)
    gone = _popular(pd.read_parquet(first.recommendations), 5)
    items = pd.read_parquet(landing / "items.parquet")
    items[~items["item_id"].isin(gone)].to_parquet(landing / "items.parquet", index=False)
    second = run_nightly(DATES[1], cfg)
    recs = pd.read_parquet(second.recommendations)
    assert len(recs) and not recs["item_id"].isin(gone).any()
    state = json.loads((cfg.work / "state" / f"date={DATES[1]}.json").read_text())
    assert state["done"]["score"]["retired_items"] >= len(gone)
    served = cfg.work / "cohorts" / f"date={DATES[1]}" / "recommendations.parquet"
    if served.exists():
        assert not pd.read_parquet(served)["item_id"].isin(gone).any()


# -- 6. work bounded by the input, and said honestly


def test_a_very_wide_side_table_is_read_in_linear_time_and_the_reported_time_is_the_time(trained, tmp_path, capsys,
                                                                                         monkeypatch):
    """Used to be: a users.parquet with 100,000 columns made `recommend` run past 5 minutes (the
    repeated-name check compared every name with every other); 10,000 took 34 s while the command
    reported "in 0.5s"."""
    import re
    import time

    from recsys_hyper.data import validation
    from recsys_hyper.jobs import serve

    data = Path(shutil.copytree(trained / "ds", tmp_path / "ds"))
    users = pd.read_parquet(data / "users.parquet")
    wide = {f"f{j}": np.full(len(users), float(j)) for j in range(5_000)}
    pq.write_table(pa.table({"user_id": users["user_id"].to_numpy(), **wide}), data / "users.parquet")
    calls = []
    real = validation._repeated
    monkeypatch.setattr(validation, "_repeated", lambda names: calls.append(len(names)) or real(names))
    real_load = serve.load_dataset
    monkeypatch.setattr(serve, "load_dataset", lambda *a, **kw: time.sleep(1.5) or real_load(*a, **kw))
    assert main(["recommend", "--model", str(trained / "model"), "--data", str(data), "--top-k", "5", "--out",
                 str(tmp_path / "recs.parquet")]) == 0
    assert calls and max(calls) == 5_001
    seconds = float(re.search(r" in ([0-9.]+)s", capsys.readouterr().out).group(1))
    assert seconds >= 1.5                                    # reading and checking the data is in the time
    names = [f"c{i}" for i in range(300_000)] + ["c7"]
    assert real(names) == ["c7"]                             # a quadratic check would take hours here


# -- 7. forget a user


FORGET = 987_654_321_000                      # ids no other number of the night can contain


def _files_holding(root: Path, ids: list[int]) -> list[str]:
    """Every file under ``root`` that holds one of ``ids``: Parquet files by value (any column),
    every other file by its bytes (the decimal text, and the int64 bytes)."""
    found = []
    texts = [str(i).encode() for i in ids] + [int(i).to_bytes(8, "little") for i in ids]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                column = table.column(name)
                if pa.types.is_integer(column.type) or pa.types.is_string(column.type):
                    values = set(column.to_pylist())
                    if values & set(ids) or values & {str(i) for i in ids}:
                        found.append(f"{path} ({name})")
        elif any(t in path.read_bytes() for t in texts):
            found.append(str(path))
    return found


def test_forget_removes_every_row_of_a_user_and_later_nights_refuse_their_events(landing, tmp_path, monkeypatch,
                                                                                 capsys):
    import mlflow

    monkeypatch.chdir(tmp_path)
    both = set.intersection(*({*pd.concat(map(pd.read_parquet, _files(landing, d)))["user_id"]} for d in DATES))
    chosen = sorted(both)[:3]
    forgotten = {old: FORGET + n for n, old in enumerate(chosen)}
    for f in [*_files(landing, DATES[0]), *_files(landing, DATES[1]), landing / "users.parquet"]:
        frame = pd.read_parquet(f)
        frame.assign(user_id=frame["user_id"].replace(forgotten)).to_parquet(f, index=False)
    ids = sorted(forgotten.values())
    cfg = _cfg(landing, tmp_path / "work")
    run_nightly(DATES[0], cfg)
    assert _files_holding(cfg.work, ids)                                  # they are everywhere after a night
    assert _files_holding(tmp_path / "mlruns", ids)                         # the evaluation tables logged too
    (tmp_path / "erase.txt").write_text("\n".join(map(str, ids)) + "\n")
    assert main(["pipeline", "forget", "--work", str(cfg.work), "--users", str(tmp_path / "erase.txt")]) == 0
    out = capsys.readouterr().out
    assert "forgot 3 users" in out and "snapshot" in out
    store_files = [p for p in (tmp_path / "mlruns").rglob("*") if p.is_file()] if (tmp_path / "mlruns").exists() else []
    assert store_files and _files_holding(tmp_path / "mlruns", ids) == []        # the store's tables too
    assert _files_holding(cfg.work, ids) == []
    second = run_nightly(DATES[1], cfg)                   # the landing still holds their events: refused
    assert second.forgotten_events > 0 and "events of forgotten users were refused" in second.summary(cfg.work)
    state = json.loads((cfg.work / "state" / f"date={DATES[1]}.json").read_text())
    assert state["done"]["train"]["warm_started"] is False                # not from a model that saw them
    record = json.loads((cfg.work / "forgotten.json").read_text())
    assert record["retrain_pending"] is False and len(record["digests"]) == 3      # digests, never the ids
    assert _files_holding(cfg.work, ids) == [] and _files_holding(tmp_path / "mlruns", ids) == []
    db = Path(mlflow.get_tracking_uri()[len("sqlite:///"):])
    assert not any(str(i).encode() in db.read_bytes() for i in ids)            # nor any run's params or tags
    third = run_nightly(DATES[1], dataclasses.replace(cfg, full_retrain=False))
    assert third.steps_run == []


# -- 5. one error boundary for the served model: generated requests


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["5", "yes", "", "0.9"]), st.lists(st.integers(0, 3), max_size=2))
USER_IDS = st.one_of(st.integers(-5, 2**62), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                     st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@pytest.fixture(scope="module")
def served_model(trained):
    from recsys_hyper import HyperRecommender

    return HyperRecommender.load(trained / "model"), pd.read_parquet(trained / "ds" / "interactions.parquet")


@settings(max_examples=150, **SETTINGS)
@given(st.dictionaries(st.sampled_from(["k", "exclude_seen", "explain", "ask", "interval", "top"]), VALUES,
                       max_size=3), st.lists(USER_IDS, min_size=1, max_size=3))
def test_any_request_to_the_served_model_is_answered_or_refused_with_a_message(served_model, params, user_ids):
    """Whatever params and user ids a request carries, the model answers or raises the one error
    the served model turns into a 400 with its message (never a TypeError and a stack trace)."""
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.recommender import recommend_grouped
    from recsys_hyper.tracking.pyfunc_model import checked_params

    model, events = served_model
    items = events["item_id"].drop_duplicates().head(3).tolist()
    frame = pd.DataFrame({"user_id": pd.Series(user_ids, dtype=object),
                          "item_id": [items] * len(user_ids), "rating": [[4.0, 3.0, 5.0]] * len(user_ids),
                          "timestamp": [[1, 2, 3]] * len(user_ids)})
    try:
        p = checked_params(params)
        out = recommend_grouped(model, frame, k=p["k"], exclude_seen=p["exclude_seen"], explain=p["explain"] or None,
                                ask=p["ask"] or None, interval=p["interval"] or None)
    except RecsysHyperError as exc:
        assert str(exc)
        return
    assert len(out) == len(user_ids)
    assert all(isinstance(u, (int, str, np.integer)) and not isinstance(u, (bool, np.bool_)) for u in out["user_id"])
    assert all(float(u) == float(v) if not isinstance(v, str) else u == v for u, v in zip(out["user_id"], user_ids))


def test_a_night_trained_before_a_forget_and_not_yet_gated_trains_again(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(landing, tmp_path / "work")
    run_nightly(DATES[0], cfg)
    real = nightly._gate
    monkeypatch.setattr(nightly, "_gate", lambda *a, **kw: (_ for _ in ()).throw(OSError("killed before the gate")))
    with pytest.raises(OSError):
        run_nightly(DATES[1], cfg)                             # trained, warm-started from the champion
    assert json.loads((cfg.work / "state" / f"date={DATES[1]}.json").read_text())["done"]["train"]["warm_started"]
    monkeypatch.setattr(nightly, "_gate", real)
    user = int(pd.read_parquet(_files(landing, DATES[0])[0])["user_id"].iloc[0])
    (tmp_path / "erase.txt").write_text(f"{user}\n")
    assert main(["pipeline", "forget", "--work", str(cfg.work), "--users", str(tmp_path / "erase.txt")]) == 0
    resumed = run_nightly(DATES[1], cfg)
    assert "train" in resumed.steps_run                       # its model saw the user: trained again
    state = json.loads((cfg.work / "state" / f"date={DATES[1]}.json").read_text())
    assert state["done"]["train"]["warm_started"] is False
    assert json.loads((cfg.work / "forgotten.json").read_text())["retrain_pending"] is False
