"""Global, item and user biases ``r ~ mu + b_i + b_u``: fitted by alternating ridge fits, a new
user's bias folded in the same way, and both regularisers chosen by cross-fitting over every
training user. Shared by the bias baseline and the hypernetwork (whose item biases and bias prior
start from this fit, and whose rating contains the bias baseline as an exact special case)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.episodes import Histories
from .crossfit import Folds, crossfit_mae
from .search import coordinate_search

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


def tune_biases(h: Histories, folds: Folds, n_items: int, rating_range: tuple | None, item_grid=REG_GRID,
                user_grid=REG_GRID) -> dict:
    """Both regularisers on the grid, chosen by cross-fitting (:mod:`.crossfit`: each fold's users
    measured as new users by the fit on the other folds, the mean over k of the mean over users of
    their MAE) with a coordinate search (a few of the grid's points), then fitted once on every user
    of ``h``. Returns that fit (``mu``, ``item_bias``),
    the chosen ``item_reg`` and ``user_reg``, the ``search`` (every candidate's score) and
    ``fold_fits``: each fold's ``(mu, item_bias)`` at the chosen point (the fit that never saw
    that fold's users)."""
    fits: dict = {}

    def score(item_reg, user_reg):
        fits[(item_reg, user_reg)] = [fit_biases(t, n_items, item_reg, user_reg)[:2] for t in folds.train]
        return crossfit_mae(folds, lambda j: BiasFold(*fits[(item_reg, user_reg)][j], user_reg, rating_range))

    search = coordinate_search({"item_reg": list(item_grid), "user_reg": list(user_grid)}, score,
                               "cross-fitted MAE (mean over users)", desc="bias regularisers")
    item_reg, user_reg = search.chosen["item_reg"], search.chosen["user_reg"]
    mu, b_i, _ = fit_biases(h, n_items, item_reg, user_reg)
    return {"mu": mu, "item_bias": b_i, "item_reg": item_reg, "user_reg": user_reg, "search": search,
            "fold_fits": fits[(item_reg, user_reg)]}
