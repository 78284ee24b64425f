"""Population and bias baselines: Popularity, ItemMean and the bias baseline with user-bias fold-in."""

from __future__ import annotations

import numpy as np
import torch

from ..data.episodes import Histories
from ..recommender.base import FoldIn, Recommender, train_validation_rows, validation_mae


def item_stats(h: Histories, rows: np.ndarray, n_items: int, shrink: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(global mean, shrunk item bias (N,), item count (N,)) from the histories of ``rows``."""
    sub = h.select(rows)
    r = sub.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    count = np.bincount(sub.items, minlength=n_items).astype(np.float64)
    total = np.bincount(sub.items, weights=r - mu, minlength=n_items)
    bias = np.divide(total, count + shrink, out=np.zeros(n_items), where=(count + shrink) > 0)
    return mu, torch.from_numpy(bias.astype(np.float32)), torch.from_numpy(count.astype(np.float32))


def support_sizes(h: Histories) -> FoldIn:
    """The state of a population method: nothing but how many events each user brought."""
    return FoldIn.of(h, {"n": torch.from_numpy(h.lengths.astype(np.float32))})


class Popularity(Recommender):
    """Ranks by how many training users interacted with each item; rates every item the global mean."""

    name = "popularity"
    _tensors = ("mu_", "log_count_")

    def _fit(self, dataset, h, validation_users, progress) -> None:
        train_rows, _ = train_validation_rows(h, validation_users)
        mu, _, count = item_stats(h, train_rows, len(self.item_map_), shrink=0.0)
        self.mu_, self.log_count_ = torch.tensor(mu), torch.log1p(count)

    def _adapt(self, h, users, catalogue) -> FoldIn:
        return support_sizes(h)

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_.expand(len(rows)).clone()

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return self.log_count_.expand(len(rows), -1).clone()


class ItemMean(Recommender):
    """Rates and ranks every item by its shrunk mean rating (shrinkage ``shrink`` pseudo-ratings)."""

    name = "item-mean"
    _tensors = ("mu_", "item_bias_")

    def __init__(self, shrink: float = 10.0):
        super().__init__(shrink=shrink)

    def _fit(self, dataset, h, validation_users, progress) -> None:
        train_rows, _ = train_validation_rows(h, validation_users)
        mu, bias, _ = item_stats(h, train_rows, len(self.item_map_), shrink=self.params["shrink"])
        self.mu_, self.item_bias_ = torch.tensor(mu), bias

    def _adapt(self, h, users, catalogue) -> FoldIn:
        return support_sizes(h)

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items]

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return (self.mu_ + self.item_bias_).expand(len(rows), -1).clone()


class BiasBaseline(Recommender):
    """``mu + b_i + b_u``: item biases from training users; a new user's bias folded in from the
    support set, ``b_u = sum(r - mu - b_i) / (k + user_shrink)`` (``user_shrink`` chosen on
    validation users when there are any)."""

    name = "bias"
    _tensors = ("mu_", "item_bias_", "user_shrink_")
    GRID = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)

    def __init__(self, shrink: float = 10.0, user_shrink: float | None = None):
        super().__init__(shrink=shrink, user_shrink=user_shrink)

    def _fit(self, dataset, h, validation_users, progress) -> None:
        train_rows, val_rows = train_validation_rows(h, validation_users)
        mu, bias, _ = item_stats(h, train_rows, len(self.item_map_), shrink=self.params["shrink"])
        self.mu_, self.item_bias_ = torch.tensor(mu), bias
        self.user_shrink_ = torch.tensor(self.params["user_shrink"] or 5.0)
        if self.params["user_shrink"] is None and len(val_rows):
            val = h.select(val_rows)
            scores = {}
            for lam in self.GRID:
                self.user_shrink_ = torch.tensor(lam)
                scores[lam] = validation_mae(self, val)
            self.user_shrink_ = torch.tensor(min(scores, key=scores.get))

    def _adapt(self, h, users, catalogue) -> FoldIn:
        resid = h.ratings - float(self.mu_) - self.item_bias_.numpy()[h.items]
        total = np.bincount(h.owners(), weights=resid, minlength=len(h))
        b_u = total / (h.lengths + float(self.user_shrink_))
        return FoldIn.of(h, {"b_u": torch.from_numpy(b_u.astype(np.float32))})

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items] + adapted.state["b_u"][rows]

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_.unsqueeze(0) + adapted.state["b_u"][torch.from_numpy(rows)].unsqueeze(1)
