"""Biased matrix factorisation with a ridge fold-in of new users, and its tuning on validation users.
Shared by the MF baseline and the hypernetwork (whose rating path has MF fold-in as an exact
special case, blended in per support size where it does better on validation users).

Training (training users only): ``r = mu + b_u + b_i + p_u . q_i`` fitted by alternating least
squares: each user's ``[p_u, b_u]`` is the ridge solution against ``[q_i, 1]`` of their items, each
item's ``[q_i, b_i]`` against ``[p_u, 1]`` of its users (regulariser ``reg``), a few rounds. A new
user's ``[p_u, b_u]`` is the same ridge solution against the support items' ``[q_i, 1]``:
``(X^T X + Lam)^-1 (X^T (y - mu - b_i) + Lam w0)``, ``Lam = diag(lam, ..., lam, lam_b)`` (the factors'
and the bias's regularisers), from a prior ``w0`` (0, or a features prediction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data.episodes import Episode, Histories, capped_sample
from .fold_in import fold_in
from .measure import mean_mae
from .padding import Padded, chunks_by_events
from .scores import linear_scores
from .search import SearchResult, grid_search

DIM_GRID = (4, 8, 16, 32, 64)
REG_GRID = (1.0, 3.0, 10.0, 30.0)
FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BIAS_FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0)
GRID = {"dim": DIM_GRID, "reg": REG_GRID, "fold_in_reg": FOLD_IN_GRID, "bias_fold_in_reg": BIAS_FOLD_IN_GRID}
#: the ridge of the features prior (side features -> MF's user vectors)
FEATURE_REG = 1.0
#: above this many training users the grid's fits use a seeded sample of them (then one fit on all)
GRID_MAX_USERS = 200_000


def transpose(h: Histories, n_items: int) -> Histories:
    """The same events grouped by item: row ``i`` holds item ``i``'s events, ``items`` their user rows."""
    owner = h.owners()
    order = np.argsort(h.items, kind="stable")
    counts = np.bincount(h.items, minlength=n_items)
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Histories(np.arange(n_items), indptr, owner[order], h.ratings[order], h.timestamps[order])


