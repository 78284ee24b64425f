"""Biased matrix factorisation with a ridge fold-in of new users, and its tuning by cross-fitting over
every training user. Shared by the MF baseline and the hypernetwork (whose rating path has MF
fold-in as an exact special case, blended in per support size where it does better).

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

from ..data.episodes import Histories
from .crossfit import Folds, crossfit_mae
from .fold_in import fold_in
from .padding import Padded, chunks_by_events
from .scores import linear_scores
from .search import SearchResult, coordinate_search

DIM_GRID = (4, 8, 16, 32, 64)
REG_GRID = (1.0, 3.0, 10.0, 30.0)
#: regularisation per event (weighted-lambda ALS, Zhou et al. 2008): a user or item with n events is
#: regularised by reg + reg_per_event * n. Measured on MovieLens 100K, cross-fitted: 0.1 lowered MF
#: fold-in's MAE by 0.003 and made the rank matter little (16 to 64 within 0.0002)
REG_PER_EVENT_GRID = (0.0, 0.1, 0.3)
FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BIAS_FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0)
GRID = {"dim": DIM_GRID, "reg": REG_GRID, "reg_per_event": REG_PER_EVENT_GRID, "fold_in_reg": FOLD_IN_GRID,
        "bias_fold_in_reg": BIAS_FOLD_IN_GRID}
#: the hyper-parameters a fit needs (the others are the fold-in's)
FIT_PARAMS = ("dim", "reg", "reg_per_event")
#: the ridge of the features prior (side features -> MF's user vectors)
FEATURE_REG = 1.0


def transpose(h: Histories, n_items: int) -> Histories:
    """The same events grouped by item: row ``i`` holds item ``i``'s events, ``items`` their user rows."""
    owner = h.owners()
    order = np.argsort(h.items, kind="stable")
    counts = np.bincount(h.items, minlength=n_items)
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Histories(np.arange(n_items), indptr, owner[order], h.ratings[order], h.timestamps[order])


def ridge_rows(h: Histories, targets: np.ndarray, X: torch.Tensor, reg, prior: torch.Tensor | None = None,
               max_cells: int = 4_000_000, reg_per_event: float = 0.0) -> torch.Tensor:
    """For every row of ``h``: the ridge solution ``w`` of ``targets ~ X[items] . w`` with
    regulariser ``reg`` (a float, or one per dimension (D,)) plus ``reg_per_event`` times the row's
    number of events, towards ``prior`` (default 0): (len(h), D). Rows are solved in chunks of
    bounded padded size."""
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
        if reg_per_event:
            lam = lam + reg_per_event * torch.from_numpy(h.lengths[rows].astype(np.float32)).unsqueeze(1)
        out[torch.from_numpy(rows)] = fold_in(X_pad[sup.items], sup.ratings, sup.mask, m, lam)
    return out


