"""EASE (Steck, WWW 2019): the closed-form item-item model, a native cold-user method.

On the training users' binary matrix ``X`` (users x items), ``G = X^T X``,
``P = (G + lam I)^-1`` and ``B = I - P diag(1 / diag(P))`` (zero diagonal). A user's scores are
``s B``, ``s`` the binary vector of their events: a never-seen user is scored from their support
set alone.

Computed exactly in a low-rank form (:mod:`recsys_hyper.numerics.item_item`): with
``G = F diag(sigma) F^T`` (its non-zero eigenpairs, from ``X X^T`` when there are fewer users than
items), ``P = (I - F diag(w) F^T) / lam`` with
``w = sigma / (sigma + lam)``, so for every item ``i`` outside the support (the support itself is
never recommended) ``(s B)_i = ((s F) * w) . F_i / d_i``, ``d = 1 - (F * F) w``. A user's head is
``lam (s F) * w`` (times ``lam``: the same ranking, on a scale that does not vanish as ``lam``
grows) and item ``i``'s vector ``F_i / d_i``: EASE scores through the same linear path as
every other model, in memory ``items x min(users, items)``, and one eigendecomposition serves every
``lam`` of the search. ``lam`` is chosen on validation users by nDCG@10 over the whole catalogue, on
a wide log grid extended at whichever edge wins (in cold start the best ``lam`` is often very
large). Ties (a user with no events scores 0 everywhere) are broken by popularity.

EASE ranks; it does not predict ratings: :meth:`predict` gives each item's shrunk mean rating.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.episodes import Histories
from ..numerics.item_item import ease_factors, gram_eigen
from ..numerics.scores import linear_scores
from ..data.episodes import validation_episodes
from ..numerics.measure import mean_ndcg
from ..numerics.search import grid_search
from ..recommender.base import FoldIn, Recommender, indexed, train_validation_rows
from .simple import item_stats

LAMBDA_GRID = tuple(10.0 ** e for e in range(0, 8))
MAX_EXTENSIONS = 4
TIE_BREAK = 1e-6


class EASE(Recommender):
    """Embarrassingly shallow autoencoder; ``lam`` chosen on validation users when not given."""

    name = "ease"
    _tensors = ("factors_", "weights_", "item_phi_", "tie_break_", "mu_", "item_bias_")

    def __init__(self, lam: float | None = None, relevance_threshold: float = 4.0):
        super().__init__(lam=lam, relevance_threshold=relevance_threshold)

    def _fit(self, dataset, h: Histories, validation_users, progress) -> None:
        train_rows, val_rows = train_validation_rows(h, validation_users)
        N = len(self.item_map_)
        train = h.select(train_rows)
        F, sigma = gram_eigen(train, N)
        mu, bias, count = item_stats(h, train_rows, N, shrink=10.0)
        self.mu_, self.item_bias_ = torch.tensor(mu), bias
        logpop = torch.log1p(count)
        self.tie_break_ = TIE_BREAK * logpop / max(float(logpop.max()), 1.0)
        self.factors_ = F.float()

        def use(lam):
            # scores times lam (same ranking): they stay O(co-occurrence counts) however large lam
            # is, so the popularity tie-break never competes with them
            self.weights_, self.item_phi_ = ease_factors(F, sigma, lam)        # (r,), (N, r)

        if self.params["lam"] is not None or not len(val_rows):
            use(self.params["lam"] or 1e3)
            return
        episodes = [e for e in validation_episodes(h.select(val_rows)) if e.support.lengths.max() > 0]
        view = indexed(self)
        grid = list(LAMBDA_GRID)
        for _ in range(MAX_EXTENSIONS + 1):
            search = grid_search({"lam": grid}, lambda lam: (use(lam), mean_ndcg(
                view, episodes, threshold=self.params["relevance_threshold"]))[1], "validation nDCG@10",
                lower_is_better=False, desc="EASE lambda")
            use(**search.chosen)
            self.tuning_ = search.record()
            best = search.chosen
            if best["lam"] == grid[-1]:
                grid = grid + [grid[-1] * 10, grid[-1] * 100]
            elif best["lam"] == grid[0] and grid[0] > 1e-3:
                grid = [grid[0] / 100, grid[0] / 10] + grid
            else:
                break

    def _adapt(self, h: Histories, users, catalogue) -> FoldIn:
        s_F = torch.zeros(len(h), self.factors_.shape[1])
        s_F.index_add_(0, torch.from_numpy(h.owners()), self.factors_[torch.from_numpy(h.items.astype(np.int64))])
        return FoldIn.of(h, {"head": s_F * self.weights_})                      # (B, r)

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return self.mu_ + self.item_bias_[items]

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return linear_scores(adapted.state["head"][torch.from_numpy(rows)], self.item_phi_, self.tie_break_)
