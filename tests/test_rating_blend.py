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
