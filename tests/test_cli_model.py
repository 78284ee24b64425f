"""The model commands end to end (train, recommend, predict), MLflow tracking and the CLI's errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper.cli import main
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper import HyperRecommender

from .conftest import write_frames

FAST = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 3\nbatch_users = 64\nk_max = 5\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset, a model trained and registered through the CLI, and the MLflow store."""
    root = tmp_path_factory.mktemp("cli")
    store = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    generate(preset("tiny", n_users=200, seed=5), root / "ds")
    (root / "fast.toml").write_text(FAST)
    cwd = os.getcwd()
    os.chdir(root)  # MLflow's default artifact folder lands here
    try:
        assert main(["train", "--data", str(root / "ds"), "--out", str(root / "model"), "--config",
                     str(root / "fast.toml"), "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return {"root": root, "store": store, "ds": root / "ds", "model": root / "model"}


@pytest.fixture
def store(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["store"])
    mlflow.set_tracking_uri(trained["store"])
    return trained["store"]


def _new_users_dir(tmp_path, trained, n_users=5, k=3):
    """Histories of users the model never saw (new ids), one user with features only, one new item."""
    ds = pd.read_parquet(trained["ds"] / "interactions.parquet")
    users = pd.read_parquet(trained["ds"] / "users.parquet")
    items = pd.read_parquet(trained["ds"] / "items.parquet")
    picked = ds["user_id"].drop_duplicates().head(n_users)
    hist = ds[ds["user_id"].isin(picked)].sort_values(["user_id", "timestamp"]).groupby("user_id").head(k)
    hist = hist.assign(user_id=hist["user_id"] + 10_000)
    new_user_feats = users[users["user_id"].isin(picked)].assign(user_id=lambda d: d["user_id"] + 10_000)
    only_features = users.iloc[[-1]].assign(user_id=99_999)
    new_item = items.iloc[[0]].assign(item_id=77_777)
    return write_frames(tmp_path / "new", hist, pd.concat([new_user_feats, only_features]),
                        pd.concat([items, new_item])), hist


def test_train_tracks_the_run_and_registers_a_challenger(trained, store):
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("recsys-hyper-training")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.dim"] == "8"
    assert run.data.params["data.digest"] and int(run.data.params["data.users"]) == 200
    history = client.get_metric_history(run.info.run_id, "val_mae")
    assert [m.step for m in history] == [0, 1, 2]
    # one naming rule in every experiment (the evaluation's ndcg_at_10): no "ndcg10"
    assert {"val_ndcg_at_10", "best_val_ndcg_at_10"} <= set(run.data.metrics)
    assert not [k for k in run.data.metrics if "ndcg10" in k or "@" in k]
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest
    version = client.get_model_version_by_alias("recsys-hyper", "challenger")
    assert version.run_id == run.info.run_id
    digest = run.data.tags["data_digest"]                      # one digest for the data, wherever it is read
    assert run.data.params["data.digest"] == digest == version.tags["data_digest"]
    assert run.inputs.dataset_inputs[0].dataset.digest == digest
    # requirements a serving environment can install: pinned, without a local build tag (2.13.0+cpu)
    reqs = Path(mlflow.artifacts.download_artifacts(f"models:/recsys-hyper/{version.version}")) / "requirements.txt"
    pins = [line for line in reqs.read_text().splitlines() if line and not line.startswith("#")]
    assert any(p.startswith("torch==") for p in pins) and not any("+" in p for p in pins), pins
    # the input example holds made-up users, none of the training data's
    example = json.loads((reqs.parent / "input_example.json").read_text())
    users = {row[example["columns"].index("user_id")] for row in example["data"]}
    trained_users = set(pd.read_parquet(trained["ds"] / "interactions.parquet")["user_id"])
    assert users and not users & trained_users, users
    meta = json.loads((trained["model"] / "model.json").read_text())
    assert meta["config"]["train"]["epochs"] == 3
    # what the fit chose on its validation users is on the run too, as the record and as numbers
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="tuning.json"))
                        .read_text())
    assert logged["chosen"] == meta["tuning"]["chosen"]
    blend = meta["tuning"]["chosen"]["rating_blend"]
    for k, weights in blend.items():
        for name, w in weights.items():
            assert run.data.metrics[f"chosen.rating_blend.{k}.{name}"] == pytest.approx(w)
    assert not any(trained["root"].glob(".model.checkpoints"))  # cleaned up after success


