"""Defects found by using the tool as a hostile user would: each test failed before its fix.

Data loss (outputs over inputs), silent wrong results (rating scales, feedback kinds), blind
promotion (tracking errors read as "no champion"), duplicated work after a crash, long hangs on
an unreachable tracking server, and tracebacks where a clear error is due."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recsys_hyper import HyperRecommender, RecsysHyperError
from recsys_hyper.cli import main
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.recommender import recommend_grouped

from .conftest import write_frames

def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1, 2: outputs never replace inputs


def test_train_never_writes_over_its_data(trained, tmp_path, capsys):
    data = tmp_path / "ds"
    generate(preset("tiny", n_users=60, seed=3), data)
    before = _snapshot(data)
    for out in (data, data / "model"):
        assert main(["train", "--data", str(data), "--out", str(out), "--config", str(trained / "fast.toml"),
                     "--no-track", "--no-progress"]) == 2
        assert "would replace the data" in capsys.readouterr().err
        assert _snapshot(data) == before


def test_train_refuses_a_non_model_folder_unless_overwrite(trained, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    argv = ["train", "--data", str(trained / "ds"), "--out", str(precious), "--config", str(trained / "fast.toml"),
            "--no-track", "--no-progress"]
    assert main(argv) == 2
    assert "is not a recsys-hyper model directory" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(argv + ["--overwrite"]) == 0
    assert (precious / "model.json").is_file() and not (precious / "notes.txt").exists()


def test_serving_outputs_never_replace_inputs(trained, tmp_path, capsys):
    data = write_frames(tmp_path / "new", pd.read_parquet(trained / "ds" / "interactions.parquet").head(50))
    pd.DataFrame({"user_id": [1], "item_id": [1]}).to_parquet(tmp_path / "pairs.parquet")
    before = _snapshot(tmp_path)
    model = str(trained / "model")
    assert main(["recommend", "--model", model, "--data", str(data), "--out", str(data / "interactions.parquet")]) == 2
    assert "would replace what is being read" in capsys.readouterr().err
    assert main(["predict", "--model", model, "--data", str(data), "--pairs", str(tmp_path / "pairs.parquet"),
                 "--out", str(tmp_path / "pairs.parquet")]) == 2
    assert "would replace what is being read" in capsys.readouterr().err
    assert main(["recommend", "--model", model, "--data", str(data), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


# -- 4: a rating scale or a feedback kind the model was not trained on is refused


def test_scale_and_feedback_mismatch_are_refused_unless_allowed(trained, tmp_path, capsys):
    events = pd.read_parquet(trained / "ds" / "interactions.parquet").head(60)
    model = str(trained / "model")
    out = tmp_path / "recs.parquet"
    hundred = write_frames(tmp_path / "scale100", events.assign(rating=events["rating"] * 20))
    assert main(["recommend", "--model", model, "--data", str(hundred), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "outside the model's training scale [1, 5]" in err and "rescale them" in err
    implicit = write_frames(tmp_path / "implicit", events.drop(columns="rating"))
    assert main(["recommend", "--model", model, "--data", str(implicit), "--out", str(out)]) == 2
    assert "the events are implicit" in capsys.readouterr().err
    assert not out.exists()
    assert main(["recommend", "--model", model, "--data", str(hundred), "--out", str(out),
                 "--allow-rating-mismatch"]) == 0


# -- 5: only "no such alias" means "no champion"


def test_only_a_missing_alias_reads_as_no_champion(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from recsys_hyper import tracking

    def fail(code):
        def raiser(self, name, alias):
            raise MlflowException("boom", error_code=getattr(databricks_pb2, code))
        return raiser

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", fail("RESOURCE_DOES_NOT_EXIST"))
    assert tracking.alias_version("champion") is None
    for code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "PERMISSION_DENIED"):
        monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", fail(code))
        with pytest.raises(RecsysHyperError, match="nothing was decided"):
            tracking.alias_version("champion")


# -- 6: the gate decides on validation users, and does promote a challenger that is not worse


def _metrics(val_mae, val_ndcg, test_mae=0.8, test_ndcg=0.3, champion=(0.8, 0.3, 0.8, 0.3)):
    e = {"challenger_validation_mae": val_mae, "challenger_validation_ndcg@10": val_ndcg,
         "challenger_test_mae": test_mae, "challenger_test_ndcg@10": test_ndcg}
    if champion is not None:
        e.update({"champion_validation_mae": champion[0], "champion_validation_ndcg@10": champion[1],
                  "champion_test_mae": champion[2], "champion_test_ndcg@10": champion[3]})
    return e


def test_gate_decisions():
    from recsys_hyper.jobs.nightly import gate_decision

    assert gate_decision(_metrics(0.9, 0.1, champion=None), 0.005, 0.005)[0]            # no champion yet
    assert gate_decision(_metrics(0.8, 0.3), 0.005, 0.005)[0]                            # equal: promoted
    assert gate_decision(_metrics(0.79, 0.31), 0.005, 0.005)[0]                          # better: promoted
    assert gate_decision(_metrics(0.804, 0.297), 0.005, 0.005)[0]                        # within tolerance
    promoted, reason = gate_decision(_metrics(0.81, 0.3), 0.005, 0.005)
    assert not promoted and "MAE 0.8100 vs 0.8000" in reason and "validation users" in reason
    assert not gate_decision(_metrics(0.8, 0.29), 0.005, 0.005)[0]                       # nDCG worse
    assert gate_decision(_metrics(0.81, 0.29), 0.02, 0.02)[0]                            # --tolerance-* widen it
    assert not gate_decision(_metrics(0.8, 0.3), -0.001, 0.005)[0]                       # and narrow it
    # test users' figures decide nothing: much worse on test, equal on validation -> promoted
    assert gate_decision(_metrics(0.8, 0.3, test_mae=0.95, test_ndcg=0.1), 0.005, 0.005)[0]
    # better on test, worse on validation -> not promoted
    assert not gate_decision(_metrics(0.85, 0.3, test_mae=0.7, test_ndcg=0.5), 0.005, 0.005)[0]


def test_champion_and_challenger_are_measured_on_the_same_users_and_events(trained):
    """Models with different vocabularies: both are measured on the events of items both know."""
    from recsys_hyper.data import load_dataset
    from recsys_hyper.data.dataset import Dataset
    from recsys_hyper.evaluation.runner import measure_models

    ds = load_dataset(trained / "ds")
    a = HyperRecommender.load(trained / "model")
    fewer = ds.interactions[ds.interactions["item_id"] % 4 != 0]             # b never saw a quarter of the items
    b = HyperRecommender(a.config).fit(Dataset(fewer.reset_index(drop=True), ds.users, ds.items), progress=False)
    users = ds.interactions["user_id"].unique()[:80]
    m = measure_models({"a": a, "b": b}, ds, users, (0, 1, 3), min_query=5)
    assert m["a"]["users"] == m["b"]["users"] > 0
    alone = measure_models({"a": a}, ds, users, (0, 1, 3), min_query=5)["a"]
    assert alone["users"] >= m["a"]["users"]


# -- 8: a re-run after a crash duplicates nothing in MLflow


def test_registration_is_idempotent_within_its_run_and_never_takes_another_runs_version(trained, tmp_path,
                                                                                          monkeypatch):
    """A night resumed after a kill between registering and recording it runs in the same step run:
    its version is found, not registered again. Another run with the same night tag (another work
    folder on the same store, or the same night run again on new data) gets a version of its own."""
    from recsys_hyper import tracking

    monkeypatch.chdir(tmp_path)                                      # MLflow's artifact folder lands here
    from recsys_hyper.data.frames import group_histories

    rec = HyperRecommender.load(trained / "model")
    example = group_histories(pd.read_parquet(trained / "ds" / "interactions.parquet").head(20))
    out = recommend_grouped(rec, example)
    mlflow.set_experiment("idempotent")
    tags = {"night": "d1", "work_id": "a"}
    with mlflow.start_run() as run:
        first = tracking.log_pyfunc_model(trained / "model", example, out, version_tags=tags,
                                          reuse_tags=("night", "work_id"))
    with mlflow.start_run(run_id=run.info.run_id):                          # the resumed step run
        again = tracking.log_pyfunc_model(trained / "model", example, out, version_tags=tags,
                                          reuse_tags=("night", "work_id"))
    with mlflow.start_run():                                                # another run, the same tags
        other = tracking.log_pyfunc_model(trained / "model", example, out, version_tags=tags,
                                          reuse_tags=("night", "work_id"))
    assert (first, again, other) == ("1", "1", "2")
    assert len(mlflow.MlflowClient().search_model_versions("name='recsys-hyper'")) == 2


def test_a_resumed_night_ends_runs_its_dead_attempt_left_running():
    from recsys_hyper import tracking

    with tracking.night_run("2026-01-01", "nights") as night:
        pass
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("nights").experiment_id
    orphan = client.create_run(exp, tags={"mlflow.parentRunId": night, "kind": "nightly-step"}).info.run_id
    assert client.get_run(orphan).info.status == "RUNNING"                # as a kill -9 leaves it
    with tracking.night_run("2026-01-01", "nights", run_id=night) as again:
        assert again == night                                              # the parent run is reused
    assert client.get_run(orphan).info.status == "KILLED"
    assert [r.info.run_id for r in client.search_runs([exp]) if "mlflow.parentRunId" not in r.data.tags] == [night]


# -- 9: an unreachable tracking server fails in seconds, with a clear message


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_and_uri_resolution_fail_fast_on_an_unreachable_server(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_dead_port()}")
    t0 = time.time()
    assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                 str(trained / "fast.toml"), "--no-progress"]) == 2
    assert "cannot be reached" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main(["recommend", "--model", "models:/recsys-hyper@champion", "--data", str(trained / "ds"),
                 "--out", str(tmp_path / "r.parquet")]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert time.time() - t0 < 60                                            # not minutes of retries


# -- 10: damaged models and configs give one clear error, not a traceback


@pytest.mark.parametrize("damage, message", [
    (lambda m: (m / "model.pt").write_bytes((m / "model.pt").read_bytes()[:100]), "model.pt: cannot be read"),
    (lambda m: (m / "model.pt").write_bytes(b"garbage"), "model.pt: cannot be read"),
    (lambda m: (m / "model.json").write_text("{not json"), "model.json: is not valid JSON"),
    (lambda m: (m / "item_ids.parquet").unlink(), "item_ids.parquet: file not found"),
    (lambda m: _edit_meta(m, lambda d: d["config"]["model"].update(dim=12)), "do not match"),
    (lambda m: _edit_meta(m, lambda d: d.pop("implicit")), "the key 'implicit' is missing"),
    (lambda m: _edit_meta(m, lambda d: d["config"]["model"].update(init_precision="x")),
     "The 'init_precision' parameter of ModelConfig must be a float"),
    (lambda m: pd.DataFrame({"item_id": [1, 2, 3]}).to_parquet(m / "item_ids.parquet"), "item ids but the weights"),
])
def test_damaged_models_are_explained(trained, tmp_path, capsys, damage, message):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    damage(model)
    assert main(["recommend", "--model", str(model), "--data", str(trained / "ds"), "--out",
                 str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def _edit_meta(model: Path, change) -> None:
    meta = json.loads((model / "model.json").read_text())
    change(meta)
    (model / "model.json").write_text(json.dumps(meta))


def test_wrong_types_in_a_config_file_are_explained(trained, tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[model]\ninit_precision = "x"\n')
    assert main(["train", "--data", str(trained / "ds"), "--out", str(tmp_path / "m"), "--config",
                 str(tmp_path / "c.toml"), "--no-track"]) == 2
    assert "The 'init_precision' parameter of ModelConfig must be a float in (0, 1,000,000]. Got 'x' instead." \
        in capsys.readouterr().err


# -- 11: models resolved from the registry are cached, not copied per call


def test_resolving_a_registered_model_reuses_one_copy(trained, tmp_path, monkeypatch):
    from recsys_hyper import tracking
    from recsys_hyper.data.frames import group_histories

    monkeypatch.setenv("RECSYS_HYPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)                                      # MLflow's artifact folder lands here
    rec = HyperRecommender.load(trained / "model")
    example = group_histories(pd.read_parquet(trained / "ds" / "interactions.parquet").head(20))
    mlflow.set_experiment("cache")
    with mlflow.start_run():
        tracking.log_pyfunc_model(trained / "model", example, recommend_grouped(rec, example), alias="champion")
    first = tracking.resolve_model("models:/recsys-hyper@champion")
    second = tracking.resolve_model("models:/recsys-hyper@champion")
    assert first == second and (first / "model.json").is_file()
    assert len(list((tmp_path / "cache").iterdir())) == 1
    # an MLmodel whose artifact points outside its own folder is refused
    root = next((tmp_path / "cache").iterdir())
    mlmodel = (root / "MLmodel").read_text().replace("path: artifacts/model\n", "path: ../../etc\n")
    (root / "MLmodel").write_text(mlmodel)
    with pytest.raises(RecsysHyperError, match="outside the model's folder"):
        tracking.resolve_model("models:/recsys-hyper@champion")


# -- 12: the dataset digest covers every row


def test_content_digest_sees_every_row():
    from recsys_hyper.data import content_digest

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 1000, 20_000), "item_id": rng.integers(0, 500, 20_000),
                          "rating": rng.integers(1, 6, 20_000).astype("float32"),
                          "timestamp": np.arange(20_000, dtype="int64")})
    changed = frame.copy()
    changed.loc[15_000, "rating"] = 6 - changed.loc[15_000, "rating"]
    assert content_digest(frame) != content_digest(changed)
    assert content_digest(frame) == content_digest(frame.sample(frac=1.0, random_state=1))   # order-free
    same_values = frame.astype({"user_id": "int32", "rating": "float64"})
    assert content_digest(frame) == content_digest(same_values)           # values, not storage types
    assert len(content_digest(frame)) == 32                               # fits MLflow's dataset digest


def test_the_content_digest_is_defined_here_and_stays_the_same():
    """The digest is pinned: a pandas or NumPy upgrade must not change it (the nightly compares
    partitions' digests written on earlier nights; registered versions are traced by it)."""
    from recsys_hyper.data import content_digest

    frame = pd.DataFrame({"user_id": [3, 1, 2], "item_id": ["a", "b", "é"], "rating": [4.0, -0.0, 2.5],
                          "timestamp": [1_700_000_000, 1_700_000_001, 1_700_000_002]})
    assert content_digest(frame) == "a24a0a74cfb85e44c3648b479b95eb5c"
    assert content_digest(frame.assign(rating=[4.0, 0.0, 2.5])) == content_digest(frame)
    assert content_digest(frame.assign(item_id=["a", "b", "e"])) != content_digest(frame)


# -- 3: score checks what recommend checks, streaming


@pytest.mark.parametrize("break_it, message", [
    (lambda e, u: (e.assign(rating=e["rating"].where(e.index % 7 != 3)), u), "missing (null / NaN) values"),
    (lambda e, u: (e.assign(rating=e["rating"].where(e.index != 5, np.inf)), u), "infinite values"),
    (lambda e, u: (e.assign(timestamp=e["timestamp"] * 1000), u), "they look like milliseconds"),
    (lambda e, u: (e.assign(timestamp=e["timestamp"] * 1_000_000), u), "they look like microseconds"),
    (lambda e, u: (e.assign(rating=e["rating"] * 20), u), "outside the model's training scale"),
    (lambda e, u: (e.drop(columns="rating"), u), "the events are implicit"),
    (lambda e, u: (e, u.assign(user_id=u["user_id"].astype(str))), "users.parquet: column 'user_id': has type"),
])
def test_score_validates_values_before_any_work(trained, tmp_path, capsys, break_it, message):
    events = pd.read_parquet(trained / "ds" / "interactions.parquet").head(300).reset_index(drop=True)
    users = pd.read_parquet(trained / "ds" / "users.parquet")
    events, users = break_it(events, users)
    data = write_frames(tmp_path / "data", events, users)
    assert main(["score", "--model", str(trained / "model"), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--date", "2026-11-22", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "recommendations").exists()


def test_streamed_value_problems_count_the_whole_file(tmp_path, monkeypatch):
    """Row numbers and counts are file-wide when the file is read in batches."""
    from recsys_hyper.scoring import batch as batch_module

    events = pd.DataFrame({"user_id": np.arange(50) % 5, "item_id": np.arange(50) % 9 + 1,
                           "rating": np.where(np.arange(50) % 10 == 9, np.nan, 3.0),
                           "timestamp": 1_600_000_000 + np.arange(50)})
    data = write_frames(tmp_path / "d", events)

    class Model:  # a stand-in: the model checks pass, so only the streamed value checks can fail
        item_map_ = None
        rating_range_ = None                                                  # no scale to check

    monkeypatch.setattr(batch_module, "check_item_kind", lambda model, kind, source: None)
    monkeypatch.setattr(batch_module, "check_ratings", lambda model, ratings, source, implicit: [_ for _ in ratings])
    monkeypatch.setattr(batch_module, "check_item_ids", lambda model, ids, source, kind=None: 0)
    old = batch_module.STREAM
    batch_module.STREAM = {**old, "batch_size": 8}                           # several batches
    try:
        with pytest.raises(RecsysHyperError) as info:
            batch_module.check_inputs(Model(), data)
    finally:
        batch_module.STREAM = old
    text = str(info.value)
    assert "has 5 missing (null / NaN) values of 50 rows" in text and "rows 9, 19, 29, 39, 49" in text, text


# -- 13: small things that were wrong


def test_library_figures_leave_the_callers_backend_alone(tmp_path):
    import matplotlib

    from recsys_hyper.data import load_dataset
    from recsys_hyper.evaluation.protocol import Protocol
    from recsys_hyper.evaluation.report import k_curve_figure
    from recsys_hyper.evaluation.runner import evaluate

    generate(preset("tiny", n_users=120, seed=9), tmp_path / "ds")
    result = evaluate(load_dataset(tmp_path / "ds"), Protocol(shots=(0, 1), min_query=5), methods=("popularity",),
                      progress=False)
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        k_curve_figure(result).savefig(tmp_path / "k.png")
        assert matplotlib.get_backend() == "svg"                # the library switched nothing
    finally:
        matplotlib.use(before)
    assert (tmp_path / "k.png").stat().st_size > 0


def test_pairs_with_other_id_types_are_explained(trained, tmp_path, capsys):
    data = write_frames(tmp_path / "d", pd.read_parquet(trained / "ds" / "interactions.parquet").head(30))
    for pairs, column in ((pd.DataFrame({"user_id": ["1"], "item_id": [3]}), "user_id"),
                          (pd.DataFrame({"user_id": [1], "item_id": ["3"]}), "item_id")):
        pairs.to_parquet(tmp_path / "pairs.parquet")
        assert main(["predict", "--model", str(trained / "model"), "--data", str(data), "--pairs",
                     str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "p.parquet")]) == 2
        err = capsys.readouterr().err
        assert f"pairs.parquet: column '{column}': has string ids" in err and "Traceback" not in err, err