def fit_mf(h: Histories, n_items: int, dim: int, reg: float, iters: int = 8, seed: int = 0, reg_per_event: float = 0.0
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
        users = ridge_rows(h, r - mu - b_i[items], X, reg, reg_per_event=reg_per_event)   # (U, D): [p_u, b_u]
        Y = torch.cat([users[:, :-1], torch.ones(len(h), 1)], 1)          # (U, D)
        b_u = users[:, -1].numpy().astype(np.float64)
        item_vecs = ridge_rows(by_item, (r - mu - b_u[owner])[item_rows], Y, reg,
                               reg_per_event=reg_per_event)                                     # (N, D): [q_i, b_i]
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


def tune_mf(h: Histories, folds: Folds, n_items: int, rating_range: tuple | None, grid: dict, iters: int = 8,
            seed: int = 0, prior_of: Callable[[MF], Callable] | None = None) -> tuple[MF, SearchResult, list[MF]]:
    """MF's hyper-parameters (``grid``'s value lists: the fit's ``dim``, ``reg`` and
    ``reg_per_event``, the fold-in's ``fold_in_reg`` and ``bias_fold_in_reg``) chosen by
    cross-fitting (:mod:`.crossfit`) with a coordinate search
    (:func:`~recsys_hyper.numerics.search.coordinate_search`: fits are made per fold for each fit
    point visited, the fold-in's regularisers need none), then MF fitted once on every user of
    ``h``. ``prior_of(mf)``: how a user's fold-in starts for that fit (default: from 0). Returns the
    fit on all of ``h``, the search (every candidate tried) and each fold's fit at the chosen point
    (what its users were measured with)."""
    fitted: dict = {}                                     # the last two fit points' fold fits

    def fits(**point) -> tuple[list[MF], list]:
        key = tuple(point[k] for k in FIT_PARAMS)
        if key not in fitted:
            while len(fitted) >= 2:
                fitted.pop(next(iter(fitted)))
            mfs = [_mf(t, n_items, iters=iters, seed=seed, **point) for t in folds.train]
            fitted[key] = (mfs, [prior_of(m) if prior_of else None for m in mfs])
        return fitted[key]

    def score(fold_in_reg, bias_fold_in_reg, **point) -> float:
        mfs, priors = fits(**point)
        return crossfit_mae(folds, lambda j: FoldedMF(mfs[j].with_fold_in(fold_in_reg, bias_fold_in_reg),
                                                      rating_range, priors[j]))

    search = coordinate_search({k: list(grid[k]) for k in (*FIT_PARAMS, "fold_in_reg", "bias_fold_in_reg")},
                               score, "cross-fitted MAE (mean over users)", desc="MF grid")
    c = search.chosen
    point = {k: c[k] for k in FIT_PARAMS}
    fold_mfs = [m.with_fold_in(c["fold_in_reg"], c["bias_fold_in_reg"]) for m in fits(**point)[0]]
    mf = _mf(h, n_items, iters=iters, seed=seed, **point).with_fold_in(c["fold_in_reg"], c["bias_fold_in_reg"])
    return mf, search, fold_mfs


def _mf(h: Histories, n_items: int, dim: int, reg: float, reg_per_event: float, iters: int, seed: int) -> MF:
    """MF fitted on ``h`` (fold-in regularisers still to be set)."""
    mu, b_i, Q, users = fit_mf(h, n_items, dim, reg, iters=iters, seed=seed, reg_per_event=reg_per_event)
    return MF(mu, b_i, Q, torch.ones(dim + 1), users, {"dim": dim, "reg": reg, "reg_per_event": reg_per_event},
              h.user_ids)


def feature_prior(features: torch.Tensor, users: torch.Tensor, reg: float) -> torch.Tensor:
    """The features prior of MF's fold-in: the ridge regression (regulariser ``reg``) from users'
    dense side features (U, F) (intercept included) to their fitted vectors ``[p_u, b_u]`` (U, D):
    weights (F, D); a new user's fold-in starts from ``features @ weights``."""
    A = features.T @ features + reg * torch.eye(features.shape[1])
    return torch.linalg.solve(A, features.T @ users)


def tune_fold_in(mf: MF, folds: Folds, fold_mfs: list[MF], rating_range: tuple | None, prior_of: Callable | None,
                 grid: dict = GRID) -> tuple[MF, SearchResult, list[MF]]:
    """The fold-in's two regularisers for a fitted MF whose users start from ``prior_of(fit)`` (a
    function of their histories; ``None``: from 0), chosen by cross-fitting on ``grid``'s values
    (a coordinate search):
    fold ``j``'s users folded into ``fold_mfs[j]`` (MF fitted without them). Returns ``mf`` with them,
    the search, and the fold fits with them."""
    priors = [prior_of(f) if prior_of else None for f in fold_mfs]

    def score(fold_in_reg, bias_fold_in_reg) -> float:
        return crossfit_mae(folds, lambda j: FoldedMF(fold_mfs[j].with_fold_in(fold_in_reg, bias_fold_in_reg),
                                                      rating_range, priors[j]))

    search = coordinate_search({k: list(grid[k]) for k in ("fold_in_reg", "bias_fold_in_reg")}, score,
                               "cross-fitted MAE (mean over users)", desc="MF fold-in")
    return (mf.with_fold_in(**search.chosen), search, [f.with_fold_in(**search.chosen) for f in fold_mfs])