def test_pyfunc_and_model_directory_agree(trained, store):
    from recsys_hyper.data.frames import group_histories

    events = pd.read_parquet(trained["ds"] / "interactions.parquet").head(40)
    grouped = group_histories(events)
    grouped = pd.concat([grouped, pd.DataFrame({"user_id": [123_456], "item_id": [[]], "rating": [[]],
                                                "timestamp": [[]]})], ignore_index=True)   # no history
    out = mlflow.pyfunc.load_model("models:/recsys-hyper@challenger").predict(grouped, params={"k": 5})
    assert list(out.columns) == ["user_id", "item_ids", "scores"] and len(out) == len(grouped)
    direct = HyperRecommender.load(trained["model"]).recommend(events, k=5)
    for _, row in out.iloc[:-1].iterrows():
        mine = direct[direct["user_id"] == row["user_id"]]
        assert list(row["item_ids"]) == mine["item_id"].tolist()
        np.testing.assert_allclose(row["scores"], mine["score"].to_numpy(), rtol=1e-6)
    assert len(out.iloc[-1]["item_ids"]) == 5                                 # population head's items
    # the optional explain parameter: one JSON explanation per recommended item
    explained = mlflow.pyfunc.load_model("models:/recsys-hyper@challenger").predict(grouped, params={"k": 5,
                                                                                                     "explain": 2})
    assert list(explained.columns) == ["user_id", "item_ids", "scores", "explanations"]
    first = [json.loads(e) for e in explained.iloc[0]["explanations"]]
    assert len(first) == 5 and len(first[0]["because"]) == min(2, len(grouped.iloc[0]["item_id"]))
    assert first[0]["score_prior"] + first[0]["score_features"] + first[0]["score_history"] == pytest.approx(
        explained.iloc[0]["scores"][0], abs=1e-3)
    assert list(explained.iloc[-1]["explanations"]) and not json.loads(explained.iloc[-1]["explanations"][0])["because"]
    # and the optional ask parameter: the items to ask each user about next
    asked = mlflow.pyfunc.load_model("models:/recsys-hyper@challenger").predict(grouped, params={"ask": 3})
    assert list(asked.columns) == ["user_id", "item_ids", "scores", "questions"]
    assert all(len(q) == 3 and not set(q) & set(h) for q, h in zip(asked["questions"], grouped["item_id"]))


