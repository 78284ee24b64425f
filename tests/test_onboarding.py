"""Onboarding questions (``ask``) and explanations (``explain``): known answers, exactness of the
decomposition, faithfulness, the elicitation protocol's mechanics, and the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig
from recsys_hyper.data import Histories
from recsys_hyper.errors import RecsysHyperError
from recsys_hyper.evaluation.explanations import faithfulness
from recsys_hyper.evaluation.onboarding import STRATEGIES, run_onboarding, split_pools
from recsys_hyper.numerics.padding import Padded
from recsys_hyper.recommender import indexed

SMALL = Config(model=ModelConfig(dim=16, hidden=32, z_dim=32),
               train=TrainConfig(epochs=15, patience=4, batch_users=32, k_max=10, seed=1))


@pytest.fixture(scope="module")
def fitted(world):
    return HyperRecommender(SMALL).fit(world["train"], progress=False)


def _first(events: pd.DataFrame, k: int) -> pd.DataFrame:
    return events.groupby("user_id").head(k)


def _vectors(rec: HyperRecommender):
    """The training catalogue's item vectors with a padding row, each row's vocabulary index, and
    the item table: what the model's emission reads (from the public item table)."""
    view = indexed(rec)
    ids, table = view.catalogue.ids, view.item_table()
    e = table.phi[:, :-1]
    return torch.cat([e, torch.zeros(1, e.shape[1])]), torch.arange(len(ids) + 1), table, len(ids)


# ---------------------------------------------------------------------------------- explanations

def test_explanations_add_up_to_the_recommended_score(world, fitted):
    hist = _first(world["new"], 5)
    recs = fitted.recommend(hist, k=10, users=world["users"], user_ids=hist["user_id"].unique())
    ex = fitted.explain(hist, recs, users=world["users"], top_events=None)
    assert len(ex) == len(recs) and (ex[["user_id", "item_id", "rank"]].to_numpy() == recs[["user_id", "item_id", "rank"]].to_numpy()).all()
    total = ex["score_prior"] + ex["score_features"] + ex["score_history"]
    np.testing.assert_allclose(total, ex["score"], atol=2e-4)
    # with every event listed, the events and the rest make up the history's share
    sizes = hist.groupby("user_id").size()
    assert [len(b) for b in ex["because"]] == sizes.loc[ex["user_id"]].tolist()
    # the events are listed largest contribution first, and are the user's own events
    for (_, row), (_, user_hist) in zip(ex.iloc[::10].iterrows(), hist.groupby("user_id")):
        sizes = [abs(e["contribution"]) for e in row["because"]]
        assert sizes == sorted(sizes, reverse=True)
        assert {e["item_id"] for e in row["because"]} == set(user_hist["item_id"])


@torch.no_grad()
def test_leave_one_out_is_the_re_emission_without_the_event(world, fitted):
    """The hypernetwork part of an event's contribution is exact leave-one-out: removing the event
    and emitting again changes the emitted part of the score by exactly that much."""
    from recsys_hyper.recommender.explain import attribute

    rec = fitted
    hist = _first(world["new"], 4)
    h, _ = Histories.from_interactions(hist, rec.item_map_)
    e_all, index, table, n = _vectors(rec)
    support = Padded.from_histories(h, pad_item=n)
    uf = rec.user_spec_.transform(world["users"], h.user_ids)
    rows, items = torch.tensor([0, 1]), torch.tensor([3, 7])
    a = attribute(rec.model_, e_all, index, table, support, uf, rows, items)
    model = rec.model_
    for p, (row, item) in enumerate(zip(rows.tolist(), items.tolist())):
        phi = table.phi[item]
        full = model.prior(e_all[support.items[row:row + 1]], support.ratings[row:row + 1], support.mask[row:row + 1],
                           uf.take(torch.tensor([row])))
        keep = torch.tensor([1, 2, 3])                                          # without event 0
        less = model.prior(e_all[support.items[row:row + 1, keep]], support.ratings[row:row + 1, keep],
                           support.mask[row:row + 1, keep], uf.take(torch.tensor([row])))
        emitted_change = float(((full[0] + full[2]) - (less[0] + less[2]))[0] @ phi)
        assert abs(float(a.events[p, 0] - a.exact[p, 0]) - emitted_change) < 1e-4


def test_removing_the_most_blamed_event_lowers_the_score_more_than_a_random_one(world, fitted):
    h, _ = Histories.from_interactions(_first(world["new"], 10), fitted.item_map_)
    result = faithfulness(fitted, h, world["users"], k=10, seed=0)
    assert result["pairs"] == 100 * 10
    assert result["drop_top"] > 1.4 * result["drop_random"] and result["drop_top"] - result["drop_random"] > 0.2, result
    assert result["top_beats_random"] > 0.6, result


def test_explain_errors_are_clear(world, fitted):
    hist = _first(world["new"], 3)
    recs = fitted.recommend(hist, k=2)
    with pytest.raises(RecsysHyperError, match="unknown user"):
        fitted.explain(hist, recs.assign(user_id=recs["user_id"] + 10**6))
    with pytest.raises(RecsysHyperError, match="cannot score"):
        fitted.explain(hist, recs.assign(item_id=123_456_789))
    with pytest.raises(RecsysHyperError, match="'top_events' parameter"):
        fitted.explain(hist, recs, top_events=0)


# ---------------------------------------------------------------------------------- onboarding

