"""Inputs and environments that used to end in a traceback, silent garbage or lost data, through
the command line: each gets one clear line and exit status 2, leaves its inputs and the previous
outputs as they were, and never writes NaN.

The classes: non-finite numbers in (features, config) and out (weights, scores); outputs that
would replace or sit inside inputs or devices; the system saying no (a full disk, a read-only file
system or tracking store, SIGTERM); ids, dates and files of the data contract read wrongly; a
checkpoint of another run; a damaged model that would allocate before failing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_hyper.cli import main
from recsys_hyper.data.synthetic import generate, preset

from .conftest import FAST_TOML, write_frames

FAST = FAST_TOML
#: FAST without the closed-form searches, for the tests of signals and state (not of what is learned)
LEAN = FAST + "calibrate = false\nmf_special_case = false\nitem_item_weights = [0.0]\n"


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# -- non-finite in: a feature, the config; non-finite out: weights, scores


def test_an_inf_feature_is_refused_by_every_command(trained, tmp_path, capsys):
    data = Path(shutil.copytree(trained / "ds", tmp_path / "ds"))
    users = pd.read_parquet(data / "users.parquet")
    users["age"] = users["age"].astype("float64")
    users.loc[5, "age"] = np.inf
    users.to_parquet(data / "users.parquet", index=False)
    pd.DataFrame({"user_id": [1], "item_id": [1]}).to_parquet(tmp_path / "pairs.parquet")
    model = str(trained / "model")
    for argv in (["data", "validate", str(data)],
                 ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--config", str(trained / "fast.toml"),
                  "--no-track", "--no-progress"],
                 ["recommend", "--model", model, "--data", str(data), "--out", str(tmp_path / "r.parquet")],
                 ["predict", "--model", model, "--data", str(data), "--pairs", str(tmp_path / "pairs.parquet"),
                  "--out", str(tmp_path / "p.parquet")],
                 ["score", "--model", model, "--data", str(data), "--out", str(tmp_path / "s"), "--date", "2026-11-22",
                  "--no-progress"]):
        assert main(argv) == 2, argv
        assert "users.parquet: column 'age': has 1 infinite values of" in _err(capsys)
    assert not (tmp_path / "m").exists() and not (tmp_path / "r.parquet").exists() and not (tmp_path / "s").exists()


def test_a_diverged_training_is_neither_saved_nor_registered(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hot.toml").write_text(FAST + "lr = 900.0\n")
    assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                 str(tmp_path / "hot.toml"), "--no-progress"]) == 2
    err = _err(capsys)
    assert "diverged" in err and "nothing was saved" in err and "lr, now 900" in err
    assert not (tmp_path / "m").exists()
    client = mlflow.MlflowClient()
    assert client.search_registered_models() == []
    (run,) = client.search_runs([client.get_experiment_by_name("recsys-hyper-training").experiment_id])
    assert run.info.status == "FAILED"


def test_a_model_with_non_finite_weights_is_never_served(trained, tmp_path, capsys):
    import torch

    model = Path(shutil.copytree(trained / "model", tmp_path / "model"))
    state = torch.load(model / "model.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[0] = float("nan")
    torch.save(state, model / "model.pt")
    assert main(["recommend", "--model", str(model), "--data", str(trained / "ds"), "--out",
                 str(tmp_path / "r.parquet")]) == 2
    assert f"holds non-finite weights (NaN or inf in {name}" in _err(capsys)
    assert not (tmp_path / "r.parquet").exists()


def test_scores_that_come_out_non_finite_are_never_written(trained, tmp_path, capsys, monkeypatch):
    """Whatever produced them, NaN scores stop the command before a row is written (they used to
    drop the user silently: "0 users served")."""
    from recsys_hyper.recommender.hyper import HyperRecommender

    real = HyperRecommender._rank

    def broken(self, adapted, rows, cat):
        out = real(self, adapted, rows, cat)
        out[0, :] = float("nan")
        return out

    monkeypatch.setattr(HyperRecommender, "_rank", broken)
    assert main(["recommend", "--model", str(trained / "model"), "--data", str(trained / "ds"), "--out",
                 str(tmp_path / "r.parquet")]) == 2
    assert "ranking scores came out NaN or infinite for 1 users" in _err(capsys)
    assert main(["score", "--model", str(trained / "model"), "--data", str(trained / "ds"), "--out",
                 str(tmp_path / "scores"), "--date", "2026-11-22", "--no-progress"]) == 2
    assert "came out NaN or infinite" in _err(capsys)
    assert not (tmp_path / "r.parquet").exists() and not (tmp_path / "scores" / "recommendations").exists()


@pytest.mark.parametrize("text, name, message", [
    ("model: 5\n", "c.yaml", "[model]: the section must be a table of keys"),
    ("[model]\ndim = true\n", "c.toml", "The 'dim' parameter of ModelConfig must be an int in [1, 4,096]. Got True"),
    ("[train]\nval_shots = [-1]\n", "c.toml", "The 'val_shots' parameter of TrainConfig must be a non-empty list"),
    ("[train]\nlr = inf\n", "c.toml", "The 'lr' parameter of TrainConfig must be a float in (0, 1,000]. Got inf"),
    ('{"train": {"calibration_grid": ["a"]}}', "c.json", "The 'calibration_grid' parameter of TrainConfig must be"),
    ("[model]\ndim = 100000000\n", "c.toml", "The 'dim' parameter of ModelConfig must be an int in [1, 4,096]"),
    ("- 1\n- 2\n", "c.yaml", "expected a mapping with [model] and [train] sections"),
])
def test_a_config_with_wrong_values_is_explained_before_any_work(trained, tmp_path, capsys, text, name, message):
    (tmp_path / name).write_text(text)
    assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                 str(tmp_path / name), "--no-track", "--no-progress"]) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "m").exists()


def test_command_line_numbers_are_checked(trained, tmp_path, capsys):
    base = ["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--no-track"]
    for extra in (["--seed", "-1"], ["--max-minutes", "nan"], ["--max-minutes", "inf"]):
        with pytest.raises(SystemExit) as info:
            main(base + extra)
        assert info.value.code == 2
        assert "expected" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pipeline", "nightly", "--date", "2026-11-22", "--tolerance-mae", "nan"])
    assert "expected a finite number" in capsys.readouterr().err


# -- outputs never replace inputs, devices or folders of other files


def test_outputs_never_replace_devices_inputs_or_the_folders_holding_them(trained, tmp_path, capsys):
    data = Path(shutil.copytree(trained / "ds", tmp_path / "ds"))
    (data / "notes.txt").write_text("keep me")
    before = _files(data)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model = str(trained / "model")
    assert main(["recommend", "--model", model, "--data", str(data), "--out", str(fifo)]) == 2
    assert "is a named pipe (FIFO), not a file" in _err(capsys)
    assert fifo.is_fifo()
    if os.geteuid() == 0:                                # a character device like /dev/null, made here
        null = tmp_path / "null"
        os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
        assert main(["predict", "--model", model, "--data", str(data), "--pairs", str(data / "interactions.parquet"),
                     "--out", str(null)]) == 2
        assert "is a character device" in _err(capsys) and null.is_char_device()
    assert main(["score", "--model", model, "--data", str(data), "--out", str(data / "interactions.parquet") + "/",
                 "--date", "2026-11-22", "--no-progress"]) == 2
    assert "is an input" in _err(capsys)
    assert main(["recommend", "--model", model, "--data", str(data), "--out", f"{model}/recs.parquet"]) == 2
    assert "inside an input" in _err(capsys)
    assert main(["data", "validate", str(data), "--out", str(data), "--overwrite"]) == 2
    assert main(["data", "validate", str(data), "--out", str(tmp_path), "--overwrite"]) == 2
    assert "holds an input" in _err(capsys)
    assert main(["evaluate", "--data", str(data), "--out", str(data), "--no-track", "--methods", "popularity"]) == 2
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("years of work")
    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path / "docs"), "--no-track", "--methods",
                 "popularity", "--shots", "0", "1", "--no-progress"]) == 2
    assert "is not an evaluation's output folder" in _err(capsys)
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "years of work"
    assert _files(data) == before


# -- the system says no: a full disk, a read-only file system or store, SIGTERM


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A small real file system (tmpfs) at ``path``; the test is skipped where mounting is not
    allowed (a machine without the privilege)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({done.stderr.decode().strip()[:100]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(fs: Path) -> None:
    """Leave (almost) no free space on ``fs``."""
    with open(fs / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()


def _left_behind(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name or p.name.startswith(".staging")]


def test_a_full_disk_gives_one_clear_line_and_leaves_nothing_half_written(trained, tmp_path, capsys):
    with _tmpfs(tmp_path / "full", "512k") as fs:
        _fill(fs)
        model = str(trained / "model")
        for argv in (["recommend", "--model", model, "--data", str(trained / "ds"), "--out", str(fs / "r.parquet")],
                     ["score", "--model", model, "--data", str(trained / "ds"), "--out", str(fs / "scores"), "--date",
                      "2026-11-22", "--no-progress"],
                     ["train", "--data", str(trained / "ds"), "--out", str(fs / "m"), "--config",
                      str(trained / "fast.toml"), "--no-track", "--no-progress"],
                     ["data", "validate", str(trained / "ds"), "--out", str(fs / "clean")],
                     ["data", "synth", "--preset", "tiny", "--out", str(fs / "synth"), "--no-progress"]):
            assert main(argv) == 2, argv
            err = _err(capsys)
            assert "no space left on the device" in err and "nothing half-written was left behind" in err, err
        assert sorted(p.name for p in fs.iterdir()) == ["filler"], list(fs.rglob("*"))
        assert _left_behind(fs) == []


def test_a_read_only_output_or_tracking_store_is_refused_in_one_line(trained, tmp_path, capsys, monkeypatch):
    with _tmpfs(tmp_path / "ro", "8m") as fs:
        store = fs / "mlflow.db"
        shutil.copy(Path(mlflow.get_tracking_uri()[len("sqlite:///"):]), store)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        assert main(["score", "--model", str(trained / "model"), "--data", str(trained / "ds"), "--out",
                     str(fs / "scores"), "--date", "2026-11-22", "--no-progress"]) == 2
        assert "cannot write under" in _err(capsys)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        t0 = time.time()
        assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                     str(trained / "fast.toml"), "--no-progress"]) == 2
        assert "is read-only" in _err(capsys) and time.time() - t0 < 30
        assert not (tmp_path / "m").exists()


def test_a_tracking_uri_that_is_no_database_fails_in_seconds(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "folder").mkdir()
    (tmp_path / "garbage.db").write_text("not a database")
    for uri, message in ((f"sqlite:///{tmp_path / 'folder'}", "names a directory"),
                         (f"sqlite:///{tmp_path / 'garbage.db'}", "is not an SQLite database")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        t0 = time.time()
        assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                     str(trained / "fast.toml"), "--no-progress"]) == 2
        assert message in _err(capsys) and time.time() - t0 < 20


def test_processes_creating_one_fresh_store_at_once_all_succeed(tmp_path):
    """Two nightlies (or any commands) on a store that does not exist yet: MLflow's migrations of
    a fresh SQLite store are serialised by a lock (one of them used to fail: "cannot be reached")."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = "from recsys_hyper import tracking; tracking.ensure_reachable(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1][-800:] for r in results]


