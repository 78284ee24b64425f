"""Prediction intervals for new users: calibrated on validation users, checked on users the model
never saw, narrowing as events arrive; the CLI writes them; implicit models refuse them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig
from recsys_hyper.data import load_dataset
from recsys_hyper.data.dataset import Dataset
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.errors import RecsysHyperError

FAST = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16), train=TrainConfig(epochs=4, k_max=10))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted on 1,200 users of a synthetic set whose ratings carry known noise (sd 0.6),
    and the 400 users it never saw."""
    root = tmp_path_factory.mktemp("intervals") / "ds"
    generate(preset("tiny", n_users=1600, seed=11), root)
    ds = load_dataset(root)
    new = np.sort(ds.interactions["user_id"].unique())[-400:]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new)].reset_index(drop=True), ds.users, ds.items)
    model = HyperRecommender(FAST).fit(train, progress=False)
    return model, ds.interactions[ds.interactions["user_id"].isin(new)], ds.users


def _coverage(model, events, users, k, level):
    ordered = events.sort_values(["user_id", "timestamp"])
    ordered = ordered[ordered.groupby("user_id")["item_id"].transform("size") >= k + 5]
    support = ordered.groupby("user_id").head(k)
    query = ordered.drop(support.index)
    out = model.predict_interval(support, query[["user_id", "item_id"]], level=level, users=users)
    actual = query["rating"].to_numpy()
    inside = (out["lower"].to_numpy() <= actual + 1e-6) & (actual <= out["upper"].to_numpy() + 1e-6)
    return inside.mean(), float((out["upper"] - out["lower"]).mean()), out


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9])
def test_intervals_cover_new_users_ratings_at_their_nominal_level(fitted, level):
    model, events, users = fitted
    for k in (0, 3, 10):
        covered, _, _ = _coverage(model, events, users, k, level)
        assert abs(covered - level) <= 0.05, (k, level, covered)


def test_intervals_narrow_as_events_arrive_and_say_their_spread(fitted):
    model, events, users = fitted
    widths = [_coverage(model, events, users, k, 0.9)[1] for k in (0, 10)]
    assert widths[1] < widths[0], widths
    _, _, out = _coverage(model, events, users, 3, 0.9)
    assert list(out.columns) == ["user_id", "item_id", "prediction", "lower", "upper", "std"]
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()
    assert out["lower"].min() >= 1 and out["upper"].max() <= 5 and (out["std"] > 0).all()
    assert out["std"].iloc[0] == pytest.approx(model.intervals_.std[list(model.intervals_.shots).index(3)], rel=1e-5)


def test_the_cli_writes_intervals_and_implicit_models_refuse_them(fitted, tmp_path, capsys):
    from recsys_hyper.cli import main
    from tests.conftest import write_frames

    model, events, users = fitted
    model.save(tmp_path / "model")
    support = events.sort_values(["user_id", "timestamp"]).groupby("user_id").head(3)
    pairs = events.drop(support.index)[["user_id", "item_id"]].head(50)
    data = write_frames(tmp_path / "new", support, users)
    pairs.to_parquet(tmp_path / "pairs.parquet")
    assert main(["predict", "--model", str(tmp_path / "model"), "--data", str(data), "--pairs",
                 str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "p.parquet"), "--interval", "0.8"]) == 0
    written = pd.read_parquet(tmp_path / "p.parquet")
    assert {"prediction", "lower", "upper", "std"} <= set(written.columns) and len(written) == 50
    reloaded = HyperRecommender.load(tmp_path / "model").predict_interval(support, pairs, level=0.8, users=users)
    np.testing.assert_allclose(written["upper"].to_numpy(), reloaded["upper"].to_numpy(), rtol=1e-6)
    with pytest.raises(SystemExit) as refused:
        main(["predict", "--model", str(tmp_path / "model"), "--data", str(data), "--pairs",
              str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "q.parquet"), "--interval", "1.5"])
    assert refused.value.code == 2 and "expected a probability in (0, 1)" in capsys.readouterr().err
    with pytest.raises(RecsysHyperError, match="between 0.01 and 0.99"):
        model.predict_interval(support, pairs, level=0.995)
    implicit = HyperRecommender(FAST)
    implicit.implicit_, implicit.item_map_, implicit.intervals_ = True, model.item_map_, None
    with pytest.raises(RecsysHyperError, match="relevance scores, not ratings, so there is no rating interval"):
        implicit.predict_interval(support, pairs)


def test_grouped_recommendations_carry_the_intervals_of_predict_interval(fitted):
    """The pyfunc's shape (one row per user, lists): with ``interval``, each recommended item's
    predicted rating and interval, exactly ``predict_interval``'s for those pairs."""
    from recsys_hyper.data.frames import group_histories
    from recsys_hyper.recommender import recommend_grouped

    model, events, users = fitted
    support = events.sort_values(["user_id", "timestamp"]).groupby("user_id").head(4)
    grouped = group_histories(support).head(20)
    out = recommend_grouped(model, grouped, k=5, interval=0.9)
    assert list(out.columns) == ["user_id", "item_ids", "scores", "ratings", "lower", "upper"]
    pairs = out[["user_id", "item_ids"]].explode("item_ids").rename(columns={"item_ids": "item_id"})
    pairs["item_id"] = pairs["item_id"].astype(events["item_id"].dtype)
    # the grouped rows carry no user features (the pyfunc's input): the same call without them
    want = model.predict_interval(support[support["user_id"].isin(grouped["user_id"])], pairs, level=0.9)
    for col, src in (("ratings", "prediction"), ("lower", "lower"), ("upper", "upper")):
        np.testing.assert_allclose(np.concatenate(out[col].to_list()), want[src].to_numpy(), rtol=1e-6)
    assert recommend_grouped(model, grouped, k=5).columns.tolist() == ["user_id", "item_ids", "scores"]
