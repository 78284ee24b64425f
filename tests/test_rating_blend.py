"""The rating's exact special cases: the bias baseline and MF fold-in live inside the model's rating
head, so that a blend weight of 1 gives that baseline's predictions exactly (same training users,
same hyper-parameters) and the weights chosen on validation users leave the ranking untouched."""

from __future__ import annotations

import contextlib

import numpy as np
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
    return MatrixFactorization(dim=chosen["mf_dim"], reg=chosen["mf_reg"], fold_in_reg=chosen["mf_fold_in_reg"],
                               bias_fold_in_reg=chosen["mf_bias_fold_in_reg"], seed=CFG.train.seed)


def _mf_features(chosen):
    return MatrixFactorization(dim=chosen["mf_dim"], reg=chosen["mf_reg"], fold_in_reg=chosen["mf_features_fold_in_reg"],
                               bias_fold_in_reg=chosen["mf_features_bias_fold_in_reg"], use_features=True,
                               seed=CFG.train.seed)


@pytest.mark.parametrize("weights, baseline", [((1, 0, 0), _bias), ((0, 1, 0), _mf), ((0, 0, 1), _mf_features)],
                         ids=["bias", "mf", "mf-features"])
def test_a_weight_of_one_gives_that_baselines_predictions(split, weights, baseline):
    """Each special case, alone, is its baseline fitted on the same training users with the
    hyper-parameters the model chose for it (the features prior reads the users' side features)."""
    model = split["model"]
    assert not model.user_spec_.empty
    reference = baseline(model.tuning_["chosen"]).fit(split["train"], validation_users=split["val"], progress=False)
    with blended(model, *weights):
        got = model.predict(split["support"], split["query"], users=split["users"])
    want = reference.predict(split["support"], split["query"], users=split["users"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


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
    """A blend is kept over a baseline alone only when its gain is larger than one standard error
    of the paired difference over users."""
    from recsys_hyper.numerics.search import within_one_standard_error

    rng = np.random.default_rng(0)
    simple = rng.gamma(5.0, 2.0, size=500)                       # per-user sums of absolute errors
    pairs = 500 * 12
    assert not within_one_standard_error(simple - 0.5, simple, pairs)          # better for every user
    noisy = simple + rng.normal(0.0, 3.0, size=500)
    gain = (simple.sum() - noisy.sum()) / pairs
    se = np.sqrt(500) * np.std(noisy - simple, ddof=1) / pairs
    assert within_one_standard_error(noisy, simple, pairs) == (gain <= se)
    assert within_one_standard_error(noisy - 0.5 * se * pairs / 500, simple, pairs) == (gain + 0.5 * se <= se)
    assert within_one_standard_error(simple + 0.1, simple, pairs)              # worse: the simpler is kept
    assert not within_one_standard_error(noisy - 3 * se * pairs / 500, simple, pairs)


def test_a_baseline_alone_is_kept_where_the_blend_is_not_better_by_a_standard_error():
    """One k's choice: the lowest validation MAE's weights, unless the best case alone is within
    one standard error of it."""
    from recsys_hyper.numerics.search import grid_search
    from recsys_hyper.training.selection import blend_or_alone

    rng = np.random.default_rng(1)
    names, users, pairs = ("bias", "mf"), 300, 300 * 10
    alone_bias = rng.gamma(5.0, 2.0, size=users)                 # per-user sums of absolute errors
    alone_mf = alone_bias + rng.normal(0.2, 1.0, size=users)
    model = alone_bias + rng.normal(0.5, 1.0, size=users)

    def search(per_user):
        return grid_search({"bias": [0.0, 0.5, 1.0], "mf": [0.0, 1.0]},
                           lambda bias, mf: per_user[(bias, mf)].sum() / pairs if (bias, mf) in per_user else float("nan"),
                           "validation MAE", candidates=[{"bias": b, "mf": m} for b, m in per_user])

    def choose(mixed):
        per_user = {(0.0, 0.0): model, (1.0, 0.0): alone_bias, (0.0, 1.0): alone_mf, (0.5, 0.0): mixed}
        return blend_or_alone(search(per_user), names, per_user, pairs)

    assert choose(alone_bias - 0.5) == (0.5, 0.0)                                  # better for every user
    assert choose(alone_bias + rng.normal(-0.02, 2.0, size=users)) == (1.0, 0.0)    # a gain within noise
    assert choose(alone_bias + 0.1) == (1.0, 0.0)                                  # the case alone is best
    assert blend_or_alone(search({(0.0, 0.0): model, (0.5, 0.0): alone_bias}), names, {}, pairs) == (0.5, 0.0)  # none alone


def test_the_chosen_weights_are_the_lowest_mae_or_a_case_alone(split):
    result = split["model"].training_.rating_blend
    for k, weights in result["weights"].items():
        scores = result["scores"][k]
        best = min(scores, key=lambda c: c["score"])
        chosen = [c for c in scores if [c.get(name, 0.0) for name in ("bias", "mf", "mf_features")] == weights]
        assert len(chosen) == 1 and (chosen[0] is best or sorted(weights) == [0.0, 0.0, 1.0])