def _terminate_once_written(proc: subprocess.Popen, path: Path) -> str:
    """SIGTERM to ``proc`` as soon as it has written ``path`` (a first epoch's checkpoint); its stderr."""
    deadline = time.time() + 180
    while time.time() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)[1]


def test_sigterm_ends_training_as_killed_in_one_line(trained, tmp_path):
    store = tmp_path / "store.db"
    shutil.copy(Path(mlflow.get_tracking_uri()[len("sqlite:///"):]), store)
    (tmp_path / "slow.toml").write_text(LEAN.replace("epochs = 2", "epochs = 200\npatience = 200"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    proc = subprocess.Popen([sys.executable, "-m", "recsys_hyper.cli", "train", "--data", str(trained / "ds"), "--out",
                             str(tmp_path / "m"), "--config", str(tmp_path / "slow.toml"), "--no-progress"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = _terminate_once_written(proc, tmp_path / ".m.checkpoints" / "checkpoint.pt")
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("recsys-hyper-training").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not (tmp_path / "m").exists()


def test_a_signal_never_cuts_a_write_to_the_tracking_store_in_the_middle():
    """A write to the store runs whole (its driver would report a cut as a database error, with a
    traceback): a signal that arrives meanwhile stops the command right after it."""
    from recsys_hyper.errors import Interrupted
    from recsys_hyper.interrupts import deferred, stop_on_signals

    finished = []
    with stop_on_signals():
        for signum in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(Interrupted) as info:
                with deferred():
                    os.kill(os.getpid(), signum)
                    time.sleep(0.05)
                    finished.append(signum)
            assert info.value.signum == signum
        with pytest.raises(Interrupted):                      # outside a write: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
            finished.append("too late")
    assert finished == [signal.SIGTERM, signal.SIGINT]


def test_sigterm_stops_a_night_releases_its_lock_and_a_rerun_completes(tmp_path):
    from recsys_hyper.jobs.landing import make_synthetic_landing

    landing = tmp_path / "landing"
    make_synthetic_landing(landing, days=1, preset_name="tiny", seed=4, n_users=150)
    (tmp_path / "slow.toml").write_text(LEAN.replace("epochs = 2", "epochs = 200\npatience = 200"))
    store = tmp_path / "store.db"
    shutil.copy(Path(mlflow.get_tracking_uri()[len("sqlite:///"):]), store)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "recsys_hyper.cli", "pipeline", "nightly", "--all", "--landing", str(landing),
           "--work", str(work), "--config", str(tmp_path / "slow.toml"), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = _terminate_once_written(proc, work / "models" / ".date=2026-11-22.checkpoints" / "checkpoint.pt")
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    assert not (work / "nightly.lock").exists()
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("recsys-hyper-nightly").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs} and "KILLED" in {r.info.status for r in runs}
    (tmp_path / "slow.toml").write_text(LEAN)
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


# -- a checkpoint belongs to its data and config


def test_resume_refuses_the_checkpoint_of_another_dataset(trained, tmp_path, capsys, monkeypatch):
    from recsys_hyper import HyperRecommender, load_config
    from recsys_hyper.data import load_dataset
    from recsys_hyper.jobs.train import checkpoint_dir

    other = tmp_path / "other"
    generate(preset("tiny", n_users=120, n_items=90, seed=99), other)
    out = tmp_path / "m"
    # the run on `other` was killed after an epoch: its checkpoint is where train --out m keeps one
    HyperRecommender(load_config(trained / "fast.toml")).fit(load_dataset(other), progress=False,
                                                              checkpoint_dir=checkpoint_dir(out))
    def train(data: Path, config: Path) -> int:
        return main(["train", "--data", str(data), "--out", str(out), "--config", str(config), "--no-track",
                     "--no-progress", "--resume"])

    searches = HyperRecommender._special_cases

    def no_search(*args, **kwargs):
        raise AssertionError("a refused resume ran the closed-form searches first")

    monkeypatch.setattr(HyperRecommender, "_special_cases", no_search)   # refused before minutes of searches
    assert train(trained / "ds", trained / "fast.toml") == 2
    err = _err(capsys)
    assert "this checkpoint belongs to another training run" in err and "other training data" in err
    assert not out.exists()
    for change in (("epochs = 2", "epochs = 3"), ("dim = 8", "dim = 12")):   # its data, another config: refused
        (tmp_path / "c.toml").write_text(FAST.replace(*change))
        assert train(other, tmp_path / "c.toml") == 2
        assert "other config" in _err(capsys)
    monkeypatch.setattr(HyperRecommender, "_special_cases", searches)
    assert train(other, trained / "fast.toml") == 0                               # its own data and config: resumed
    assert (out / "model.json").is_file()


# -- the data contract read as written


def test_unsigned_ids_beyond_int64_are_explained(trained, tmp_path, capsys):
    events = pd.read_parquet(trained / "ds" / "interactions.parquet")
    big = pa.array(events["user_id"].to_numpy().astype(np.uint64) + np.uint64(2**63), pa.uint64())
    data = write_frames(tmp_path / "big", pa.table({"user_id": big, "item_id": events["item_id"],
                                                    "rating": events["rating"], "timestamp": events["timestamp"]}))
    assert main(["data", "validate", str(data)]) == 2
    assert "ids >= 2^63 that int64 cannot hold" in _err(capsys)
    assert main(["score", "--model", str(trained / "model"), "--data", str(data), "--out", str(tmp_path / "s"),
                 "--date", "2026-11-22", "--no-progress"]) == 2
    assert "ids >= 2^63 that int64 cannot hold" in _err(capsys)
    small = write_frames(tmp_path / "small", pa.table({"user_id": pa.array(events["user_id"], pa.uint64()),
                                                       "item_id": events["item_id"], "rating": events["rating"],
                                                       "timestamp": events["timestamp"]}))
    assert main(["data", "validate", str(small)]) == 0                          # unsigned ids that fit: fine


@pytest.mark.parametrize("candidates, message", [
    (pd.DataFrame({"item_id": ["a", "b"]}), "item ids are string but the model was trained on int64"),
    (pd.DataFrame({"item_id": [1.0, None]}), "column 'item_id': has 1 null ids"),
    (pd.DataFrame({"item": [1, 2]}), "column 'item_id': is missing"),
    (pd.DataFrame({"item_id": [10**9, 10**9 + 1]}), "none of its 2 item ids is known to the model"),
])
def test_candidates_are_checked_like_the_data(trained, tmp_path, capsys, candidates, message):
    candidates.to_parquet(tmp_path / "c.parquet")
    assert main(["score", "--model", str(trained / "model"), "--data", str(trained / "ds"), "--out", str(tmp_path / "s"),
                 "--date", "2026-11-22", "--candidates", str(tmp_path / "c.parquet"), "--no-progress"]) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "s").exists()


def test_the_parts_of_a_folder_must_agree_on_their_columns(trained, tmp_path, capsys):
    events = pd.read_parquet(trained / "ds" / "interactions.parquet")
    folder = tmp_path / "d" / "interactions.parquet"
    folder.mkdir(parents=True)
    events.iloc[:100].drop(columns="rating").to_parquet(folder / "a.parquet", index=False)   # read as implicit, once
    events.iloc[100:].to_parquet(folder / "b.parquet", index=False)
    assert main(["data", "validate", str(tmp_path / "d")]) == 2
    err = _err(capsys)
    assert "column 'rating': is in 1 of its 2 parts but missing from 1 (a.parquet" in err
    assert main(["score", "--model", str(trained / "model"), "--data", str(tmp_path / "d"), "--out",
                 str(tmp_path / "s"), "--date", "2026-11-22", "--no-progress"]) == 2
    assert "missing from 1 (a.parquet" in _err(capsys)
    events.iloc[:100].assign(user_id=events["user_id"].iloc[:100].astype(str)).to_parquet(folder / "a.parquet",
                                                                                       index=False)
    assert main(["data", "validate", str(tmp_path / "d")]) == 2
    assert "column 'user_id': has different types in different parts (string in a.parquet; integer in b.parquet)" \
        in _err(capsys)
    events.iloc[:100].astype({"user_id": "int32"}).to_parquet(folder / "a.parquet", index=False)  # widths may differ
    assert main(["data", "validate", str(tmp_path / "d")]) == 0


def test_repeated_columns_and_ratings_a_float32_cannot_hold_are_explained(trained, tmp_path, capsys):
    events = pd.read_parquet(trained / "ds" / "interactions.parquet")
    twice = pa.Table.from_arrays([pa.array(events[c]) for c in ("user_id", "item_id", "rating", "timestamp", "rating")],
                                 names=["user_id", "item_id", "rating", "timestamp", "rating"])
    assert main(["data", "validate", str(write_frames(tmp_path / "twice", twice))]) == 2
    assert "has the column(s) 'rating' more than once" in _err(capsys)
    huge = events.astype({"rating": "float64"})
    huge.loc[3, "rating"] = 1e39                                          # finite, but infinite as a float32
    assert main(["data", "validate", str(write_frames(tmp_path / "huge", huge))]) == 2
    assert "has 1 values beyond a float32's range" in _err(capsys)


def test_an_unscoreable_prediction_is_written_as_missing_never_as_nan(trained, tmp_path):
    pd.DataFrame({"user_id": [1, 1], "item_id": [int(pd.read_parquet(trained / "ds" / "interactions.parquet")
                                                        ["item_id"].iloc[0]), 10**9]}).to_parquet(tmp_path / "p.parquet")
    assert main(["predict", "--model", str(trained / "model"), "--data", str(trained / "ds"), "--pairs",
                 str(tmp_path / "p.parquet"), "--out", str(tmp_path / "out.parquet")]) == 0
    column = pq.read_table(tmp_path / "out.parquet").column("prediction")
    assert column.null_count == 1 and column.is_valid().to_pylist() == [True, False]
    assert np.isfinite(column.to_numpy(zero_copy_only=False)[:1]).all()


def test_times_are_read_as_written(trained, tmp_path, capsys):
    import datetime

    events = pd.read_parquet(trained / "ds" / "interactions.parquet").head(200)
    dates = pa.array([datetime.date(9999, 12, 31)] * len(events), pa.date32())
    data = write_frames(tmp_path / "dates", pa.table({"user_id": events["user_id"], "item_id": events["item_id"],
                                                      "rating": events["rating"], "timestamp": dates}))
    assert main(["data", "validate", str(data)]) == 2
    err = _err(capsys)
    assert "implausible dates" in err and "9999-12-31" in err and "milliseconds" not in err
    mixed = events["timestamp"].astype(str)
    mixed.iloc[7] = "2021-03-04T05:06:07Z"                               # one ISO time among unix seconds
    data = write_frames(tmp_path / "mixed", events.assign(timestamp=mixed))
    assert main(["data", "validate", str(data), "--out", str(tmp_path / "clean")]) == 0
    clean = pd.read_parquet(tmp_path / "clean" / "interactions.parquet")
    row = clean[(clean["user_id"] == events["user_id"].iloc[7]) & (clean["item_id"] == events["item_id"].iloc[7])]
    assert row["timestamp"].tolist() == [int(pd.Timestamp("2021-03-04T05:06:07Z").timestamp())]
    assert clean["timestamp"].tolist()[:3] == events["timestamp"].tolist()[:3]


def test_an_edited_model_size_is_refused_before_the_network_is_built(trained, tmp_path, capsys, monkeypatch):
    from recsys_hyper.networks import hyper as networks

    model = Path(shutil.copytree(trained / "model", tmp_path / "model"))
    meta = json.loads((model / "model.json").read_text())
    meta["config"]["model"].update(dim=4096, hidden=4096)
    (model / "model.json").write_text(json.dumps(meta))
    built = []
    real_init = networks.HyperRecModel.__init__

    def counting(self, *args, **kwargs):
        import torch

        built.append(str(torch.empty(0).device))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(networks.HyperRecModel, "__init__", counting)
    assert main(["recommend", "--model", str(model), "--data", str(trained / "ds"), "--out",
                 str(tmp_path / "r.parquet")]) == 2
    assert "do not match" in _err(capsys)
    assert built == ["meta"]                                   # checked on the meta device only: nothing allocated
