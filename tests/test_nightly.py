"""The nightly pipeline with real components and real failures: a real MLflow server over HTTP,
kill -9 during training, a corrupt landing file, an unreachable server, a concurrent run, the gate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper.errors import RecsysHyperError
from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig
from recsys_hyper.jobs.landing import make_synthetic_landing
from recsys_hyper.jobs.nightly import NightlyConfig, run_nightly
from recsys_hyper.jobs.state import RunLock, stable_split

FAST = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16), train=TrainConfig(epochs=3, k_max=5, patience=3))
DATES = ["2026-11-21", "2026-11-22"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing") / "landing"
    assert make_synthetic_landing(root, days=2, preset_name="tiny", seed=3) == DATES
    return root


def _cfg(landing: Path, work: Path, **kw) -> NightlyConfig:
    return NightlyConfig(landing=landing, work=work, model_config=kw.pop("model_config", FAST),
                         eval_methods=("popularity", "hyper"), eval_shots=(0, 1, 3), gate_shots=(0, 1, 3),
                         top_k=10, progress=False, **kw)


def _copy_landing(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend in a temporary folder."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_two_nights_against_a_real_mlflow_server(landing, tmp_path, mlflow_server, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    work = tmp_path / "work"
    first = run_nightly(DATES[0], _cfg(landing, work))
    assert first.promoted and first.champion_version == "1" and "no champion yet" in first.reason
    second = run_nightly(DATES[1], _cfg(landing, work))
    printed = capfd.readouterr()
    assert "View run" not in printed.out + printed.err          # not one line per run (MLflow's default)
    assert second.steps_run == ["validate", "merge", "split", "train", "evaluate", "gate", "score", "cohort",
                                "cold_start_eval"]
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='recsys-hyper'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    champion = str(client.get_model_version_by_alias("recsys-hyper", "champion").version)
    assert champion == second.champion_version == ("2" if second.promoted else "1")
    assert str(client.get_model_version_by_alias("recsys-hyper", "challenger").version) == "2"
    exp = client.get_experiment_by_name("recsys-hyper-nightly")
    nights = client.search_runs([exp.experiment_id], "tags.kind = 'nightly'")
    assert sorted(r.data.tags["date"] for r in nights) == DATES
    assert all(len(r.data.tags.get("snapshot_digest", "")) == 64 for r in nights)
    assert not any("data_digest" in r.data.tags for r in nights)      # one name, one kind of digest
    assert all(r.data.tags.get("code_version") for r in nights)
    for night in nights:
        steps = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{night.info.run_id}'")
        assert {r.data.tags.get("step") for r in steps if r.data.tags.get("kind") == "nightly-step"} == {
            "validate", "merge", "split", "train", "evaluate", "gate", "score", "cohort", "cold_start_eval"}
        # the registered version traces back to its config and data, as a `train` version does
        (train,) = [r for r in steps if r.data.tags.get("step") == "train"]
        version = client.get_model_version("recsys-hyper", train.data.params["version"])
        assert version.run_id == train.info.run_id
        assert train.data.params["model.dim"] == "8" and train.data.params["train.k_max"] == "5"
        digest = train.data.tags["data_digest"]
        assert len(digest) == 32 and train.data.params["data.digest"] == digest == version.tags["data_digest"]
        (data_input,) = train.inputs.dataset_inputs
        assert data_input.dataset.digest == digest and int(train.data.params["data.users"]) > 0
        assert any(k.startswith("system/") for k in train.data.metrics), sorted(train.data.metrics)
    # the first night's new users, served from their first day, measured on the second night
    second_night = [n for n in nights if n.data.tags["date"] == DATES[1]][0].info.run_id
    (cohort,) = [r for r in client.search_runs([exp.experiment_id], "tags.step = 'cohort'")
                 if r.data.tags["mlflow.parentRunId"] == second_night]
    assert cohort.data.params["cohort_measured"] == DATES[0]
    assert {"cohort_recall_at_10", "cohort_ndcg_at_10", "cohort_mae", "cohort_coverage"} <= set(cohort.data.metrics)
    assert 0 < cohort.data.metrics["cohort_returning"] <= cohort.data.metrics["cohort_users_measured"]
    assert "cohorts.json" in {a.path for a in client.list_artifacts(cohort.info.run_id)}
    history = pd.read_parquet(work / "cohorts" / "history.parquet")
    assert history["cohort_date"].tolist() == [DATES[0]] and first.cohort["cohort_users"] > 0
    # the MAE is the serving model's, from the first day's events and the users' features
    served = HyperRecommender.load(work / "models" / f"date={DATES[0]}")
    day0 = pd.read_parquet(work / "cohorts" / f"date={DATES[0]}" / "events.parquet")
    day1 = pd.concat([pd.read_parquet(f) for f in sorted((landing / "events" / f"date={DATES[1]}").glob("*.parquet"))])
    day1 = day1[day1["user_id"].isin(day0["user_id"])]
    pred = served.predict(day0, day1, users=pd.read_parquet(landing / "users.parquet"))
    known = ~np.isnan(pred)
    assert history["mae"].iloc[0] == pytest.approx(np.abs(pred[known] - day1["rating"].to_numpy()[known]).mean(),
                                                   rel=1e-6)
    gate = [r for r in client.search_runs([exp.experiment_id], "tags.step = 'gate'")
            if r.data.tags["mlflow.parentRunId"] == [n for n in nights if n.data.tags["date"] == DATES[1]][0].info.run_id]
    assert gate[0].data.params["reason"] == second.reason
    recs = pd.read_parquet(work / "scores" / "recommendations" / f"date={DATES[1]}")
    assert (recs.groupby("user_id").size() == 10).all()
    # a re-run of a done night changes nothing and duplicates nothing
    again = run_nightly(DATES[1], _cfg(landing, work))
    assert again.steps_run == [] and len(client.search_model_versions("name='recsys-hyper'")) == 2
    assert len(pd.read_parquet(work / "scores" / "recommendations" / f"date={DATES[1]}")) == len(recs)


def test_corrupt_landing_file_is_quarantined_and_the_night_completes(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    land = _copy_landing(landing, tmp_path / "landing")
    bad = land / "events" / f"date={DATES[0]}" / "part-9.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    report = run_nightly(DATES[0], _cfg(land, tmp_path / "work"))
    assert [q["file"] for q in report.quarantined] == ["part-9.parquet"]
    q = tmp_path / "work" / "quarantine" / f"date={DATES[0]}"
    assert (q / "part-9.parquet").exists() and not bad.exists()
    assert "not a readable Parquet file" in (q / "part-9.parquet.reason.txt").read_text()
    assert report.champion_version == "1"


def test_schema_changes_in_landing_files_are_quarantined_and_the_night_completes(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    land = _copy_landing(landing, tmp_path / "landing")
    part = land / "events" / f"date={DATES[0]}"
    good = pd.read_parquet(part / "part-0.parquet").head(50)
    good.drop(columns="rating").to_parquet(part / "part-8.parquet", index=False)              # no rating column
    good.assign(user_id=good["user_id"].astype(str)).to_parquet(part / "part-7.parquet", index=False)  # string ids
    report = run_nightly(DATES[0], _cfg(land, tmp_path / "work"))
    assert sorted(q["file"] for q in report.quarantined) == ["part-7.parquet", "part-8.parquet"]
    q = tmp_path / "work" / "quarantine" / f"date={DATES[0]}"
    assert "holds implicit feedback but the snapshot has explicit" in (q / "part-8.parquet.reason.txt").read_text()
    assert "column 'user_id': has string ids but the snapshot has int64" in (q / "part-7.parquet.reason.txt").read_text()
    assert report.champion_version == "1" and report.promoted


def test_a_failing_champion_read_stops_the_night_before_anything_is_decided(landing, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    run_nightly(DATES[0], _cfg(landing, work))

    def flaky(self, name, alias):
        raise MlflowException("server overloaded", error_code=TEMPORARILY_UNAVAILABLE)

    original = mlflow.MlflowClient.get_model_version_by_alias
    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", flaky)
    with pytest.raises(RecsysHyperError, match="cannot read the alias recsys-hyper@champion"):
        run_nightly(DATES[1], _cfg(landing, work))
    state = work / "state" / f"date={DATES[1]}.json"
    done = json.loads(state.read_text())["done"] if state.exists() else {}
    assert "train" not in done and "gate" not in done
    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", original)
    assert str(mlflow.MlflowClient().get_model_version_by_alias("recsys-hyper", "champion").version) == "1"


def test_unreachable_tracking_server_fails_fast_before_any_work(landing, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    t0 = time.time()
    with pytest.raises(RecsysHyperError, match="cannot be reached.*Nothing was done"):
        run_nightly(DATES[0], _cfg(landing, tmp_path / "work"))
    assert time.time() - t0 < 30
    assert not (tmp_path / "work").exists()


def test_a_second_real_run_is_refused_while_the_first_holds_the_lock(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    (tmp_path / "c.toml").write_text("[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 3\nk_max = 5\n")
    first = subprocess.Popen([sys.executable, "-m", "recsys_hyper.cli", "pipeline", "nightly", "--date", DATES[0],
                              "--landing", str(landing), "--work", str(work), "--config", str(tmp_path / "c.toml"),
                              "--no-progress"], env={**os.environ}, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (work / "nightly.lock").exists() and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    with pytest.raises(RecsysHyperError, match=f"another nightly run holds .* \\(pid {first.pid}"):
        run_nightly(DATES[0], _cfg(landing, work))
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-3000:]
    assert not (work / "nightly.lock").exists()


def test_the_lock_refuses_a_concurrent_run_and_a_killed_holder_leaves_it_free(tmp_path):
    lock = tmp_path / "nightly.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from recsys_hyper.jobs.state import RunLock\n"
                               "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RecsysHyperError, match=f"another nightly run holds .* \\(pid {holder.pid} on "):
            with RunLock(lock):
                pass
    finally:
        holder.kill()                                     # SIGKILL: no clean-up ran
        holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid
    with RunLock(lock):                                   # the holder is dead: its lock is free
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_kill_9_during_training_then_rerun_gives_the_same_champion(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    slow = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 12\npatience = 12\nk_max = 5\n"
    (tmp_path / "c.toml").write_text(slow)
    base = [sys.executable, "-m", "recsys_hyper.cli", "pipeline", "nightly", "--date", DATES[0], "--landing",
            str(landing), "--config", str(tmp_path / "c.toml"), "--no-progress"]
    env = {**os.environ}

    def night(work: Path, store: Path, kill: bool, date: str = DATES[0]) -> Path:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
        cmd = base + ["--work", str(work)]
        cmd[cmd.index("--date") + 1] = date
        if kill:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ckpt = work / "models" / f".date={DATES[0]}.checkpoints" / "checkpoint.pt"
            deadline = time.time() + 180
            while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
                time.sleep(0.05)
            assert proc.poll() is None, "the night finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert json.loads((work / "state" / f"date={DATES[0]}.json").read_text())["done"].keys() >= {"split"}
            assert "train" not in json.loads((work / "state" / f"date={DATES[0]}.json").read_text())["done"]
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return work / "models" / f"date={date}" / "model.pt"

    def champion(work: Path) -> str:
        return json.loads((work / "state" / f"date={DATES[1]}.json").read_text())["done"]["gate"]["champion_version"]

    straight = night(tmp_path / "a", tmp_path / "a.db", kill=False)
    resumed = night(tmp_path / "b", tmp_path / "b.db", kill=True)
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the night after: the same challenger, the same decision, the same champion, no extra version
    a2 = torch.load(night(tmp_path / "a", tmp_path / "a.db", kill=False, date=DATES[1]), weights_only=True)
    b2 = torch.load(night(tmp_path / "b", tmp_path / "b.db", kill=False, date=DATES[1]), weights_only=True)
    assert all(torch.equal(a2[k], b2[k]) for k in a2)
    assert champion(tmp_path / "a") == champion(tmp_path / "b")
    for store in ("a.db", "b.db"):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / store}")
        assert sorted(int(v.version) for v in client.search_model_versions("name='recsys-hyper'")) == [1, 2]


def test_a_worse_challenger_is_not_promoted(landing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    run_nightly(DATES[0], _cfg(landing, work))
    # deliberately worse: no training to speak of, and a near-zero prior precision (uncalibrated)
    # that makes the fold-in over-trust a handful of ratings
    crippled = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16, init_precision=0.01),
                      train=TrainConfig(epochs=1, lr=1e-9, k_max=5, calibrate=False))
    report = run_nightly(DATES[1], _cfg(landing, work, model_config=crippled, full_retrain=True))
    assert report.promoted is False and report.reason.startswith("worse than the champion"), report.metrics
    assert report.champion_version == "1"
    assert str(mlflow.MlflowClient().get_model_version_by_alias("recsys-hyper", "champion").version) == "1"


def test_the_nights_costs_are_capped_and_each_steps_memory_recorded(landing, tmp_path, monkeypatch):
    """A first training under --first-max-steps, the gate and the cold-start step on capped user
    samples, and every step's peak RSS in the night's state (and its MLflow step run)."""
    monkeypatch.chdir(tmp_path)
    report = run_nightly(DATES[0], _cfg(landing, tmp_path / "work", first_max_steps=4, max_eval_users=12))
    state = json.loads((tmp_path / "work" / "state" / f"date={DATES[0]}.json").read_text())["done"]
    assert all(state[step]["peak_rss_mib"] > 50 for step in ("validate", "merge", "train", "score"))
    assert 0 < report.metrics["challenger_validation_users"] <= 12 and report.metrics["challenger_test_users"] <= 12
    assert 0 < state["cold_start_eval"]["evaluated_users"] <= 12
    model = json.loads((Path(state["train"]["model_dir"]) / "model.json").read_text())
    assert model["config"]["train"]["max_steps"] == 4                          # the first training ran under the budget


def test_stable_split_keeps_users_where_they_were():
    a = stable_split(list(range(1000)))
    b = stable_split(list(range(500, 3000)))
    assert (a.loc[500:999] == b.loc[500:999]).all()
    shares = a.value_counts(normalize=True)
    assert 0.1 < shares["test"] < 0.2 and 0.1 < shares["validation"] < 0.2


def test_the_snapshot_is_append_only_and_reads_as_every_nights_events_merged(landing, tmp_path):
    """Each night's merge writes its own partition and leaves earlier ones as they were; read back,
    the snapshot is every night's events with the latest event of each (user, item) kept, as one
    merge of everything would give; batch scoring resolves the same duplicates."""
    from recsys_hyper.data import load_dataset, validate_frames
    from recsys_hyper.jobs import nightly
    from recsys_hyper.jobs.state import NightState, work_identity
    from recsys_hyper.scoring.batch import latest_per_pair

    landing = _copy_landing(landing, tmp_path / "landing")
    day1 = sorted((landing / "events" / f"date={DATES[1]}").glob("*.parquet"))[0]
    first = pd.concat([pd.read_parquet(f) for f in sorted((landing / "events" / f"date={DATES[0]}").glob("*"))])
    again = first.head(40).assign(rating=1.0, timestamp=first["timestamp"].max() + 10)   # re-rated on night 2
    pd.concat([pd.read_parquet(day1), again]).to_parquet(day1, index=False)
    cfg, work = _cfg(landing, tmp_path / "work"), tmp_path / "work"
    parts = work / "snapshot" / "interactions.parquet"
    work_id = work_identity(work)
    for date in DATES:
        state = NightState.load(work, date)
        state.complete("validate", **nightly._validate(date, cfg, state, work_id))
        if date == DATES[1]:
            before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts.rglob("*") if p.is_file()}
        state.complete("merge", **nightly._merge(date, cfg, state, work_id))
    assert sorted(p.name for p in parts.iterdir()) == [f"date={d}" for d in DATES]
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == kept for p, kept in before.items())   # untouched
    merge = state.done["merge"]
    assert merge["night_events"] == len(pd.read_parquet(parts / f"date={DATES[1]}"))
    everything = pd.concat([pd.read_parquet(f) for d in DATES
                            for f in sorted((landing / "events" / f"date={d}").glob("*.parquet"))], ignore_index=True)
    expected = validate_frames(everything).interactions
    got = load_dataset(work / "snapshot").interactions
    key = ["user_id", "item_id"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  expected.sort_values(key).reset_index(drop=True), check_like=True)
    assert (got.merge(again[key], on=key)["rating"] == 1.0).all() and len(got) == merge["interactions"] - 40
    assert merge["users"] == expected["user_id"].nunique() and merge["items"] == expected["item_id"].nunique()
    scored, dropped = latest_per_pair(pd.read_parquet(parts))
    assert dropped == 40 and len(scored) == len(expected)
    # a re-run of the night's merge (after a crash) rewrites the same partition: same digest, same rows
    assert nightly._merge(DATES[1], cfg, state, work_id)["digest"] == merge["digest"]
    assert len(load_dataset(work / "snapshot").interactions) == len(expected)


def test_a_single_file_snapshot_of_an_earlier_version_becomes_the_first_partition(tmp_path):
    from recsys_hyper.data import load_dataset
    from recsys_hyper.jobs import snapshot

    events = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "rating": [4.0, 3.0, 5.0],
                           "timestamp": [1_700_000_000, 1_700_000_100, 1_700_000_200]})
    (tmp_path / "snapshot").mkdir()
    events.to_parquet(tmp_path / "snapshot" / "interactions.parquet", index=False)
    parts = snapshot.partitions(tmp_path / "snapshot")
    assert [p.parent.name for p in parts] == [f"date={snapshot.LEGACY_DATE}"]
    snapshot.write_night(tmp_path / "snapshot", "2026-11-21", events.assign(rating=2.0, timestamp=1_750_000_000),
                         implicit=False)
    assert load_dataset(tmp_path / "snapshot").interactions["rating"].tolist() == [2.0, 2.0, 2.0]
    assert snapshot.distinct(tmp_path / "snapshot")[1] == 6
    assert len(snapshot.digest(tmp_path / "snapshot")) == 64                  # the old file's digest computed once
    assert (parts[0].parent / snapshot.DIGEST_FILE).is_file()


def test_cohort_ranking_metrics_match_the_metrics_definitions_on_a_users_x_items_matrix():
    """The cohort's Recall@10 / nDCG@10 come from the served and relevant pairs alone (the first
    night's cohort is every user); they equal the metrics computed on the dense matrix."""
    from recsys_hyper.numerics.metrics import ndcg_at_k, ranked_list_metrics, recall_at_k

    rng = np.random.default_rng(0)
    users = np.arange(1, 41)
    recs = pd.DataFrame({"user_id": np.repeat(users, 10), "item_id": np.concatenate(
        [rng.choice(60, 10, replace=False) for _ in users]), "rank": np.tile(np.arange(1, 11), 40)})
    relevant = pd.DataFrame({"user_id": rng.choice(users, 150), "item_id": rng.integers(0, 80, 150)})
    returning = pd.unique(relevant["user_id"])
    scores = torch.full((len(returning), 80), float("-inf"))
    hit = torch.zeros((len(returning), 80), dtype=torch.bool)
    row = {u: r for r, u in enumerate(returning)}
    for u, i, rank in recs[recs["user_id"].isin(returning)].itertuples(index=False):
        scores[row[u], i] = 11.0 - rank
    for u, i in relevant.itertuples(index=False):
        hit[row[u], i] = True
    recall, ndcg = ranked_list_metrics(recs.sample(frac=1, random_state=0), relevant, returning)
    assert recall == pytest.approx(float(recall_at_k(scores, hit, 10).mean()), abs=1e-6)
    assert ndcg == pytest.approx(float(ndcg_at_k(scores, hit, 10).mean()), abs=1e-6)
    assert 0 < recall < 1 and 0 < ndcg < 1
