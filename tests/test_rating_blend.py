"""The rating's exact special cases: the bias baseline and MF fold-in live inside the model's rating
head, so that a blend weight of 1 gives that baseline's predictions exactly (same training data,
same hyper-parameters, on users never seen, through the library and through the command line), and
the blend leaves the ranking untouched; how the blend is chosen (cross-fitted weights for the
special cases, the network's share on validation users, smooth and monotone in k)."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig
from recsys_hyper.baselines.mf import MatrixFactorization
from recsys_hyper.baselines.simple import BiasBaseline
from recsys_hyper.data import load_dataset
from recsys_hyper.data.dataset import Dataset
from recsys_hyper.data.synthetic import generate, preset

CFG = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16),
             train=TrainConfig(epochs=2, batch_users=32, k_max=10, seed=3))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("blend") / "ds"
    generate(preset("tiny", n_users=300, n_items=150, seed=4), root)
    ds = load_dataset(root)
    users = ds.users["user_id"].to_numpy()
    new = users[-40:]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new)].reset_index(drop=True),
                    ds.users[~ds.users["user_id"].isin(new)], ds.items)
    events = ds.interactions[ds.interactions["user_id"].isin(new)].sort_values(["user_id", "timestamp", "item_id"])
    pos = events.groupby("user_id").cumcount()
    size = events.groupby("user_id")["item_id"].transform("size")
    # supports of 0 to 12 events (k cycles over the users), the rest queried
    k = events["user_id"].map({u: i % 13 for i, u in enumerate(new)})
    support, query = events[(pos < k) & (pos < size - 1)], events[(pos >= k) | (pos == size - 1)]
    val = users[:-40][-60:]
    model = HyperRecommender(CFG).fit(train, validation_users=val, progress=False)
    return {"train": train, "val": val, "support": support, "query": query, "model": model,
            "users": ds.users[ds.users["user_id"].isin(new)]}


@contextlib.contextmanager
def blended(model: HyperRecommender, bias: float, mf: float, mf_features: float = 0.0):
    """The model with these blend weights at every k, restored afterwards."""
    before = model.model_.rating_blend.clone()
    model.model_.rating_blend[:] = torch.tensor([bias, mf, mf_features])
    model._cache = {}
    try:
        yield model
    finally:
        model.model_.rating_blend.copy_(before)
        model._cache = {}


def _bias(chosen):
    return BiasBaseline(item_reg=chosen["item_reg"], user_reg=chosen["user_reg"])


def _mf(chosen):
    return MatrixFactorization(dim=chosen["mf_dim"], reg=chosen["mf_reg"], reg_per_event=chosen["mf_reg_per_event"],
                               fold_in_reg=chosen["mf_fold_in_reg"], bias_fold_in_reg=chosen["mf_bias_fold_in_reg"],
                               seed=CFG.train.seed)


def _mf_features(chosen):
    return MatrixFactorization(dim=chosen["mf_dim"], reg=chosen["mf_reg"], reg_per_event=chosen["mf_reg_per_event"],
                               fold_in_reg=chosen["mf_features_fold_in_reg"],
                               bias_fold_in_reg=chosen["mf_features_bias_fold_in_reg"], use_features=True,
                               seed=CFG.train.seed)


CASES = [((1, 0, 0), _bias), ((0, 1, 0), _mf), ((0, 0, 1), _mf_features)]


@pytest.mark.parametrize("weights, baseline", CASES, ids=["bias", "mf", "mf-features"])
def test_a_weight_of_one_gives_that_baselines_predictions(split, weights, baseline):
    """Each special case, alone, is its baseline fitted on the same training data (every training
    user, the model's validation users included) with the hyper-parameters the model chose for it
    (the features prior reads the users' side features), on users neither ever saw."""
    model = split["model"]
    assert not model.user_spec_.empty
    reference = baseline(model.tuning_["chosen"]).fit(split["train"], progress=False)
    with blended(model, *weights):
        got = model.predict(split["support"], split["query"], users=split["users"])
    want = reference.predict(split["support"], split["query"], users=split["users"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def cli_split(tmp_path_factory):
    """A model trained through the command line on the training users of a user split (users 80 /
    20), and the held-out users' first k events (k = 0 .. 12) in a data folder, with their other
    events as the pairs to predict: the path a user takes."""
    from recsys_hyper.cli import main
    from recsys_hyper.data.dataset import write_dataset

    root = tmp_path_factory.mktemp("cli-blend")
    generate(preset("tiny", n_users=300, n_items=150, seed=5), root / "all")
    ds = load_dataset(root / "all")
    users = ds.users["user_id"].to_numpy()
    new = np.random.default_rng(0).permutation(users)[:60]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new)].reset_index(drop=True),
                    ds.users[~ds.users["user_id"].isin(new)].reset_index(drop=True), ds.items)
    write_dataset(train, root / "train")
    events = ds.interactions[ds.interactions["user_id"].isin(new)].sort_values(["user_id", "timestamp", "item_id"])
    pos = events.groupby("user_id").cumcount()
    k = events["user_id"].map({u: i % 13 for i, u in enumerate(new)})
    support, query = events[pos < k], events[pos >= k]
    new_users = ds.users[ds.users["user_id"].isin(new)].reset_index(drop=True)
    write_dataset(Dataset(support.reset_index(drop=True), new_users, ds.items), root / "new", overwrite=True)
    query[["user_id", "item_id"]].to_parquet(root / "pairs.parquet", index=False)
    (root / "config.toml").write_text(
        "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 2\nbatch_users = 32\nk_max = 10\n")
    assert main(["train", "--data", str(root / "train"), "--out", str(root / "model"), "--config",
                 str(root / "config.toml"), "--seed", "3", "--no-track", "--no-progress"]) == 0
    return {"root": root, "train": load_dataset(root / "train"), "support": support, "query": query,
            "users": new_users}


@pytest.mark.parametrize("weights, baseline", CASES, ids=["bias", "mf", "mf-features"])
def test_through_the_command_line_a_weight_of_one_is_that_baseline_on_users_never_seen(cli_split, weights, baseline,
                                                                                         tmp_path):
    """``recsys-hyper train`` then ``recsys-hyper predict`` for held-out users, with a weight of 1 on
    one special case, gives that baseline's predictions (the library's, fitted on the same training
    folder with the hyper-parameters in model.json) to 1e-5."""
    from recsys_hyper.cli import main

    root = cli_split["root"]
    model = HyperRecommender.load(root / "model")
    model.model_.rating_blend[:] = torch.tensor(weights, dtype=torch.float32)
    model.save(tmp_path / "model")
    assert main(["predict", "--model", str(tmp_path / "model"), "--data", str(root / "new"), "--pairs",
                 str(root / "pairs.parquet"), "--out", str(tmp_path / "pred.parquet")]) == 0
    got = pd.read_parquet(tmp_path / "pred.parquet")
    reference = baseline(model.tuning_["chosen"]).fit(cli_split["train"], progress=False)
    want = reference.predict(cli_split["support"], got[["user_id", "item_id"]], users=cli_split["users"])
    assert len(got) == len(cli_split["query"])
    np.testing.assert_allclose(got["prediction"].to_numpy(), want, rtol=0, atol=1e-5)


def test_the_blend_changes_ratings_but_never_the_ranking(split):
    model = split["model"]
    with blended(model, 0.0, 0.0):
        alone = model.predict(split["support"], split["query"], users=split["users"])
        recs_alone = model.recommend(split["support"], k=10, users=split["users"])
    with blended(model, 0.25, 0.25, 0.25):
        mixed = model.predict(split["support"], split["query"], users=split["users"])
        recs_mixed = model.recommend(split["support"], k=10, users=split["users"])
    assert np.abs(alone - mixed).max() > 1e-3
    assert recs_alone[["user_id", "item_id"]].equals(recs_mixed[["user_id", "item_id"]])
    np.testing.assert_allclose(recs_alone["score"], recs_mixed["score"], atol=1e-5)


def test_the_chosen_blend_is_recorded_and_saved(split, tmp_path):
    model = split["model"]
    chosen = model.tuning_["chosen"]["rating_blend"]
    assert chosen and all(min(w.values()) >= 0 and sum(w.values()) <= 1 + 1e-9 for w in chosen.values())
    model.save(tmp_path / "m")
    again = HyperRecommender.load(tmp_path / "m")
    assert torch.equal(again.model_.rating_blend, model.model_.rating_blend)
    np.testing.assert_allclose(again.predict(split["support"], split["query"]),
                               model.predict(split["support"], split["query"]), atol=1e-6)


def test_the_one_standard_error_rule():
    """A candidate is preferred to the simpler one only when its mean gain over users is larger than
    one standard error of the paired per-user difference."""
    from recsys_hyper.numerics.search import within_one_standard_error

    rng = np.random.default_rng(0)
    simple = rng.gamma(5.0, 0.15, size=500)                     # per-user MAE
    assert not within_one_standard_error(simple - 0.05, simple)                 # better for every user
    noisy = simple + rng.normal(0.0, 0.2, size=500)
    gain, se = (simple - noisy).mean(), np.std(noisy - simple, ddof=1) / np.sqrt(500)
    assert within_one_standard_error(noisy, simple) == (gain <= se)
    assert within_one_standard_error(noisy - 0.5 * se, simple) == (gain + 0.5 * se <= se)
    assert not within_one_standard_error(noisy - (se - gain) - 1e-3, simple)
    assert within_one_standard_error(simple + 0.01, simple)                     # worse: the simpler is kept
    nan = simple.copy()
    nan[:10] = np.nan                                                            # users without pairs: left out
    assert not within_one_standard_error(nan - 0.05, simple)


def _predictions(offset: np.ndarray, actual: float = 3.0):
    """Predictions of 2 models for ``len(offset)`` users with one pair each, the first model exact and the
    second off by the given per-user amount: a blend ``(1 - a, a)`` errs by ``a`` times it."""
    from recsys_hyper.numerics.crossfit import Predictions

    n = len(offset)
    parts = np.stack([np.full(n, actual), actual + offset])
    return Predictions(parts, np.full(n, actual), np.arange(n), n)


def test_choose_weights_keeps_the_simpler_blend_unless_the_gain_is_clear():
    from recsys_hyper.numerics.crossfit import Predictions, choose_weights

    rng = np.random.default_rng(3)
    n, candidates = 400, [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    base = rng.gamma(4.0, 0.2, size=n)
    # model 0 errs by base, model 1 by base - gain: gain clear (every user) or noise (around zero)
    for gain, expected in ((0.1 * np.ones(n), (0.0, 1.0)), (rng.normal(0.0, 0.5, size=n), (1.0, 0.0))):
        p = Predictions(np.stack([3.0 + base, 3.0 + base - gain]), np.full(n, 3.0), np.arange(n), n)
        choice = choose_weights({1: p}, candidates, (1.0, 5.0), simpler=(1.0, 0.0))
        assert choice.weights[1] == expected


def test_choose_weights_one_more_rating_never_hurts_where_a_candidate_allows():
    """A size whose best candidate scores worse than the previous size's choice takes the best one
    that does not; with no such candidate, its best."""
    from recsys_hyper.numerics.crossfit import choose_weights

    n, candidates = 50, [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    # the blend (1 - a, a) errs by a times the second model's offset: 0.4 at k = 1, none at k = 3
    ones = np.ones(n)
    preds = {1: _predictions(0.4 * ones), 3: _predictions(0.0 * ones)}
    assert choose_weights(preds, candidates, None).weights == {1: (1.0, 0.0), 3: (1.0, 0.0)}
    # at k=3 the first model errs by 0.5 everywhere: best is (0, 1) (error 0.3) but k=1 scored 0
    from recsys_hyper.numerics.crossfit import Predictions

    p3 = Predictions(np.stack([np.full(n, 3.5), np.full(n, 3.3)]), np.full(n, 3.0), np.arange(n), n)
    choice = choose_weights({1: preds[1], 3: p3}, candidates, None)
    assert choice.weights[3] == (0.0, 1.0)                # no candidate reaches 0: the best one
    p3b = Predictions(np.stack([np.full(n, 3.0), np.full(n, 3.0) + 0.01]), np.full(n, 3.0), np.arange(n), n)
    p1b = Predictions(np.stack([np.full(n, 3.2), np.full(n, 3.0)]), np.full(n, 3.0), np.arange(n), n)
    shared = choose_weights({1: p1b, 3: p3b}, candidates, None, shared=lambda k: 0)
    # one shared choice would be (0, 1) (mean 0.005 vs 0.1); at k=3 it scores 0.01 > k=1's 0: k=3 moves
    assert shared.weights[1] == (0.0, 1.0) and shared.weights[3] == (1.0, 0.0)


def test_the_models_blend_is_smooth_in_k_and_its_parts_are_recorded(split):
    """The special cases' own weights (cross-fitted) sum to 1 per k; the network keeps one share for
    users without events and one for every k >= 1; the table the model serves from is linear in k
    between the validated sizes."""
    from recsys_hyper.networks.hyper import BLEND

    model = split["model"]
    chosen = model.tuning_["chosen"]
    cases = chosen["special_cases_blend"]
    assert all(abs(sum(w.values()) - 1) < 1e-9 for w in cases.values())
    network = {int(k): v for k, v in chosen["rating_blend_network"].items()}
    ks = sorted(network)
    table = model.model_.rating_blend.numpy()
    for k in ks:
        expected = [(1 - network[k]) * cases[str(k)][name] for name in BLEND]
        np.testing.assert_allclose(table[k], expected, atol=1e-6)
    for a, b in zip(ks, ks[1:]):
        for j in range(b - a + 1):
            np.testing.assert_allclose(table[a + j], table[a] + (table[b] - table[a]) * j / (b - a), atol=1e-6)
    np.testing.assert_allclose(table[ks[-1]:], np.broadcast_to(table[ks[-1]], table[ks[-1]:].shape), atol=1e-6)
    scores = model.training_.rating_blend["scores"]
    for a, b in zip(ks, ks[1:]):                    # one more rating never hurts, where a share allows
        prev = scores[a][f"{network[a]:g}"]
        assert scores[b][f"{network[b]:g}"] <= prev + 1e-9 or min(scores[b].values()) > prev
