"""The tuned baselines: known answers for EASE's low-rank form and the bias baseline's alternating
fits, and the tuning each records (on validation users only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper.baselines import EASE, BiasBaseline, ItemMean, MatrixFactorization
from recsys_hyper.baselines import ease as ease_module
from recsys_hyper.numerics import item_item
from recsys_hyper.numerics.biases import fit_biases
from recsys_hyper.data import Dataset, Histories, IdMap, load_dataset
from recsys_hyper.data.synthetic import generate, preset


def _histories(X: np.ndarray, ratings: np.ndarray | None = None) -> Histories:
    rows, cols = np.nonzero(X)
    r = np.ones(len(rows), np.float32) if ratings is None else ratings[rows, cols].astype(np.float32)
    frame = pd.DataFrame({"user_id": rows, "item_id": cols, "rating": r, "timestamp": np.arange(len(rows))})
    h, _ = Histories.from_interactions(frame, IdMap(np.arange(X.shape[1])), user_ids=np.arange(X.shape[0]))
    return h


@pytest.mark.parametrize("n_users", [12, 60])            # fewer users than items, and more
@pytest.mark.parametrize("lam", [0.5, 20.0, 1e5])
def test_ease_low_rank_scores_equal_the_closed_form(n_users, lam):
    rng = np.random.default_rng(n_users)
    N = 25
    X = (rng.random((n_users, N)) < 0.3).astype(np.float64)
    P = np.linalg.inv(X.T @ X + lam * np.eye(N))
    B = np.eye(N) - P / np.diag(P)                                  # Steck's B, zero diagonal
    F, sigma = item_item.gram_eigen(_histories(X), N)
    w = sigma / (sigma + lam)
    d = 1.0 - (F * F) @ w
    S = (rng.random((7, N)) < 0.2).astype(np.float64)              # supports of 7 new users
    low_rank = lam * ((torch.from_numpy(S) @ F) * w) @ (F / d.unsqueeze(1)).T
    direct = S @ B
    outside = S == 0                                                # support items are never ranked
    np.testing.assert_allclose(low_rank.numpy()[outside], lam * direct[outside], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rank", [3, 8])
def test_the_low_rank_eigenpairs_are_the_gram_matrix_top_ones(rank):
    """The EASE term's rank-r factors: the top eigenpairs of X^T X (a repeated event once), as a
    dense eigendecomposition gives them, from histories with duplicates and in time order."""
    rng = np.random.default_rng(rank)
    U, N = 400, 40
    taste = rng.integers(0, rank, U)                                   # users of `rank` tastes, plus noise
    liked = rng.random((rank, N)) < 0.4
    X = ((liked[taste] & (rng.random((U, N)) < 0.8)) | (rng.random((U, N)) < 0.03)).astype(np.float64)
    h = _histories(X)
    doubled = Histories(h.user_ids, h.indptr * 2, np.repeat(h.items, 2), np.repeat(h.ratings, 2),
                        np.repeat(h.timestamps, 2))                 # every event twice
    sigma_all, V_all = np.linalg.eigh(X.T @ X)
    top = np.argsort(sigma_all)[::-1][:rank]
    for hist in (h, doubled):
        F, sigma = item_item.gram_eigen(hist, N, rank=rank)
        np.testing.assert_allclose(sigma.numpy(), sigma_all[top], rtol=1e-6)
        # the same subspace: each exact eigenvector is inside span(F)
        np.testing.assert_allclose(np.linalg.norm(F.numpy().T @ V_all[:, top], axis=0), 1.0, atol=1e-5)


def test_bias_fits_converge_to_the_ridge_solution():
    rng = np.random.default_rng(0)
    U, N = 15, 9
    X = rng.random((U, N)) < 0.6
    R = np.where(X, rng.integers(1, 6, size=(U, N)), 0).astype(np.float64)
    h = _histories(X, R)
    mu, b_i, b_u = fit_biases(h, N, item_reg=2.0, user_reg=3.0, iters=300)
    # the same model as one regularised least-squares problem: residual r - mu on [e_i, e_u]
    rows, cols = np.nonzero(X)
    A = np.zeros((len(rows), N + U))
    A[np.arange(len(rows)), cols] = 1.0
    A[np.arange(len(rows)), N + h.user_ids.searchsorted(rows)] = 1.0
    y = R[rows, cols] - mu
    reg = np.diag([2.0] * N + [3.0] * U)
    sol = np.linalg.solve(A.T @ A + reg, A.T @ y)
    np.testing.assert_allclose(b_i, sol[:N], atol=1e-6)
    np.testing.assert_allclose(b_u, sol[N:], atol=1e-6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines") / "ds"
    generate(preset("tiny", n_users=240, seed=13), root)
    ds = load_dataset(root)
    users = ds.interactions["user_id"].unique()
    val = users[:40]
    return ds, val


def test_every_tuned_baseline_records_its_grid_and_choice(data):
    ds, val = data
    for model in (ItemMean(), BiasBaseline(), MatrixFactorization(dim=4, reg=3.0, iters=3), EASE()):
        model.fit(ds, validation_users=val, progress=False)
        t = model.tuning_
        assert t["chosen"] and all(t["chosen"][k] in t["grid"][k] for k in t["chosen"]), (model.name, t)
        best = max if "nDCG" in t["metric"] else min
        assert t["score"] == best(s["score"] for s in t["scores"])


def test_given_parameters_are_not_tuned(data):
    ds, val = data
    model = BiasBaseline(item_reg=7.0, user_reg=2.0).fit(ds, validation_users=val)
    assert not hasattr(model, "tuning_") and float(model.user_shrink_) == 2.0


def test_bias_baseline_at_k0_is_not_the_item_mean(data):
    """Item biases fitted with user biases removed differ from shrunk item means."""
    ds, val = data
    bias = BiasBaseline().fit(ds, validation_users=val)
    mean = ItemMean(shrink=10.0).fit(ds, validation_users=val)
    pairs = ds.interactions.drop_duplicates("item_id").head(50)[["user_id", "item_id"]].assign(user_id=-1)
    assert not np.allclose(bias.predict(None, pairs), mean.predict(None, pairs), atol=1e-3)


def test_ease_extends_its_grid_at_the_winning_edge(data, monkeypatch):
    ds, val = data
    monkeypatch.setattr(ease_module, "LAMBDA_GRID", (1.0, 10.0))
    # a validation score that keeps rising with lambda: the grid must grow past its first edge
    monkeypatch.setattr(ease_module, "mean_ndcg", lambda view, *a, **k: float(view.model.weights_.sum()))
    model = EASE().fit(ds, validation_users=val)
    assert model.tuning_["chosen"]["lam"] > 10.0
    assert max(model.tuning_["grid"]["lam"]) > 10.0


def test_ease_without_events_ranks_by_popularity(data):
    ds, val = data
    model = EASE().fit(ds, validation_users=val)
    recs = model.recommend(None, k=5, users=pd.DataFrame({"user_id": [-7]}))
    train = ds.interactions[~ds.interactions["user_id"].isin(val)]
    assert recs["item_id"].tolist() == train["item_id"].value_counts().index[:5].tolist()


def test_ease_through_predict_is_the_item_mean(data):
    ds, val = data
    model = EASE().fit(ds, validation_users=val)
    pairs = ds.interactions.head(10)[["user_id", "item_id"]]
    item_mean = ItemMean(shrink=10.0).fit(Dataset(ds.interactions[~ds.interactions["user_id"].isin(val)],
                                                  ds.users, ds.items))
    np.testing.assert_allclose(model.predict(None, pairs), item_mean.predict(None, pairs), rtol=1e-5)