def test_the_served_model_checks_its_input_as_the_library_does(trained, store, tmp_path):
    """`mlflow models serve` on the registered model (127.0.0.1): a good request gets the library's
    answer, with the library's prediction intervals when asked (`interval`); a rating outside the training scale, lists of different lengths and a history of
    unknown items only get a 400 whose message says what to fix, with no stack trace."""
    import socket
    import urllib.error
    import urllib.request

    from recsys_hyper.data.frames import group_histories
    from recsys_hyper.recommender import recommend_grouped

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                             "models:/recsys-hyper@challenger", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "--workers", "1"],
                            env={**os.environ, "MLFLOW_TRACKING_URI": store,      # its server program lives beside python
                                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
                            cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def post(frame: pd.DataFrame, **params) -> tuple[int, dict]:
        body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False)),
                           "params": {"k": 5, **params}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
                time.sleep(0.5)
        events = pd.read_parquet(trained["ds"] / "interactions.parquet").head(30)
        grouped = group_histories(events)
        status, answer = post(grouped)
        assert status == 200, answer
        library = HyperRecommender.load(trained["model"])
        direct = recommend_grouped(library, grouped, k=5)
        assert [row["item_ids"] for row in answer["predictions"]] == [list(v) for v in direct["item_ids"]]
        status, answer = post(grouped, interval=0.8)
        assert status == 200, answer
        direct = recommend_grouped(library, grouped, k=5, interval=0.8)
        for row, (_, want) in zip(answer["predictions"], direct.iterrows()):
            assert row["item_ids"] == list(want["item_ids"])
            for col in ("ratings", "lower", "upper"):
                np.testing.assert_allclose(row[col], want[col], rtol=1e-5)
            assert all(lo <= r <= hi for lo, r, hi in zip(row["lower"], row["ratings"], row["upper"]))
        status, answer = post(grouped, interval=1.5)
        assert status == 400 and "between 0.01 and 0.99" in answer["message"], answer
        hi = float(events["rating"].max())
        bad = grouped.copy()
        bad.at[0, "rating"] = [hi + 4.0] + list(bad.at[0, "rating"])[1:]
        uneven = grouped.copy()
        uneven.at[1, "rating"] = list(uneven.at[1, "rating"])[:-1]
        unknown = grouped.assign(item_id=[[i + 10**9 for i in v] for v in grouped["item_id"]])
        for frame, message in ((bad, "1 ratings of .* are outside the model's training scale"),
                               (uneven, "1 rows have a 'rating' list of another length than their 'item_id' list"),
                               (unknown, "none of its .* item ids is known to the model")):
            status, answer = post(frame)
            assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert re.search(message, answer["message"]) and "Traceback" not in json.dumps(answer), answer
        # null params and ids that are no ids (1.5 used to be answered as user 1, a null param with a stack trace)
        fraction = grouped.assign(user_id=[1.5] + grouped["user_id"].tolist()[1:])
        for frame, params, message in ((grouped, {"k": None}, "'k' is None; it must be a whole number >= 1"),
                                       (grouped, {"interval": None}, "'interval' is None"),
                                       (grouped, {"exclude_seen": "no"}, "'exclude_seen'"),
                                       (fraction, {}, "user ids are not whole numbers")):
            status, answer = post(frame, **params)
            assert status == 400 and re.search(re.escape(message), answer["message"]), (params, answer)
            assert "Traceback" not in json.dumps(answer) and "site-packages" not in json.dumps(answer), answer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_promote_and_roll_back_the_champion_from_the_command_line(trained, tmp_path, monkeypatch, capsys):
    """After the README's first steps (`train`: @challenger only), `model promote` makes
    models:/recsys-hyper@champion servable; a second promotion can be rolled back."""
    import shutil

    from recsys_hyper import tracking

    store = tmp_path / "store.db"                       # a copy: the module's store keeps no champion
    shutil.copy(trained["store"][len("sqlite:///"):], store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    monkeypatch.chdir(tmp_path)
    assert tracking.alias_version("champion") is None
    assert main(["model", "rollback"]) == 2 and "is not set" in capsys.readouterr().err
    assert main(["model", "promote"]) == 0                                      # the challenger, version 1
    assert "recsys-hyper@champion -> version 1" in capsys.readouterr().out
    data, _ = _new_users_dir(tmp_path, trained)
    assert main(["recommend", "--model", "models:/recsys-hyper@champion", "--data", str(data), "--top-k", "3",
                 "--out", str(tmp_path / "recs.parquet")]) == 0
    with mlflow.start_run():                                                    # a second version
        example = pd.DataFrame({"user_id": [1], "item_id": [[1]], "rating": [[4.0]], "timestamp": [[1_700_000_000]]})
        from recsys_hyper.recommender import recommend_grouped

        second = tracking.log_pyfunc_model(trained["model"], example,
                                           recommend_grouped(HyperRecommender.load(trained["model"]), example))
    assert main(["model", "promote", "--version", second]) == 0
    assert f"-> version {second} (was 1; `recsys-hyper model rollback` returns to it)" in capsys.readouterr().out
    assert main(["model", "promote", "--version", "99"]) == 2 and "has no version 99" in capsys.readouterr().err
    assert main(["model", "rollback"]) == 0 and tracking.alias_version("champion") == "1"
    assert f"-> version 1 (was {second})" in capsys.readouterr().out
    assert main(["model", "rollback"]) == 2 and "replaced no earlier version" in capsys.readouterr().err


@pytest.mark.parametrize("model_spec", ["dir", "uri"])
def test_recommend_contract(trained, store, tmp_path, model_spec, capsys):
    data, hist = _new_users_dir(tmp_path, trained)
    model = str(trained["model"]) if model_spec == "dir" else "models:/recsys-hyper@challenger"
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", model, "--data", str(data), "--top-k", "7", "--out", str(out)]) == 0
    recs = pd.read_parquet(out)
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank"]
    assert set(recs["user_id"]) == set(hist["user_id"]) | {99_999}       # feature-only user included
    assert (recs.groupby("user_id").size() == 7).all()
    assert (recs.groupby("user_id")["rank"].apply(list).map(lambda r: r == list(range(1, 8)))).all()
    assert (recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    seen = set(map(tuple, hist[["user_id", "item_id"]].to_numpy()))
    assert not any((u, i) in seen for u, i in recs[["user_id", "item_id"]].to_numpy())
    assert "recommended 7 items to 6 users" in capsys.readouterr().out


def test_onboard_and_explain_through_the_cli(trained, store, tmp_path, capsys):
    data, hist = _new_users_dir(tmp_path, trained)
    out = tmp_path / "questions.parquet"
    assert main(["onboard", "--model", str(trained["model"]), "--data", str(data), "--n", "4", "--out", str(out)]) == 0
    q = pd.read_parquet(out)
    assert list(q.columns) == ["user_id", "item_id", "rank", "value"]
    assert set(q["user_id"]) == set(hist["user_id"]) | {99_999} and (q.groupby("user_id").size() == 4).all()
    seen = set(map(tuple, hist[["user_id", "item_id"]].to_numpy()))
    assert not any((u, i) in seen for u, i in q[["user_id", "item_id"]].to_numpy())
    assert "chose 4 questions for 6 users" in capsys.readouterr().out
    # questions already put are never asked again
    q[q["rank"] <= 2][["user_id", "item_id"]].to_parquet(tmp_path / "asked.parquet")
    again = tmp_path / "again.parquet"
    assert main(["onboard", "--model", str(trained["model"]), "--data", str(data), "--n", "2", "--out", str(again),
                 "--asked", str(tmp_path / "asked.parquet")]) == 0
    q2 = pd.read_parquet(again)
    assert not set(map(tuple, q2[["user_id", "item_id"]].to_numpy())) & set(map(tuple, q[q["rank"] <= 2][["user_id", "item_id"]].to_numpy()))
    # more questions than the catalogue has items, or none: a clear error, nothing written
    capsys.readouterr()
    assert main(["onboard", "--model", str(trained["model"]), "--data", str(data), "--n", "100000",
                 "--out", str(tmp_path / "no.parquet")]) == 2
    assert "must be at most the catalogue's" in capsys.readouterr().err and not (tmp_path / "no.parquet").exists()
    with pytest.raises(SystemExit):
        main(["onboard", "--model", str(trained["model"]), "--data", str(data), "--n", "0", "--out", str(out)])
    assert "expected a positive whole number, got 0" in capsys.readouterr().err

    # recommend --explain: the same recommendations, with why
    plain, explained = tmp_path / "recs.parquet", tmp_path / "explained.parquet"
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(data), "--top-k", "5",
                 "--out", str(plain)]) == 0
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(data), "--top-k", "5",
                 "--out", str(explained), "--explain", "2"]) == 0
    a, b = pd.read_parquet(plain), pd.read_parquet(explained)
    assert list(b.columns) == ["user_id", "item_id", "score", "rank", "score_prior", "score_features",
                               "score_history", "because"]
    pd.testing.assert_frame_equal(a, b[a.columns])
    np.testing.assert_allclose(b["score_prior"] + b["score_features"] + b["score_history"], b["score"], atol=1e-3)
    k = hist.groupby("user_id").size()
    for _, row in b.iterrows():
        expect = 0 if row["user_id"] == 99_999 else min(2, k[row["user_id"]])
        assert len(row["because"]) == expect
        if expect:
            assert {e["item_id"] for e in row["because"]} <= set(hist.loc[hist["user_id"] == row["user_id"], "item_id"])
    assert (b.loc[b["user_id"] == 99_999, "score_history"].abs() < 1e-6).all()   # no events, nothing from them


