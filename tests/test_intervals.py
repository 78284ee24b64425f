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


# -- the scores' standard deviation under the head's posterior


def _episode(events, k, min_query=5):
    ordered = events.sort_values(["user_id", "timestamp"])
    ordered = ordered[ordered.groupby("user_id")["item_id"].transform("size") >= k + min_query]
    support = ordered.groupby("user_id").head(k)
    return support, ordered.drop(support.index)


def test_score_std_is_calibrated_narrows_with_events_and_points_at_the_larger_errors(fitted):
    """On users the model never saw (ratings with known noise): the posterior's variance plus the
    fitted noise variance matches the squared errors on average; the spread falls as events arrive;
    and the pairs it is least sure of are those it gets most wrong."""
    model, events, users = fitted
    means = {}
    for k in (1, 10):
        support, query = _episode(events, k)
        pairs = query[["user_id", "item_id"]]
        sd = model.score_std(support, pairs, users=users).astype(np.float64)
        err = model.predict(support, pairs, users=users) - query["rating"].to_numpy()
        assert np.isfinite(sd).all() and (sd > 0).all()
        assert 0.8 <= np.mean(err ** 2 / (model.intervals_.noise_var + sd ** 2)) <= 1.25, k
        means[k] = sd.mean()
        if k == 10:
            least, most = sd <= np.quantile(sd, 1 / 3), sd >= np.quantile(sd, 2 / 3)
            assert np.sqrt(np.mean(err[most] ** 2)) > 1.15 * np.sqrt(np.mean(err[least] ** 2))
    assert means[10] < means[1]


def test_score_std_belongs_to_its_pair_whatever_the_order_and_the_batch(fitted):
    model, events, users = fitted
    support, query = _episode(events, 3)
    pairs = query[["user_id", "item_id"]].reset_index(drop=True)
    whole = model.score_std(support, pairs, users=users)
    shuffled = pairs.sample(frac=1.0, random_state=0)
    np.testing.assert_allclose(model.score_std(support, shuffled, users=users), whole[shuffled.index], rtol=1e-5)
    one = pairs["user_id"].iloc[0]
    alone = model.score_std(support[support["user_id"] == one], pairs[pairs["user_id"] == one], users=users)
    np.testing.assert_allclose(alone, whole[(pairs["user_id"] == one).to_numpy()], rtol=1e-5)


def test_the_commands_write_score_std_and_implicit_models_refuse_it(fitted, tmp_path, capsys):
    from recsys_hyper.cli import main
    from tests.conftest import write_frames

    model, events, users = fitted
    model.save(tmp_path / "model")
    support, _ = _episode(events, 4)
    data = write_frames(tmp_path / "new", support, users)
    assert main(["recommend", "--model", str(tmp_path / "model"), "--data", str(data), "--top-k", "5",
                 "--out", str(tmp_path / "recs.parquet"), "--score-std"]) == 0
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    np.testing.assert_allclose(recs["score_std"].to_numpy(), model.score_std(support, recs, users=users), rtol=1e-5)
    assert main(["score", "--model", str(tmp_path / "model"), "--data", str(data), "--top-k", "5",
                 "--out", str(tmp_path / "scored"), "--date", "2026-01-01", "--score-std", "--no-progress"]) == 0
    scored = pd.read_parquet(tmp_path / "scored" / "recommendations" / "date=2026-01-01")
    merged = recs.merge(scored, on=["user_id", "item_id"], suffixes=("", "_batch"))
    assert len(merged) == len(recs)
    np.testing.assert_allclose(merged["score_std_batch"], merged["score_std"], rtol=1e-4)
    implicit = HyperRecommender(FAST)
    implicit.implicit_, implicit.item_map_, implicit.intervals_ = True, model.item_map_, None
    with pytest.raises(RecsysHyperError, match="implicit feedback: the score's standard deviation"):
        implicit.score_std(support, recs)



# -- exploration from the posterior


def test_exploring_heads_rank_by_the_posterior_and_leave_ratings_alone(fitted):
    """``ucb`` adds exactly ``weight`` x :meth:`score_std` to each score (0: the plain ranking);
    ``thompson`` is seeded (the same seed, the same lists; another seed, others) and spreads the
    recommendations over more of the catalogue; neither changes a prediction."""
    model, events, users = fitted
    support, query = _episode(events, 3)
    ids = pd.unique(support["user_id"])
    plain = model.recommend(support, k=10, users=users, user_ids=ids)
    ucb0 = model.adapt(support, users, user_ids=ids, explore="ucb", explore_weight=0.0)
    pd.testing.assert_frame_equal(model.recommend(support, k=10, users=users, heads=ucb0), plain)
    ucb = model.adapt(support, users, user_ids=ids, explore="ucb", explore_weight=2.0)
    bonus = model.recommend(support, k=10, users=users, heads=ucb)
    base = model.adapt(support, users, user_ids=ids)
    pairs = bonus[["user_id", "item_id"]]
    own = model.predict(support, pairs, users=users, heads=base)                           # ratings: unchanged
    np.testing.assert_allclose(model.predict(support, pairs, users=users, heads=ucb), own, rtol=1e-6)
    plain_scores = plain.set_index(["user_id", "item_id"])["score"]
    common = bonus.join(plain_scores.rename("plain"), on=["user_id", "item_id"], how="inner")
    np.testing.assert_allclose(common["score"] - common["plain"],
                               2.0 * model.score_std(support, common, users=users), rtol=1e-3, atol=1e-5)
    draws = [model.recommend(support, k=10, users=users,
                             heads=model.adapt(support, users, user_ids=ids, explore="thompson", seed=s))
             for s in (1, 1, 2)]
    pd.testing.assert_frame_equal(draws[0], draws[1])
    assert not draws[0]["item_id"].equals(draws[2]["item_id"])
    assert draws[0]["item_id"].nunique() > plain["item_id"].nunique()
    with pytest.raises(RecsysHyperError, match="explore must be 'ucb' or 'thompson'"):
        model.adapt(support, users, explore="greedy")


def test_recommend_explores_from_the_command_line(fitted, tmp_path):
    from recsys_hyper.cli import main
    from tests.conftest import write_frames

    model, events, users = fitted
    model.save(tmp_path / "model")
    support, _ = _episode(events, 2)
    data = write_frames(tmp_path / "new", support, users)
    outs = []
    for seed in ("3", "3"):
        out = tmp_path / f"recs{len(outs)}.parquet"
        assert main(["recommend", "--model", str(tmp_path / "model"), "--data", str(data), "--top-k", "5",
                     "--out", str(out), "--explore", "thompson", "--seed", seed]) == 0
        outs.append(pd.read_parquet(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    plain = model.recommend(support, k=5, users=users)
    assert not outs[0]["item_id"].reset_index(drop=True).equals(plain["item_id"].reset_index(drop=True))
