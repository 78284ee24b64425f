"""Population and bias baselines: Popularity, ItemMean (shrinkage tuned) and the bias baseline (item
and user biases fitted alternately, both regularisers tuned, a new user's bias folded in); what is
tuned is chosen by cross-fitting over every training user (:mod:`~recsys_hyper.numerics.crossfit`)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.episodes import Histories
from ..numerics.biases import REG_GRID, fit_biases, fold_in_bias, tune_biases
from ..numerics.crossfit import Folds, crossfit_mae
from ..numerics.search import grid_search
from ..recommender.base import FoldIn, Recommender, train_validation_rows

#: shrinkage (pseudo-ratings) of the item-mean baseline
SHRINK_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)



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


class _Means:
    """``mu + b_i`` for every user, as :func:`~recsys_hyper.numerics.measure.measure_episode` measures it."""

    implicit = False

    def __init__(self, mu: float, b_i: torch.Tensor, rating_range: tuple | None):
        self.mu, self.b_i, self.rating_range = mu, b_i, rating_range

    def adapt(self, h: Histories) -> None:
        return None

    def rate(self, adapted, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.mu + self.b_i[items]


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
    """Rates and ranks every item by its shrunk mean rating: ``shrink`` pseudo-ratings at the
    global mean (chosen from :data:`SHRINK_GRID` by cross-fitting over every training user when not
    given; see :mod:`~recsys_hyper.numerics.crossfit`)."""

    name = "item-mean"
    _tensors = ("mu_", "item_bias_")

    def __init__(self, shrink: float | None = None):
        super().__init__(shrink=shrink)

    def _fit(self, dataset, h, validation_users, progress) -> None:
        N = len(self.item_map_)
        shrink = self.params["shrink"]
        if shrink is None and len(h) >= 2:
            folds = Folds.split(h)
            search = grid_search({"shrink": SHRINK_GRID}, lambda shrink: crossfit_mae(
                folds, lambda j: _Means(*item_stats(folds.train[j], np.arange(len(folds.train[j])), N, shrink)[:2],
                                        self.rating_range_)), "cross-fitted MAE (mean over users)")
            shrink = search.chosen["shrink"]
            self.tuning_ = search.record()
        mu, self.item_bias_, _ = item_stats(h, np.arange(len(h)), N, 10.0 if shrink is None else shrink)
        self.mu_ = torch.tensor(mu)

    def _adapt(self, h, users, catalogue) -> FoldIn:
        return support_sizes(h)

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items]

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return (self.mu_ + self.item_bias_).expand(len(rows), -1).clone()


class BiasBaseline(Recommender):
    """``mu + b_i + b_u``: item and user biases fitted alternately on the training users (ridge
    regularisers ``item_reg`` and ``user_reg``); a new user's bias is folded in from the support
    set the same way, ``b_u = sum(r - mu - b_i) / (k + user_reg)``. Both regularisers are chosen by
    cross-fitting over every training user (validation users are training users too: see
    :mod:`~recsys_hyper.numerics.crossfit`) when not given, then the biases fitted on all of them."""

    name = "bias"
    _tensors = ("mu_", "item_bias_", "user_shrink_")

    def __init__(self, item_reg: float | None = None, user_reg: float | None = None):
        super().__init__(item_reg=item_reg, user_reg=user_reg)

    def _fit(self, dataset, h, validation_users, progress) -> None:
        N = len(self.item_map_)
        given = {k: v for k, v in self.params.items() if v is not None}
        if len(given) == 2 or len(h) < 2:
            item_reg, user_reg = given.get("item_reg", 10.0), given.get("user_reg", 5.0)
            mu, b_i, _ = fit_biases(h, N, item_reg, user_reg)
        else:
            fit = tune_biases(h, Folds.split(h), N, self.rating_range_,
                              item_grid=[given["item_reg"]] if "item_reg" in given else REG_GRID,
                              user_grid=[given["user_reg"]] if "user_reg" in given else REG_GRID)
            mu, b_i, item_reg, user_reg = fit["mu"], fit["item_bias"], fit["item_reg"], fit["user_reg"]
            self.tuning_ = fit["search"].record()
        self.mu_, self.item_bias_ = torch.tensor(mu), torch.from_numpy(b_i.astype(np.float32))
        self.user_shrink_ = torch.tensor(float(user_reg))

    def _adapt(self, h, users, catalogue) -> FoldIn:
        b_u = fold_in_bias(h, float(self.mu_), self.item_bias_.numpy().astype(np.float64), float(self.user_shrink_))
        return FoldIn.of(h, {"b_u": torch.from_numpy(b_u.astype(np.float32))})

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items] + adapted.state["b_u"][rows]

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_.unsqueeze(0) + adapted.state["b_u"][torch.from_numpy(rows)].unsqueeze(1)