def test_score_explains_as_an_optional_column(trained, tmp_path):
    data, _ = _new_users_dir(tmp_path, trained)
    assert main(["score", "--model", str(trained["model"]), "--data", str(data), "--out", str(tmp_path / "s"),
                 "--date", "2026-01-02", "--top-k", "3", "--explain", "--no-progress"]) == 0
    recs = pd.read_parquet(tmp_path / "s" / "recommendations" / "date=2026-01-02")
    assert {"score_prior", "score_features", "score_history", "because"} <= set(recs.columns)
    np.testing.assert_allclose(recs["score_prior"] + recs["score_features"] + recs["score_history"], recs["score"],
                               atol=1e-3)
    assert recs["because"].map(len).max() == 3                                   # histories of 3 events, 5 asked


def test_predict_contract(trained, store, tmp_path, caplog):
    data, hist = _new_users_dir(tmp_path, trained)
    pairs = pd.DataFrame({"user_id": [10_001, 10_001, 99_999, 10_002], "item_id": [5, 77_777, 5, 555_555]})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    out = tmp_path / "pred.parquet"
    assert main(["predict", "--model", str(trained["model"]), "--data", str(data), "--pairs",
                 str(tmp_path / "pairs.parquet"), "--out", str(out)]) == 0
    pred = pd.read_parquet(out)
    assert list(pred.columns) == ["user_id", "item_id", "prediction"]
    p = pred["prediction"].to_numpy()
    assert np.isfinite(p[:3]).all() and np.isnan(p[3])                   # unknown item without features
    assert ((p[:3] >= 1) & (p[:3] <= 5)).all()                           # on the rating scale
    assert "1 pairs are on items the model has never seen" in caplog.text