@pytest.mark.parametrize("uncertainty", [0.0, 1.0])
def test_questions_follow_the_users_taste_and_never_repeat(world, fitted, uncertainty):
    """Known answer: after 3 events from their own cluster, most questions are items of that
    cluster; the history and the questions already asked are never asked."""
    hist = _first(world["new"], 3)
    asked = _first(world["new"].groupby("user_id").nth(slice(3, 5)).reset_index(drop=True), 2)[["user_id", "item_id"]]
    q = fitted.ask(hist, n=5, users=world["users"], user_ids=hist["user_id"].unique(), asked=asked,
                   uncertainty=uncertainty)
    assert (q.groupby("user_id").size() == 5).all() and q["user_id"].nunique() == 100
    assert (q.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5])).all()
    assert (q.groupby("user_id")["value"].apply(lambda v: (np.diff(v.to_numpy()) <= 1e-9).all())).all()
    seen = set(map(tuple, pd.concat([hist[["user_id", "item_id"]], asked]).to_numpy()))
    assert not seen & set(map(tuple, q[["user_id", "item_id"]].to_numpy()))
    in_cluster = (world["truth_i"].loc[q["item_id"]].to_numpy() == world["truth_u"].loc[q["user_id"]].to_numpy())
    assert in_cluster.mean() > 0.6, in_cluster.mean()                       # 4 clusters: 0.25 by chance


@torch.no_grad()
def test_the_uncertainty_rule_prefers_items_that_shrink_the_posterior(world, fitted):
    """With the uncertainty term alone deciding among items of equal chance, the chosen item is the
    one whose answer shrinks the variance of the top items' scores most: checked against a brute
    force over the catalogue for one user."""
    from recsys_hyper.recommender.onboarding import choose_questions

    rec = fitted
    e_all, index, table, n = _vectors(rec)
    h, _ = Histories.from_interactions(_first(world["new"], 2), rec.item_map_)
    h = h.select([0])
    support = Padded.from_histories(h, pad_item=n)
    excluded = torch.zeros(1, n, dtype=torch.bool)
    excluded[0, torch.from_numpy(h.items)] = True
    items, values = choose_questions(rec.model_, e_all, index, table, support, None, excluded, 1, targets=20,
                                     uncertainty=1.0)
    model = rec.model_
    e_s = e_all[support.items]
    heads, _ = model.heads(e_s, index[support.items], support.ratings, support.mask, None)
    _, lam, _ = model.prior(e_s, support.ratings, support.mask, None)
    phi_s = model.phi(e_s)[0] * support.mask[0].unsqueeze(-1)
    sigma = torch.linalg.inv(phi_s.T @ phi_s + torch.diag(lam[0]))
    scores = heads.ranking(table)[0].masked_fill(excluded[0], float("-inf"))
    top = scores.topk(20)
    weight = torch.softmax(top.values, -1)
    p_know = torch.softmax(scores, -1)

    def variance_after(j):
        phi_j = table.phi[j]
        s = sigma - torch.outer(sigma @ phi_j, sigma @ phi_j) / (1 + phi_j @ sigma @ phi_j)
        return float((weight * torch.einsum("md,de,me->m", table.phi[top.indices], s, table.phi[top.indices])).sum())

    before = float((weight * torch.einsum("md,de,me->m", table.phi[top.indices], sigma, table.phi[top.indices])).sum())
    value = torch.tensor([p_know[j] * (before - variance_after(j)) if not excluded[0, j] else -1.0
                          for j in range(n)])
    assert int(items[0, 0]) == int(value.argmax())
    assert float(values[0, 0]) == pytest.approx(float(value.max()), rel=1e-3)


def test_ask_errors_are_clear(world, fitted):
    hist = _first(world["new"], 3)
    with pytest.raises(RecsysHyperError, match="'n' parameter of ask must be a whole number >= 1"):
        fitted.ask(hist, n=0)
    with pytest.raises(RecsysHyperError, match="at most the catalogue's 200 items"):
        fitted.ask(hist, n=201)
    with pytest.raises(RecsysHyperError, match="unknown user"):
        fitted.ask(hist, n=2, user_ids=[-5])
    # a brand-new user listed in users (no events) is asked the population's questions
    brand_new = world["users"].iloc[[0]].assign(user_id=-5)
    q = fitted.ask(None, n=3, users=brand_new, user_ids=[-5])
    assert len(q) == 3 and (q["user_id"] == -5).all()


def test_the_elicitation_protocol_answers_from_the_pool_only(world, fitted):
    h_train, _ = Histories.from_interactions(world["train"].interactions, fitted.item_map_)
    h_new, _ = Histories.from_interactions(world["new"], fitted.item_map_)
    res = run_onboarding(fitted, h_train, h_new, world["users"], max_questions=6, reference_questions=3,
                         progress=False)
    assert list(res.curve["strategy"].unique()) == list(STRATEGIES)
    pool, test = split_pools(h_new)
    assert res.users == len(pool) == len(test)
    chrono = res.curve[res.curve["strategy"] == "chronological"]
    expected = [np.minimum(pool.lengths, q).mean() for q in range(1, 7)]
    np.testing.assert_allclose(chrono["answered"], expected)           # always answered while the pool lasts
    for _, g in res.curve.groupby("strategy"):
        assert (np.diff(g["answered"]) >= 0).all() and (g["answered"] <= g["questions"]).all()
    # a random question is rarely in a user's pool; the model's are much more often
    at6 = res.curve[res.curve["questions"] == 6].set_index("strategy")["answered"]
    assert at6["model"] > 2 * at6["random"]
    assert res.reference["ndcg@10"] == pytest.approx(float(chrono.loc[chrono["questions"] == 3, "ndcg@10"].iloc[0]))
