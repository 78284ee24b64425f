"""Population and bias baselines: Popularity, ItemMean and the bias baseline with user-bias fold-in."""

from __future__ import annotations

import numpy as np
import torch

from .base import BaselineRecommender, item_stats, mean_abs_error


class Popularity(BaselineRecommender):
    """Ranks by how many training users interacted with each item; rates every item the global mean."""

    name = "popularity"
    _tensors = ("mu_", "log_count_")

    def _fit(self, h, dataset, train_rows, val_rows) -> None:
        mu, _, count = item_stats(h, train_rows, len(self.item_map_), shrink=0.0)
        self.mu_, self.log_count_ = torch.tensor(mu), torch.log1p(count)

    def _fold_in(self, h, users) -> dict:
        return {"n": torch.from_numpy(h.lengths.astype(np.float32))}

    def _rate(self, state, rows, items) -> torch.Tensor:
        return self.mu_.expand(len(rows)).clone()

    def _scores(self, state, rows) -> torch.Tensor:
        return self.log_count_.expand(len(rows), -1).clone()


class ItemMean(BaselineRecommender):
    """Rates and ranks every item by its shrunk mean rating (shrinkage ``shrink`` pseudo-ratings)."""

    name = "item-mean"
    _tensors = ("mu_", "item_bias_")

    def __init__(self, shrink: float = 10.0):
        super().__init__(shrink=shrink)

    def _fit(self, h, dataset, train_rows, val_rows) -> None:
        mu, bias, _ = item_stats(h, train_rows, len(self.item_map_), shrink=self.params["shrink"])
        self.mu_, self.item_bias_ = torch.tensor(mu), bias

    def _fold_in(self, h, users) -> dict:
        return {"n": torch.from_numpy(h.lengths.astype(np.float32))}

    def _rate(self, state, rows, items) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items]

    def _scores(self, state, rows) -> torch.Tensor:
        return (self.mu_ + self.item_bias_).expand(len(rows), -1).clone()


class BiasBaseline(BaselineRecommender):
    """``mu + b_i + b_u``: item biases from training users; a new user's bias folded in from the
    support set, ``b_u = sum(r - mu - b_i) / (k + user_shrink)`` (``user_shrink`` chosen on
    validation users when there are any)."""

    name = "bias"
    _tensors = ("mu_", "item_bias_", "user_shrink_")
    GRID = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)

    def __init__(self, shrink: float = 10.0, user_shrink: float | None = None):
        super().__init__(shrink=shrink, user_shrink=user_shrink)

    def _fit(self, h, dataset, train_rows, val_rows) -> None:
        mu, bias, _ = item_stats(h, train_rows, len(self.item_map_), shrink=self.params["shrink"])
        self.mu_, self.item_bias_ = torch.tensor(mu), bias
        self.user_shrink_ = torch.tensor(self.params["user_shrink"] or 5.0)
        if self.params["user_shrink"] is None and len(val_rows):
            val = h.select(val_rows)
            scores = {}
            for lam in self.GRID:
                self.user_shrink_ = torch.tensor(lam)
                scores[lam] = mean_abs_error(self, val)
            self.user_shrink_ = torch.tensor(min(scores, key=scores.get))

    def _fold_in(self, h, users) -> dict:
        resid = h.ratings - float(self.mu_) - self.item_bias_.numpy()[h.items]
        owner = np.repeat(np.arange(len(h)), h.lengths)
        total = np.bincount(owner, weights=resid, minlength=len(h))
        b_u = total / (h.lengths + float(self.user_shrink_))
        return {"b_u": torch.from_numpy(b_u.astype(np.float32))}

    def _rate(self, state, rows, items) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items] + state["b_u"][rows]

    def _scores(self, state, rows) -> torch.Tensor:
        return self.mu_ + self.item_bias_.unsqueeze(0) + state["b_u"][torch.from_numpy(rows)].unsqueeze(1)