def ridge_rows(h: Histories, targets: np.ndarray, X: torch.Tensor, reg, prior: torch.Tensor | None = None,
               max_cells: int = 4_000_000) -> torch.Tensor:
    """For every row of ``h``: the ridge solution ``w`` of ``targets ~ X[items] . w`` with
    regulariser ``reg`` (a float, or one per dimension (D,)) towards ``prior`` (default 0):
    (len(h), D). Rows are solved in chunks of bounded padded size."""
    D = X.shape[1]
    X_pad = torch.cat([X, torch.zeros(1, D)])
    h = Histories(h.user_ids, h.indptr, h.items, targets.astype(np.float32), h.timestamps)
    out = torch.zeros(len(h), D)
    order = np.argsort(h.lengths, kind="stable")
    for part in chunks_by_events(h.lengths[order], 8192, max_cells=max(1, max_cells // D)):
        rows = order[part]
        sup = Padded.from_histories(h.select(rows), pad_item=len(X))
        m = torch.zeros(len(rows), D) if prior is None else prior[torch.from_numpy(rows)]
        lam = torch.as_tensor(reg, dtype=torch.float32).expand(len(rows), D)
        out[torch.from_numpy(rows)] = fold_in(X_pad[sup.items], sup.ratings, sup.mask, m, lam)
    return out


def fit_mf(h: Histories, n_items: int, dim: int, reg: float, iters: int = 8, seed: int = 0
           ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALS for ``r = mu + b_u + b_i + p_u . q_i``: (mu, item biases (N,), item factors (N, d),
    user vectors ``[p_u, b_u]`` (len(h), d + 1))."""
    g = torch.Generator().manual_seed(seed)
    r = h.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    owner, items = h.owners(), h.items
    by_item = transpose(h, n_items)
    item_rows = np.argsort(items, kind="stable")                           # h's events in by_item's order
    Q = 0.1 * torch.randn(n_items, dim, generator=g)                       # item factors
    b_i = np.zeros(n_items)
    users = torch.zeros(len(h), dim + 1)
    for _ in range(iters):
        X = torch.cat([Q, torch.ones(n_items, 1)], 1)                      # (N, D)
        users = ridge_rows(h, r - mu - b_i[items], X, reg)                # (U, D): [p_u, b_u]
        Y = torch.cat([users[:, :-1], torch.ones(len(h), 1)], 1)          # (U, D)
        b_u = users[:, -1].numpy().astype(np.float64)
        item_vecs = ridge_rows(by_item, (r - mu - b_u[owner])[item_rows], Y, reg)   # (N, D): [q_i, b_i]
        Q, b_i = item_vecs[:, :-1], item_vecs[:, -1].numpy().astype(np.float64)
    return mu, torch.from_numpy(b_i.astype(np.float32)), Q.contiguous(), users


@dataclass
class MF:
    """A fitted MF: ``mu``, item biases (N,), item factors (N, d), the fold-in's regularisers
    (d + 1,), the training users' vectors ``[p_u, b_u]`` (U, d + 1), the hyper-parameters and
    the ids of the users it was fitted on (the rows of ``users``)."""

    mu: float
    item_bias: torch.Tensor
    item_factors: torch.Tensor
    fold_in_reg: torch.Tensor
    users: torch.Tensor
    params: dict
    user_ids: np.ndarray | None = None

    def with_fold_in(self, fold_in_reg: float, bias_fold_in_reg: float) -> "MF":
        """The same fit with other fold-in regularisers."""
        dim = self.item_factors.shape[1]
        return MF(self.mu, self.item_bias, self.item_factors,
                  torch.tensor([float(fold_in_reg)] * dim + [float(bias_fold_in_reg)]), self.users,
                  {**self.params, "fold_in_reg": fold_in_reg, "bias_fold_in_reg": bias_fold_in_reg}, self.user_ids)

    @property
    def item_vectors(self) -> torch.Tensor:
        """``[q_i, 1]`` (N, d + 1): the item side of the linear head ``[p_u, b_u]``."""
        return torch.cat([self.item_factors, torch.ones(len(self.item_factors), 1)], 1)

    def fold_in(self, h: Histories, prior: torch.Tensor | None = None) -> torch.Tensor:
        """The users' heads ``[p_u, b_u]`` (len(h), d + 1) from their events (rows of the items)."""
        targets = h.ratings - float(self.mu) - self.item_bias.numpy()[h.items]
        return ridge_rows(h, targets, self.item_vectors, self.fold_in_reg, prior=prior)

    def rate(self, heads: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return linear_scores(heads[rows], self.item_vectors[items], self.mu + self.item_bias[items], pairs=True)


class FoldedMF:
    """A fitted MF on catalogue indices, as :func:`~recsys_hyper.numerics.measure.measure_episode`
    measures it (``prior``: each user's prior head, or ``None`` for 0)."""

    implicit = False

    def __init__(self, mf: MF, rating_range: tuple | None, prior: Callable[[Histories], torch.Tensor] | None = None):
        self.mf, self.rating_range, self.prior = mf, rating_range, prior

    def adapt(self, h: Histories) -> torch.Tensor:
        return self.mf.fold_in(h, None if self.prior is None else self.prior(h))

    def rate(self, heads: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.mf.rate(heads, rows, items)


def tune_mf(train: Histories, episodes: list[Episode], n_items: int, rating_range: tuple | None, grid: dict,
            iters: int = 8, seed: int = 0, prior_of: Callable[[MF], Callable] | None = None,
            max_users: int | None = GRID_MAX_USERS, refit: bool = True) -> tuple[MF, SearchResult]:
    """MF's four hyper-parameters (``dim``, ``reg``, ``fold_in_reg``, ``bias_fold_in_reg``: a value
    list each) chosen by the validation MAE of ``episodes``; one ALS fit is kept in memory at a
    time. ``prior_of(mf)``: how a user's fold-in starts for that fit (default: from 0). With more
    than ``max_users`` training users the grid's fits use a seeded sample of them and the chosen
    point is fitted once on all (``refit``), or kept as fitted on the sample."""
    sample = train if max_users is None or len(train) <= max_users else \
        train.select(capped_sample(len(train), max_users, [seed, 7877]))
    fitted: dict = {}

    def fit(data: Histories, dim, reg, fold_in_reg, bias_fold_in_reg) -> MF:
        if (dim, reg) not in fitted:
            fitted.clear()                                              # keep one fit in memory
            fitted[(dim, reg)] = fit_mf(data, n_items, dim, reg, iters=iters, seed=seed)
        mu, b_i, Q, users = fitted[(dim, reg)]
        return MF(mu, b_i, Q, torch.tensor([float(fold_in_reg)] * dim + [float(bias_fold_in_reg)]), users,
                  {"dim": dim, "reg": reg, "fold_in_reg": fold_in_reg, "bias_fold_in_reg": bias_fold_in_reg},
                  data.user_ids)

    def score(**point) -> float:
        mf = fit(sample, **point)
        return mean_mae(FoldedMF(mf, rating_range, prior_of(mf) if prior_of else None), episodes)

    search = grid_search({k: list(v) for k, v in grid.items()}, score, "validation MAE", desc="MF grid")
    if sample is not train and refit:
        fitted.clear()
        return fit(train, **search.chosen), search
    return fit(sample, **search.chosen), search


def feature_prior(features: torch.Tensor, users: torch.Tensor, reg: float) -> torch.Tensor:
    """The features prior of MF's fold-in: the ridge regression (regulariser ``reg``) from users'
    dense side features (U, F) (intercept included) to their fitted vectors ``[p_u, b_u]`` (U, D):
    weights (F, D); a new user's fold-in starts from ``features @ weights``."""
    A = features.T @ features + reg * torch.eye(features.shape[1])
    return torch.linalg.solve(A, features.T @ users)


def tune_fold_in(mf: MF, episodes: list[Episode], rating_range: tuple | None, prior: Callable | None,
                 grid: dict = GRID) -> tuple[MF, SearchResult]:
    """The fold-in's two regularisers for a fitted MF whose users start from ``prior`` (a function
    of their histories), chosen by the validation MAE of ``episodes`` on ``grid``'s values."""
    def score(fold_in_reg, bias_fold_in_reg) -> float:
        return mean_mae(FoldedMF(mf.with_fold_in(fold_in_reg, bias_fold_in_reg), rating_range, prior), episodes)

    search = grid_search({k: list(grid[k]) for k in ("fold_in_reg", "bias_fold_in_reg")}, score, "validation MAE",
                         desc="MF fold-in")
    return mf.with_fold_in(**search.chosen), search