@pytest.mark.parametrize("events", ["empty", "absent"])
def test_users_with_no_events_get_features_only_heads_through_the_cli(trained, tmp_path, events, capsys):
    """k = 0: users listed in users.parquet, an empty (or no) interactions.parquet."""
    users = pd.read_parquet(trained["ds"] / "users.parquet").head(6).assign(user_id=lambda d: d["user_id"] + 50_000)
    no_events = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="int64"),
                              "rating": pd.Series(dtype="float32"), "timestamp": pd.Series(dtype="int64")})
    data = write_frames(tmp_path / "k0", no_events if events == "empty" else None, users)
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(data), "--top-k", "5",
                 "--out", str(out)]) == 0
    recs = pd.read_parquet(out)
    assert set(recs["user_id"]) == set(users["user_id"]) and (recs.groupby("user_id").size() == 5).all()
    rec = HyperRecommender.load(trained["model"])
    want = rec.recommend(None, k=5, users=users)                               # the library's features-only heads
    pd.testing.assert_frame_equal(recs.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    pairs = pd.DataFrame({"user_id": users["user_id"], "item_id": [1] * len(users)})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    assert main(["predict", "--model", str(trained["model"]), "--data", str(data), "--pairs",
                 str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "pred.parquet")]) == 0
    pred = pd.read_parquet(tmp_path / "pred.parquet")["prediction"].to_numpy()
    np.testing.assert_allclose(pred, rec.predict(None, pairs, users=users), rtol=1e-6)
    assert ((pred >= 1) & (pred <= 5)).all()
    # with neither events nor users there is nobody to serve: the error says how to list them
    empty = write_frames(tmp_path / "nobody", no_events)
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is empty (0 rows)" in err and "list them in users.parquet" in err


