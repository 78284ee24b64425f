"""Global, item and user biases ``r ~ mu + b_i + b_u``: fitted by alternating ridge fits, a new
user's bias folded in the same way, and both regularisers chosen on validation episodes. Shared by
the bias baseline and the hypernetwork (whose item biases and bias prior start from this fit)."""

from __future__ import annotations

import itertools

import numpy as np

from ..data.episodes import Histories, capped_sample

#: regulariser grid (pseudo-ratings) for item and user biases
REG_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def fit_biases(h: Histories, n_items: int, item_reg: float, user_reg: float, iters: int = 10
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """``r ~ mu + b_i + b_u`` by alternating ridge fits (each a shrunk mean of the other's
    residuals): (mu, item biases (N,), user biases (len(h),))."""
    r = h.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    owner, items = h.owners(), h.items
    n_i = np.bincount(items, minlength=n_items)
    b_u = np.zeros(len(h))
    for _ in range(iters):
        b_i = np.bincount(items, weights=r - mu - b_u[owner], minlength=n_items) / np.maximum(n_i + item_reg, 1e-9)
        b_u = fold_in_bias(h, mu, b_i, user_reg)
    return mu, b_i, b_u


def fold_in_bias(h: Histories, mu: float, b_i: np.ndarray, user_reg: float) -> np.ndarray:
    """Each row's bias from its events: ``sum(r - mu - b_i) / (k + user_reg)`` (0 with no events)."""
    resid = h.ratings - mu - b_i[h.items]
    total = np.bincount(h.owners(), weights=resid, minlength=len(h))
    return total / np.maximum(h.lengths + user_reg, 1e-9)


def bias_mae(episodes: list[tuple[Histories, Histories]], mu: float, b_i: np.ndarray, user_reg: float,
             rating_range: tuple | None) -> float:
    """Mean over episodes of the MAE of ``mu + b_i + b_u`` on the queries, ``b_u`` folded in from the supports."""
    errors = []
    for sup, qry in episodes:
        pred = mu + b_i[qry.items] + fold_in_bias(sup, mu, b_i, user_reg)[qry.owners()]
        if rating_range is not None:
            pred = np.clip(pred, *rating_range)
        errors.append(float(np.mean(np.abs(pred - qry.ratings))))
    return float(np.mean(errors)) if errors else float("nan")


#: above this many training users the grid is searched on a seeded sample of them (then one fit on all)
GRID_MAX_USERS = 200_000


def tune_biases(train: Histories, episodes: list[tuple[Histories, Histories]], n_items: int,
                rating_range: tuple | None, item_grid=REG_GRID, user_grid=REG_GRID,
                max_users: int | None = GRID_MAX_USERS, seed: int = 0) -> dict:
    """Both regularisers on the grid, chosen by the validation MAE of ``episodes`` (the cold-start
    protocol on validation users). Returns the chosen values, the fit, and every score.

    With more than ``max_users`` training users the grid's fits use a seeded sample of
    ``max_users`` of them and the chosen pair is fitted once on all: the search then costs the
    same however many users there are (at that size item counts are large, and the choice
    stable)."""
    sample = train if max_users is None or len(train) <= max_users else \
        train.select(capped_sample(len(train), max_users, [seed, 2357]))
    scores, fits = [], {}
    for item_reg, user_reg in itertools.product(item_grid, user_grid):
        mu, b_i, _ = fit_biases(sample, n_items, item_reg, user_reg)
        fits[(item_reg, user_reg)] = (mu, b_i)
        scores.append({"item_reg": item_reg, "user_reg": user_reg,
                       "score": bias_mae(episodes, mu, b_i, user_reg, rating_range)})
    finite = [s for s in scores if np.isfinite(s["score"])] or scores
    best = min(finite, key=lambda s: s["score"])
    mu, b_i = fits[(best["item_reg"], best["user_reg"])]
    if sample is not train:
        mu, b_i, _ = fit_biases(train, n_items, best["item_reg"], best["user_reg"])
    return {"item_reg": best["item_reg"], "user_reg": best["user_reg"], "mu": mu, "item_bias": b_i,
            "score": best["score"], "scores": scores,
            "grid": {"item_reg": list(item_grid), "user_reg": list(user_grid)}}
