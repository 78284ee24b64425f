"""The cold-start protocol, its metrics (checked against scikit-learn) and its MLflow run layout."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score

from recsys_hyper.cli import main
from recsys_hyper.data import load_dataset
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.numerics.metrics import ndcg_at_k, ndcg_graded, per_user_errors, recall_at_k
from recsys_hyper.evaluation.protocol import TEST, Protocol, split_users, training_dataset
from recsys_hyper.evaluation.runner import measure, evaluate

# -- metrics


def test_ndcg_at_k_matches_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 60))
    relevant = rng.random((40, 60)) < 0.1
    relevant[0] = False                                      # a user with nothing relevant
    ours = ndcg_at_k(torch.from_numpy(scores), torch.from_numpy(relevant), 10).numpy()
    for u in range(1, 40):
        assert ours[u] == pytest.approx(ndcg_score(relevant[u:u + 1].astype(float), scores[u:u + 1], k=10), abs=1e-6)
    assert ours[0] == 0.0


def test_ndcg_graded_matches_sklearn_with_exponential_gains():
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(25), rng.integers(3, 15, size=25))
    true = rng.integers(1, 6, size=owner.size).astype(float)
    pred = rng.normal(size=owner.size)
    ours = ndcg_graded(pred, true, owner, 25, k=3)
    for u in range(25):
        sel = owner == u
        ref = ndcg_score((2.0 ** true[sel] - 1)[None], pred[sel][None], k=3)
        assert ours[u] == pytest.approx(ref, abs=1e-9)


def test_recall_and_errors_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.1, 0.2, 0.3, 0.4]])
    relevant = torch.tensor([[True, False, True, False], [False, False, False, False]])
    np.testing.assert_allclose(recall_at_k(scores, relevant, 2).numpy(), [0.5, 0.0])
    mae, rmse = per_user_errors(np.array([1.0, 3.0, 2.0]), np.array([2.0, 3.0, 5.0]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(mae, [0.5, 3.0])
    np.testing.assert_allclose(rmse, [np.sqrt(0.5), 3.0])


# -- protocol


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "ds"
    generate(preset("tiny", n_users=250, seed=4), root)
    return load_dataset(root)


def test_split_is_deterministic_and_test_users_never_train(ds):
    a, b, c = split_users(ds, Protocol(seed=3)), split_users(ds, Protocol(seed=3)), split_users(ds, Protocol(seed=4))
    assert a.digest == b.digest and a.digest != c.digest
    assert pd.testing.assert_frame_equal(a.table, b.table) is None
    assert set(a.table["split"]) == {"train", "validation", "test"}
    train = training_dataset(ds, a)
    assert not train.interactions["user_id"].isin(a.users(TEST)).any()
    assert len(a.users(TEST)) == round(0.2 * ds.interactions["user_id"].nunique())


def test_users_the_split_leaves_out_are_never_learned_from(ds):
    """A capped evaluation drops test users from the split (the nightly's): they are neither
    evaluated nor in the training data."""
    from recsys_hyper.evaluation.protocol import Split

    full = split_users(ds, Protocol(seed=3))
    dropped = full.users(TEST)[: len(full.users(TEST)) // 2]
    capped = Split(full.table[~full.table["user_id"].isin(dropped)].reset_index(drop=True))
    learned = training_dataset(ds, capped).interactions["user_id"]
    assert not learned.isin(dropped).any() and not learned.isin(capped.users(TEST)).any()
    assert set(learned) == set(capped.users("train")) | set(capped.users("validation"))


class _Cheater:
    """Puts each user's support items first and the relevant query items next: if support items
    were ever scored as candidates, its Recall@10 would fall below the ideal."""

    rating_range, implicit = (1.0, 5.0), False

    def __init__(self, sup, qry, n_items):
        self.sup, self.qry, self.n = sup, qry, n_items

    def adapt(self, h, **kw):
        np.testing.assert_array_equal(h.items, self.sup.items)   # the model sees only the support set
        return h

    def rate(self, heads, rows, items):
        return torch.from_numpy(self.qry.ratings.astype(np.float32))       # the truth

    def rank(self, heads, rows):
        s = torch.zeros(len(rows), self.n)
        for j, r in enumerate(rows):
            s[j, torch.from_numpy(self.qry.user(r)[0])] = torch.from_numpy(self.qry.user(r)[1]).float()
            s[j, torch.from_numpy(self.sup.user(r)[0])] = 100.0
        return s


def test_support_items_never_in_query_nor_among_scored_candidates(ds):
    from recsys_hyper.data import Histories, IdMap, chronological_split

    p = Protocol(shots=(5,), min_query=10)
    items = IdMap.from_values(ds.item_ids())
    h, _ = Histories.from_interactions(ds.interactions, items)
    h = h.select(np.flatnonzero(h.lengths >= 15))
    sup, qry = chronological_split(h, 5, min_query=10)
    for u in range(len(sup)):
        assert not set(sup.user(u)[0]) & set(qry.user(u)[0])
    metrics, users, _ = measure(_Cheater(sup, qry, len(items)), {}, sup, qry, p)
    assert metrics["mae"] == 0.0 and metrics["ndcg@3"] == pytest.approx(1.0)
    ideal = np.minimum(10, users["n_relevant"]) / users["n_relevant"]
    ranked = users["n_relevant"] > 0
    np.testing.assert_allclose(users.loc[ranked, "recall@10"], ideal[ranked])
    np.testing.assert_allclose(users.loc[ranked, "ndcg@10"], 1.0, rtol=1e-6)


def test_every_k_uses_the_same_eligible_users(ds):
    r = evaluate(ds, Protocol(shots=(0, 2, 4), min_query=5), methods=("popularity", "bias"), progress=False)
    counts = r.per_user.groupby(["method", "k"])["user_id"].apply(frozenset)
    assert len(set(counts)) == 1 and len(next(iter(counts))) == r.n_eligible
    assert set(r.table["k"]) == {0, 2, 4} and (r.table["users"] == r.n_eligible).all()
    bias = r.table[r.table["method"] == "bias"].set_index("k")["mae"]
    assert bias[4] < bias[0]                                 # the bias fold-in uses the support set


def test_own_validation_fits_a_method_as_train_does_and_the_others_on_the_split(ds):
    """``own_validation``: the named method gets no validation users (it picks its own among the
    training users, as ``train`` does); the others are still handed the split's."""
    p = Protocol(shots=(0, 2), min_query=5)
    r = evaluate(ds, p, methods=("bias", "hyper"), progress=False, own_validation=("hyper",),
                 model_config=_tiny_config())
    split = split_users(ds, p)
    hyper = r.fitted["hyper"]
    n_train = training_dataset(ds, split).interactions["user_id"].nunique()
    assert hyper.n_train_users_ + hyper.n_val_users_ == n_train
    assert hyper.n_val_users_ == round(hyper.config.train.val_fraction * n_train)
    assert hyper.n_val_users_ != len(split.users("validation"))      # not the split's validation users
    handed = evaluate(ds, p, methods=("hyper",), progress=False, model_config=_tiny_config()).fitted["hyper"]
    assert handed.n_val_users_ == len(split.users("validation"))


def test_interval_coverage_is_measured_on_the_intervals_predict_interval_gives(ds):
    """The protocol's coverage of the prediction intervals (the emitted heads only: a fine-tuned
    head is not what they were calibrated on) is the share of the query ratings inside the very
    intervals ``predict_interval`` gives the same users from the same support events."""
    from recsys_hyper.data.episodes import chronological_split

    p = Protocol(shots=(0, 3), min_query=5)
    r = evaluate(ds, p, methods=("bias", "hyper", "hyper-finetune", "hyper-thompson"), progress=False,
                 model_config=_tiny_config())
    c = r.coverage
    assert set(c["method"]) == {"hyper"} and set(c["k"]) == {0, 3} and {0.5, 0.8, 0.9} <= set(c["level"])
    assert r.table["catalogue@10"].between(0, 1).all()
    assert (c["pairs"] > 0).all() and c.groupby("k")["covered"].is_monotonic_increasing.all()
    table = r.table.set_index(["method", "k"])
    assert np.isnan(table.loc[("bias", 3), "coverage@90"]) and np.isnan(table.loc[("hyper-finetune", 3), "coverage@90"])

    for k in (0, 3):
        sup, qry = chronological_split(r.test_histories, k, min_query=p.min_query)
        query = qry.frame(r.item_ids)
        out = r.fitted["hyper"].predict_interval(sup.frame(r.item_ids), query[["user_id", "item_id"]], level=0.8, users=ds.users)
        inside = ((out["lower"] <= query["rating"] + 1e-6) & (query["rating"] <= out["upper"] + 1e-6)).mean()
        row = c[(c["k"] == k) & (c["level"] == 0.8)].iloc[0]
        assert row["covered"] == pytest.approx(inside, abs=1e-9) and row["pairs"] == len(query)
        assert table.loc[("hyper", k), "coverage@80"] == pytest.approx(inside, abs=1e-9)


def _tiny_config():
    from recsys_hyper import Config, ModelConfig, TrainConfig

    return Config(model=ModelConfig(dim=8, hidden=16, z_dim=16), train=TrainConfig(epochs=1, batch_users=64, k_max=5))


# -- the job: outputs and MLflow layout


def test_evaluate_command_writes_outputs_and_the_mlflow_layout(ds, tmp_path, monkeypatch, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast.toml").write_text("[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 2\nk_max = 5\n")
    out = tmp_path / "eval"
    argv = ["evaluate", "--data", ds.source, "--methods", "popularity", "bias", "hyper", "--shots", "0", "1", "3",
            "--config", str(tmp_path / "fast.toml"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method | k | MAE |" in printed and "| hyper | 3 |" in printed
    assert "Prediction intervals" in printed and "| 90% covered | width |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["coverage.parquet", "example_user.parquet", "heads.parquet",
                                                      "k_curve.png", "per_user.parquet", "reliability.png",
                                                      "results.json", "results.md", "split.parquet"]
    assert "Prediction intervals" in (out / "results.md").read_text()
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["results"]) == 9 and summary["protocol"]["shots"] == [0, 1, 3]

    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("recsys-hyper-cold-start")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "cold-start-evaluation"]
    children = [r for r in runs if r.data.tags.get("kind") == "cold-start-result"]
    assert len(parents) == 1 and len(children) == 9
    parent = parents[0]
    assert parent.data.params["split_digest"] == summary["split_digest"]
    # lineage: the evaluated data as the run's input, with the one content digest, and the code version
    (data_input,) = parent.inputs.dataset_inputs
    assert data_input.dataset.digest == parent.data.tags["data_digest"] and len(parent.data.tags["data_digest"]) == 32
    assert [t.value for t in data_input.tags if t.key == "mlflow.data.context"] == ["evaluation"]
    assert parent.data.tags["code_version"].startswith("0.")
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {(c.data.tags["method"], c.data.tags["k"]) for c in children} == {
        (m, k) for m in ("popularity", "bias", "hyper") for k in ("0", "1", "3")}
    assert {"mae", "rmse", "ndcg_at_3", "recall_at_10", "ndcg_at_10", "adapt_ms_per_user"} <= set(children[0].data.metrics)
    assert all({"coverage_at_50", "coverage_at_90"} <= set(c.data.metrics) for c in children
               if c.data.tags["method"] == "hyper")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"k_curve.png", "cold_start_results.json", "results.md", "split.parquet", "per_user.parquet",
            "heads.parquet", "example_user.parquet", "coverage.parquet", "reliability.png"} <= artifacts