def test_model_errors_are_clear(trained, store, tmp_path, capsys):
    data, _ = _new_users_dir(tmp_path, trained)
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(tmp_path / "nope"), "--data", str(data), "--out", str(out)]) == 2
    assert "model not found; pass a model directory" in capsys.readouterr().err
    assert main(["recommend", "--model", "models:/recsys-hyper@nobody", "--data", str(data), "--out", str(out)]) == 2
    assert "cannot be loaded from the MLflow store" in capsys.readouterr().err
    # vocabulary mismatch: string item ids against a model trained on int64 ids
    hist = pd.DataFrame({"user_id": [1, 1], "item_id": ["a", "b"], "rating": [4.0, 5.0],
                         "timestamp": [1_600_000_000, 1_600_000_100]})
    bad = write_frames(tmp_path / "strings", hist)
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(bad), "--out", str(out)]) == 2
    assert "vocabulary mismatch" in capsys.readouterr().err
    # no known item at all
    other = write_frames(tmp_path / "other", hist.assign(item_id=[10_000_001, 10_000_002]))
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(other), "--out", str(out)]) == 2
    assert "none of its 2 item ids is known to the model" in capsys.readouterr().err
    # empty histories file
    empty = write_frames(tmp_path / "empty", hist.iloc[:0].astype({"item_id": "int64"}))
    assert main(["recommend", "--model", str(trained["model"]), "--data", str(empty), "--out", str(out)]) == 2
    assert "is empty (0 rows)" in capsys.readouterr().err
    # pairs without item_id
    pd.DataFrame({"user_id": [1]}).to_parquet(tmp_path / "pairs.parquet")
    assert main(["predict", "--model", str(trained["model"]), "--data", str(data), "--pairs",
                 str(tmp_path / "pairs.parquet"), "--out", str(out)]) == 2
    assert "pairs.parquet: column 'item_id': is missing" in capsys.readouterr().err
    assert not out.exists()


def test_bad_config_is_explained(trained, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("[train]\nepoch = 3\n")
    assert main(["train", "--data", str(trained["ds"]), "--out", str(tmp_path / "m"), "--config",
                 str(tmp_path / "c.toml"), "--no-track"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['epoch']" in err and "known keys: epochs" in err
    (tmp_path / "c.toml").write_text("[train]\nlr = -1.0\n")
    assert main(["train", "--data", str(trained["ds"]), "--out", str(tmp_path / "m"), "--config",
                 str(tmp_path / "c.toml"), "--no-track"]) == 2
    assert "The 'lr' parameter of TrainConfig must be a float in (0, 1,000]. Got -1.0 instead." in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_kill_9_during_training_then_resume_gives_the_same_model(trained, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAST.replace("epochs = 3", "epochs = 6\npatience = 10"))
    base = [sys.executable, "-m", "recsys_hyper.cli", "train", "--data", str(trained["ds"]), "--config", str(cfg),
            "--no-track", "--no-progress"]
    subprocess.run(base + ["--out", str(tmp_path / "straight")], check=True, capture_output=True)

    out = tmp_path / "killed"
    ckpt = tmp_path / ".killed.checkpoints" / "checkpoint.pt"
    proc = subprocess.Popen(base + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and ckpt.exists()
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert done < 5
    subprocess.run(base + ["--out", str(out), "--resume"], check=True, capture_output=True)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
