"""Global, item and user biases ``r ~ mu + b_i + b_u``: fitted by alternating ridge fits, a new
user's bias folded in the same way, and both regularisers chosen on validation episodes. Shared by
the bias baseline and the hypernetwork (whose item biases and bias prior start from this fit)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.episodes import Episode, Histories, capped_sample
from .measure import mean_mae
from .search import grid_search

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


class BiasFold:
    """``mu + b_i + b_u`` on catalogue indices, ``b_u`` folded in from each user's support (what
    :func:`~recsys_hyper.numerics.measure.measure_episode` measures while the grid is searched)."""

    implicit = False

    def __init__(self, mu: float, b_i: np.ndarray, user_reg: float, rating_range: tuple | None):
        self.mu, self.b_i, self.user_reg, self.rating_range = mu, b_i, user_reg, rating_range

    def adapt(self, h: Histories) -> np.ndarray:
        return fold_in_bias(h, self.mu, self.b_i, self.user_reg)

    def rate(self, b_u: np.ndarray, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.mu + self.b_i[items.numpy()] + b_u[rows.numpy()])


#: above this many training users the grid is searched on a seeded sample of them (then one fit on all)
GRID_MAX_USERS = 200_000


def tune_biases(train: Histories, episodes: list[Episode], n_items: int, rating_range: tuple | None,
                item_grid=REG_GRID, user_grid=REG_GRID, max_users: int | None = GRID_MAX_USERS, seed: int = 0) -> dict:
    """Both regularisers on the grid, chosen by the validation MAE of ``episodes`` (the cold-start
    protocol on validation users). Returns the fit (``mu``, ``item_bias``), the chosen ``item_reg`` and
    ``user_reg``, and the ``search`` (every candidate's score).

    With more than ``max_users`` training users the grid's fits use a seeded sample of
    ``max_users`` of them and the chosen pair is fitted once on all: the search then costs the
    same however many users there are (at that size item counts are large, and the choice
    stable)."""
    sample = train if max_users is None or len(train) <= max_users else \
        train.select(capped_sample(len(train), max_users, [seed, 2357]))
    fits = {}

    def score(item_reg, user_reg):
        mu, b_i, _ = fits[(item_reg, user_reg)] = fit_biases(sample, n_items, item_reg, user_reg)
        return mean_mae(BiasFold(mu, b_i, user_reg, rating_range), episodes)

    search = grid_search({"item_reg": list(item_grid), "user_reg": list(user_grid)}, score, "validation MAE",
                         desc="bias regularisers")
    mu, b_i, _ = fits[(search.chosen["item_reg"], search.chosen["user_reg"])]
    if sample is not train:
        mu, b_i, _ = fit_biases(train, n_items, search.chosen["item_reg"], search.chosen["user_reg"])
    return {"mu": mu, "item_bias": b_i, "item_reg": search.chosen["item_reg"], "user_reg": search.chosen["user_reg"],
            "search": search}
