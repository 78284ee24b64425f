"""One contract, one suite: every recommender (the hypernetwork and each baseline) must pass it.

A new model's entry only says how to build it (cf. implicit's recommender_base_test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper.baselines import EASE, BiasBaseline, ItemMean, MatrixFactorization, MeLU, Popularity
from recsys_hyper.data import Histories, load_dataset
from recsys_hyper.data.dataset import Dataset
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.errors import NotFittedError
from recsys_hyper.recommender import fitted_tensors, indexed
from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig

BUILDERS = {
    "popularity": Popularity,
    "item-mean": ItemMean,
    "bias": BiasBaseline,
    "mf": lambda: MatrixFactorization(dim=8, reg=3.0, iters=4),
    "mf-features": lambda: MatrixFactorization(dim=8, reg=3.0, iters=4, use_features=True),
    "ease": EASE,
    "melu": lambda: MeLU(emb=8, hidden=16, epochs=2, local_steps=2),
    "hyper": lambda: HyperRecommender(Config(model=ModelConfig(dim=8, hidden=16, z_dim=16),
                                             train=TrainConfig(epochs=2, k_max=5))),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract") / "ds"
    generate(preset("tiny", n_users=160, seed=3), root)
    ds = load_dataset(root)
    new = ds.users["user_id"].to_numpy()[-20:]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new)].reset_index(drop=True), ds.users, ds.items)
    events = ds.interactions[ds.interactions["user_id"].isin(new)]
    support = events.sort_values(["user_id", "timestamp"]).groupby("user_id").head(3)
    query = events.drop(support.index)
    val = ds.users["user_id"].to_numpy()[:20]
    return {"train": train, "support": support, "query": query, "users": ds.users[ds.users["user_id"].isin(new)],
            "val": val}


@pytest.fixture(scope="module", params=list(BUILDERS))
def fitted(request, data):
    model = BUILDERS[request.param]()
    assert model.fit(data["train"], validation_users=data["val"], progress=False) is model   # fit returns self
    return model


def _tensors(model) -> dict:
    return {k: v.clone() for k, v in fitted_tensors(model).items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_unfitted_models_say_so(name):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        BUILDERS[name]().recommend(None, k=3)


def test_adapt_predict_recommend_never_mutate(fitted, data):
    before = _tensors(fitted)
    heads = fitted.adapt(data["support"], data["users"])
    fitted.predict(data["support"], data["query"], heads=heads)
    fitted.recommend(data["support"], k=5, heads=heads)
    after = _tensors(fitted)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_predictions_are_on_the_rating_scale(fitted, data):
    pred = fitted.predict(data["support"], data["query"], users=data["users"])
    assert pred.shape == (len(data["query"]),) and np.isfinite(pred).all()
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    # the scale is the training data's, and predict clips the model's raw output to exactly it
    r = data["train"].interactions["rating"]
    assert fitted.rating_range_ == (float(r.min()), float(r.max()))
    heads = fitted.adapt(data["support"], data["users"], user_ids=data["query"]["user_id"].unique())
    rows = torch.from_numpy(pd.Index(heads.user_ids).get_indexer(data["query"]["user_id"]))
    raw = indexed(fitted).rate(heads, rows, torch.from_numpy(fitted.item_map_.index(data["query"]["item_id"].to_numpy())))
    np.testing.assert_allclose(pred, np.clip(raw.numpy(), *fitted.rating_range_), rtol=1e-5, atol=1e-5)
    unknown = pd.DataFrame({"user_id": [data["query"]["user_id"].iloc[0]], "item_id": [987_654]})
    assert np.isnan(fitted.predict(data["support"], unknown)).all()


def test_recommend_contract(fitted, data):
    extra_user = data["train"].users.iloc[[0]].assign(user_id=555_555)       # features only, no history
    recs = fitted.recommend(data["support"], k=6, users=pd.concat([data["users"], extra_user]))
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank"]
    assert set(recs["user_id"]) == set(data["support"]["user_id"]) | {555_555}
    assert (recs.groupby("user_id")["rank"].apply(list).map(lambda r: r == list(range(1, 7)))).all()
    assert (recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    seen = set(map(tuple, data["support"][["user_id", "item_id"]].to_numpy()))
    assert not any((u, i) in seen for u, i in recs[["user_id", "item_id"]].to_numpy())
    allowed = fitted.recommend(data["support"], k=50, items=[1, 2, 3, 4, 5])
    assert set(allowed["item_id"]) <= {1, 2, 3, 4, 5}


def test_catalogue_scores_agree_with_recommend(fitted, data):
    h = Histories.from_interactions(data["support"], fitted.item_map_)[0]
    view = indexed(fitted, data["users"])
    heads = view.adapt(h)
    scores = view.rank(heads, np.arange(len(h)))
    assert scores.shape == (len(h), len(fitted.item_map_))
    recs = fitted.recommend(data["support"], k=1, heads=heads)
    first = scores.clone()
    owner = np.repeat(np.arange(len(h)), h.lengths)
    first[torch.from_numpy(owner), torch.from_numpy(h.items)] = float("-inf")
    best = fitted.item_map_.ids(first.argmax(1).numpy())
    got = recs.set_index("user_id").loc[h.user_ids, "item_id"].to_numpy()
    np.testing.assert_array_equal(got, best)


def test_save_load_round_trip(fitted, data, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = type(fitted).load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(data["support"], data["query"], users=data["users"]),
                               fitted.predict(data["support"], data["query"], users=data["users"]), rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.recommend(data["support"], k=5, users=data["users"]),
                                  fitted.recommend(data["support"], k=5, users=data["users"]))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_method_runs_on_item_ids_alone(name, data):
    """No item or user features at all (the data contract allows it): fit, validate, predict and
    recommend still work, and predictions stay on the scale."""
    train = Dataset(data["train"].interactions, None, None)
    model = BUILDERS[name]().fit(train, validation_users=data["val"], progress=False)
    support = data["support"][data["support"]["item_id"].isin(train.interactions["item_id"])]
    query = data["query"][data["query"]["item_id"].isin(train.interactions["item_id"])]
    pred = model.predict(support, query)
    assert pred.shape == (len(query),) and np.isfinite(pred).all()
    r = train.interactions["rating"]
    assert pred.min() >= r.min() and pred.max() <= r.max()
    recs = model.recommend(support, k=5)
    assert set(recs["user_id"]) == set(support["user_id"]) and (recs.groupby("user_id").size() == 5).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_hyper_parameters_are_the_constructors_keyword_arguments(name, data):
    """One convention for every method (scikit-learn's): ``get_params`` gives the constructor's
    keyword arguments, a model built from them has the same, ``set_params`` sets them by name (for
    the next fit) and refuses unknown names; fitting leaves them as given (choices made on
    validation users are recorded in ``tuning_``, never written back)."""
    model = BUILDERS[name]()
    params = model.get_params()
    assert type(model)(**params).get_params() == params               # (popularity has none)
    assert model.set_params(**params) is model and model.get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(no_such_parameter=1)
    if name in ("item-mean", "bias"):                   # tuned on validation users, quickly
        model.fit(data["train"], validation_users=data["val"], progress=False)
        assert model.get_params() == params and model.tuning_["chosen"]


def test_every_entry_point_applies_the_commands_checks_to_histories(fitted, data):
    """The library (adapt, predict, recommend) refuses what `recommend` / `predict` / `score`
    refuse, with the same messages: ratings outside the training scale, non-finite ratings,
    ratings missing for an explicit model, item ids of another type, no known item."""
    from recsys_hyper.errors import RecsysHyperError

    support = data["support"]
    pairs = data["query"][["user_id", "item_id"]].head(5)
    lo, hi = fitted.rating_range_
    high = support.assign(rating=np.where(np.arange(len(support)) == 2, hi + 4, support["rating"]))
    calls = {"recommend": lambda h, **kw: fitted.recommend(h, k=5, **kw),
             "predict": lambda h, **kw: fitted.predict(h, pairs, **kw),
             "adapt": lambda h, **kw: fitted.adapt(h, **kw)}
    for name, call in calls.items():
        with pytest.raises(RecsysHyperError, match=r"histories: 1 ratings of .* outside the model's training scale"):
            call(high)
        with pytest.raises(RecsysHyperError, match=r"histories.*rating.*NaN"):
            call(support.assign(rating=np.where(np.arange(len(support)) == 0, np.nan, support["rating"])))
        with pytest.raises(RecsysHyperError, match="the events are implicit .* but the model was trained on explicit"):
            call(support.drop(columns="rating"))
        with pytest.raises(RecsysHyperError, match="item ids are string but the model was trained on int64"):
            call(support.assign(item_id=support["item_id"].astype(str)))
        with pytest.raises(RecsysHyperError, match="none of its .* item ids is known to the model"):
            call(support.assign(item_id=support["item_id"] + 10**9))
        call(high, allow_rating_mismatch=True)                        # what --allow-rating-mismatch allows


def test_a_pair_rated_twice_counts_once_with_its_latest_rating(fitted, data):
    """Duplicate events are resolved as everywhere else (the data contract, `score`, Spark): the
    latest rating of a (user, item) pair is the one that counts."""
    support = data["support"].sort_values(["user_id", "timestamp"]).reset_index(drop=True)
    first = support.groupby("user_id").head(1)
    earlier = first.assign(rating=fitted.rating_range_[0], timestamp=first["timestamp"] - 1000)
    with_duplicates = pd.concat([earlier, support], ignore_index=True)
    a = fitted.recommend(with_duplicates, k=5)
    b = fitted.recommend(support, k=5)
    pd.testing.assert_frame_equal(a, b)


def test_grouped_histories_take_whole_number_float_user_ids_and_explain_the_rest(data):
    """JSON and columns with gaps turn integer ids into floats: 1.0 is user 1; 1.5 is refused
    with a message, not a TypeError from deep inside."""
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.recommender import recommend_grouped

    model = BUILDERS["popularity"]().fit(data["train"], progress=False)
    item = int(data["train"].interactions["item_id"].iloc[0])
    grouped = pd.DataFrame({"user_id": [7.0, 8.0], "item_id": [[item], []], "rating": [[4.0], []],
                            "timestamp": [[1_700_000_000], []]})
    out = recommend_grouped(model, grouped, k=3)
    assert out["user_id"].tolist() == [7, 8] and all(len(v) == 3 for v in out["item_ids"])
    with pytest.raises(RecsysHyperError, match=r"1 user ids are not whole numbers \(e.g. \[7.5\]\)"):
        recommend_grouped(model, grouped.assign(user_id=[7.5, 8.0]))


def test_a_grouped_batch_that_is_empty_gives_an_empty_answer_and_one_that_is_ambiguous_is_explained(data):
    """What a served model or a Spark task gets: an empty batch (an empty partition), the same user
    in two rows, ``k`` below 1; each used to escape as a TypeError / ValueError (HTTP 500)."""
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.recommender import recommend_grouped

    model = BUILDERS["popularity"]().fit(data["train"], progress=False)
    item = int(data["train"].interactions["item_id"].iloc[0])
    grouped = pd.DataFrame({"user_id": [7, 8], "item_id": [[item], []], "rating": [[4.0], []],
                            "timestamp": [[1_700_000_000], []]})
    empty = recommend_grouped(model, grouped.iloc[:0], k=3)
    assert len(empty) == 0 and list(empty.columns) == ["user_id", "item_ids", "scores"]
    with pytest.raises(RecsysHyperError, match=r"grouped histories: 1 user ids are in more than one row "
                                               r"\(e\.g\. \[7\]\)"):
        recommend_grouped(model, grouped.assign(user_id=[7, 7]))
    for k in (0, -1):
        with pytest.raises(RecsysHyperError, match=f"'k' parameter of recommend must be a whole number >= 1. Got {k} instead"):
            recommend_grouped(model, grouped, k=k)
    ragged = grouped.assign(item_id=[[item, item], [item]], rating=[[4.0], [3.0]],
                            timestamp=[[1_700_000_000] * 2, [1_700_000_000]])
    with pytest.raises(RecsysHyperError, match=r"1 rows have a 'rating' list of another length than their 'item_id' "
                                               r"list \(users \[7\]: \[1\] vs \[2\] values\)"):
        recommend_grouped(model, ragged)