def test_processes_that_keep_finding_a_stale_lock_never_hold_it_together(tmp_path):
    """Real processes race for a lock whose owner keeps dying (each holder leaves the file behind
    naming a dead process): every takeover is exclusive, no two of them ever hold it at once."""
    lock, record = tmp_path / "nightly.lock", tmp_path / "held.log"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                            # a pid that is surely gone
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    script = ("import json, os, socket, sys, time, pathlib\n"
              "from recsys_hyper.jobs.state import RunLock\n"
              "from recsys_hyper.errors import RecsysHyperError\n"
              "lock, record, start, dead = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])\n"
              "while time.time() < start: pass\n"
              "taken = 0\n"
              "while time.time() < start + 4:\n"
              "    try:\n"
              "        with RunLock(lock):\n"
              "            fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
              "            os.write(fd, f'in {os.getpid()}\\n'.encode()); time.sleep(0.002)\n"
              "            os.write(fd, f'out {os.getpid()}\\n'.encode()); os.close(fd)\n"
              "            lock.write_text(json.dumps({'pid': dead, 'host': socket.gethostname(), 'since': 'then'}))\n"
              "            taken += 1\n"
              "    except RecsysHyperError as e:\n"
              "        assert 'another nightly run holds' in str(e), e\n"
              "print(taken)\n")
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(lock), str(record), str(start), str(dead.pid)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    taken = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    lines = record.read_text().splitlines()
    assert sum(taken) > 10 and len(lines) == 2 * sum(taken)
    for enter, leave in zip(lines[::2], lines[1::2]):     # every "in" followed by the same holder's "out"
        assert enter.startswith("in ") and leave == "out " + enter[3:], lines
