"""Biased matrix factorisation with ridge fold-in of new users (optionally from a features prior).

Training (training users only): ``r = mu + b_u + b_i + p_u . q_i`` fitted by alternating least
squares: each user's ``[p_u, b_u]`` is the ridge solution against ``[q_i, 1]`` of their items, each
item's ``[q_i, b_i]`` against ``[p_u, 1]`` of its users (regulariser ``reg``), a few rounds. A new
user's ``[p_u, b_u]`` is the same ridge solution against the support items' ``[q_i, 1]``:
``(X^T X + Lam)^-1 (X^T (y - mu - b_i) + Lam w0)``, ``Lam = diag(lam, ..., lam, lam_b)`` (the factors'
and the bias's regularisers, so that a large ``lam`` leaves the bias baseline's fold-in); ``w0 = 0``
for plain MF fold-in, or, with ``use_features``, a ridge regression from the user's side features
to the trained user vectors. ``dim``, ``reg``, ``lam`` (``fold_in_reg``) and ``lam_b``
(``bias_fold_in_reg``) are chosen on validation users (the cold-start protocol on their earliest
events) when not given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..numerics.features import FeatureSpec, dense_features
from ..numerics.fold_in import fold_in
from ..numerics.padding import Padded, chunks_by_events
from ..numerics.scores import linear_scores
from ..data.episodes import validation_episodes
from ..numerics.measure import mean_mae
from ..numerics.search import grid_search
from ..recommender.base import FoldIn, Recommender, indexed, train_validation_rows

DIM_GRID = (4, 8, 16, 32, 64)
REG_GRID = (1.0, 3.0, 10.0, 30.0)
FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BIAS_FOLD_IN_GRID = (1.0, 3.0, 10.0, 30.0)


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


class MatrixFactorization(Recommender):
    """Biased MF (ALS) + ridge fold-in; ``use_features=True`` starts the new user's vector from a
    features-predicted prior instead of zero. Parameters left ``None`` are tuned on validation users."""

    name = "mf"
    _tensors = ("mu_", "item_bias_", "item_factors_", "fold_in_reg_", "feature_weights_")

    def __init__(self, dim: int | None = None, reg: float | None = None, fold_in_reg: float | None = None,
                 bias_fold_in_reg: float | None = None, use_features: bool = False, feature_reg: float = 1.0,
                 iters: int = 8, seed: int = 0):
        super().__init__(dim=dim, reg=reg, fold_in_reg=fold_in_reg, bias_fold_in_reg=bias_fold_in_reg,
                         use_features=use_features, feature_reg=feature_reg, iters=iters, seed=seed)
        if use_features:
            self.name = "mf-features"

    def _fit(self, dataset, h: Histories, validation_users, progress) -> None:
        p = self.params
        train_rows, val_rows = train_validation_rows(h, validation_users)
        tr = h.select(train_rows)
        N = len(self.item_map_)
        if p["use_features"]:
            self.user_spec_ = FeatureSpec.fit(dataset.users, S.USER_ID)
        fitted = {}

        def use(dim, reg, fold_in_reg, bias_fold_in_reg):
            if (dim, reg) not in fitted:
                fitted.clear()                                              # keep one fit in memory
                fitted[(dim, reg)] = fit_mf(tr, N, dim, reg, iters=p["iters"], seed=p["seed"])
            mu, b_i, Q, users = fitted[(dim, reg)]
            self.mu_, self.item_bias_, self.item_factors_ = torch.tensor(mu), b_i, Q
            self.feature_weights_ = torch.zeros(0)
            if p["use_features"]:
                F = dense_features(self.user_spec_, self.user_spec_.transform(dataset.users, tr.user_ids))
                A = F.T @ F + p["feature_reg"] * torch.eye(F.shape[1])
                self.feature_weights_ = torch.linalg.solve(A, F.T @ users)          # (F, D)
            self.fold_in_reg_ = torch.tensor([float(fold_in_reg)] * dim + [float(bias_fold_in_reg)])   # (D,)

        grid = {"dim": DIM_GRID, "reg": REG_GRID, "fold_in_reg": FOLD_IN_GRID, "bias_fold_in_reg": BIAS_FOLD_IN_GRID}
        grid = {k: [p[k]] if p[k] is not None else list(v) for k, v in grid.items()}
        if not len(val_rows):
            defaults = {"dim": 32, "reg": 10.0, "fold_in_reg": 30.0, "bias_fold_in_reg": 10.0}
            use(**{k: p[k] if p[k] is not None else defaults[k] for k in grid})
            return
        episodes, view = validation_episodes(h.select(val_rows)), indexed(self, dataset.users)
        search = grid_search(grid, lambda **point: (use(**point), mean_mae(view, episodes))[1], "validation MAE")
        use(**search.chosen)
        self.tuning_ = search.record()

    def _prior(self, h: Histories, users: pd.DataFrame | None) -> torch.Tensor:
        D = self.item_factors_.shape[1] + 1
        if not self.params["use_features"]:
            return torch.zeros(len(h), D)
        F = dense_features(self.user_spec_, self.user_spec_.transform(users, h.user_ids))
        return F @ self.feature_weights_

    def _item_vectors(self) -> torch.Tensor:
        """``[q_i, 1]`` (N, D): the item side of the linear head ``[p_u, b_u]``."""
        return torch.cat([self.item_factors_, torch.ones(len(self.item_factors_), 1)], 1)

    def _adapt(self, h: Histories, users: pd.DataFrame | None, catalogue) -> FoldIn:
        targets = h.ratings - float(self.mu_) - self.item_bias_.numpy()[h.items]
        w = ridge_rows(h, targets, self._item_vectors(), self.fold_in_reg_, prior=self._prior(h, users))
        return FoldIn.of(h, {"w": w})                                                  # (B, D)

    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        return linear_scores(adapted.state["w"][rows], self._item_vectors()[items], self.mu_ + self.item_bias_[items],
                             pairs=True)

    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        return linear_scores(adapted.state["w"][torch.from_numpy(rows)], self._item_vectors(), self.mu_ + self.item_bias_)

    # the user-feature spec is JSON metadata, not a tensor
    def _meta(self) -> dict:
        return {**super()._meta(), **({"user_spec": self.user_spec_.to_dict()} if self.params["use_features"] else {})}

    def _restore(self, state: dict, meta: dict, root) -> None:
        super()._restore(state, meta, root)
        if "user_spec" in meta:
            self.user_spec_ = FeatureSpec.from_dict(meta["user_spec"])
