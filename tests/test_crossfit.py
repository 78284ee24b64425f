"""Cross-fitting: the folds, the search over a grid one axis at a time, and what the closed-form
baselines choose with them (on every training user, never a sample of a hundred)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys_hyper.baselines.simple import BiasBaseline
from recsys_hyper.data import load_dataset
from recsys_hyper.data.episodes import Histories
from recsys_hyper.data.idmap import IdMap
from recsys_hyper.numerics.biases import BiasFold, fit_biases, tune_biases
from recsys_hyper.numerics.crossfit import Folds, crossfit_errors, interpolate, simplex
from recsys_hyper.numerics.search import coordinate_search


@pytest.fixture(scope="module")
def histories(tiny_dir):
    ds = load_dataset(tiny_dir)
    items = IdMap.from_values(ds.item_ids(), name="item")
    return ds, Histories.from_interactions(ds.interactions, items)[0], len(items)


@pytest.mark.parametrize("first", [None, np.arange(10, 70)])
def test_every_user_is_in_one_fold_and_measured_by_a_fit_that_never_saw_them(histories, first):
    _, h, _ = histories
    folds = Folds.split(h, n_folds=5, seed=3, first=first)
    rows = np.concatenate(folds.rows)
    assert len(folds) == 5 and sorted(rows.tolist()) == list(range(len(h)))
    if first is not None:
        assert folds.rows[0].tolist() == first.tolist()            # the caller's users are fold 0
    for j, r in enumerate(folds.rows):
        assert not set(h.user_ids[r]) & set(folds.train[j].user_ids)
        assert set(folds.train[j].user_ids) == set(h.user_ids) - set(h.user_ids[r])
        for e in folds.episodes[j]:                                 # the fold's own users, k earliest events
            assert set(e.support.user_ids) <= set(h.user_ids[r]) and (e.support.lengths == e.k).all()


def test_a_cap_samples_the_users_and_keeps_fold_zero_apart(histories):
    _, h, _ = histories
    first = np.arange(0, 40)
    folds = Folds.split(h, n_folds=4, seed=0, first=first, max_users=100)
    assert folds.users() <= 100
    assert set(folds.rows[0]) <= set(first)
    assert not set(np.concatenate(folds.rows[1:])) & set(first)
    assert not set(folds.train[0].user_ids) & set(h.user_ids[first])   # fold 0's fits never saw any of `first`


def test_the_bias_regularisers_are_the_grids_best_cross_fitted_score(histories):
    """The choice is the grid point with the lowest mean over k of the mean over users of their
    MAE, each fold measured by the fit on the others (computed here the long way)."""
    _, h, n_items = histories
    folds = Folds.split(h, n_folds=3, seed=1)
    grid = (0.3, 3.0, 30.0)
    got = tune_biases(h, folds, n_items, (1.0, 5.0), item_grid=grid, user_grid=grid)
    scores = {}
    for item_reg, user_reg in itertools.product(grid, grid):
        fits = [fit_biases(t, n_items, item_reg, user_reg) for t in folds.train]
        errors = crossfit_errors(folds, lambda j: BiasFold(fits[j][0], fits[j][1], user_reg, (1.0, 5.0)))
        scores[(item_reg, user_reg)] = np.mean([np.nanmean(np.concatenate(v)) for v in errors.values()])
    best = min(scores, key=scores.get)
    assert (got["item_reg"], got["user_reg"]) == best and got["search"].score == pytest.approx(scores[best])
    mu, b_i, _ = fit_biases(h, n_items, *best)                       # then fitted on every user
    np.testing.assert_allclose(got["item_bias"], b_i)
    assert got["mu"] == pytest.approx(mu)


def test_a_closed_form_baseline_fits_every_user_it_is_given(histories):
    """Validation users are training users too: the bias baseline's fit is the same whether some
    are named or not."""
    ds, _, _ = histories
    users = ds.interactions["user_id"].unique()
    a = BiasBaseline(item_reg=3.0, user_reg=10.0).fit(ds, validation_users=users[:50], progress=False)
    b = BiasBaseline(item_reg=3.0, user_reg=10.0).fit(ds, progress=False)
    np.testing.assert_array_equal(a.item_bias_.numpy(), b.item_bias_.numpy())


def test_coordinate_search_finds_the_best_of_a_grid_unimodal_along_each_axis_for_a_few_points():
    calls = []

    def score(a, b, c):
        calls.append((a, b, c))
        return (a - 3) ** 2 + 2 * (np.log10(b) - 1) ** 2 + abs(c - 0.1) + 0.5 * (a - 3) * (np.log10(b) - 1)

    grid = {"a": [1, 2, 3, 4, 5, 6], "b": [0.1, 1.0, 10.0, 100.0, 1000.0], "c": [0.0, 0.1, 0.3]}
    got = coordinate_search(grid, score, "score")
    brute = min(itertools.product(*grid.values()), key=lambda p: score(*p))
    calls_search = calls[:len(got.scores)]
    assert tuple(got.chosen.values()) == brute
    assert len(set(calls_search)) == len(calls_search) < 6 * 5 * 3 / 4      # each point once, a few of them
    assert got.score == min(s["score"] for s in got.scores)


def test_blend_weights_sum_to_one_and_interpolate_linearly_between_chosen_sizes():
    assert sorted(simplex([0.0, 0.5, 1.0], 2)) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert all(abs(sum(w) - 1) < 1e-9 for w in simplex([x / 10 for x in range(11)], 3))
    table = interpolate({1: (1.0, 0.0), 5: (0.0, 1.0)}, 8).numpy()
    np.testing.assert_allclose(table[:, 0], [1, 1, 0.75, 0.5, 0.25, 0, 0, 0, 0])
