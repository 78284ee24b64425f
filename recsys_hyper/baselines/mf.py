"""Biased matrix factorisation with ridge fold-in of new users (optionally from a features prior).

Training (training users only): ``r = mu + b_u + b_i + p_u . q_i`` fitted by full-batch Adam on
the squared error with per-rating L2 (the regulariser SGD implementations apply). A new user's
``[p_u, b_u]`` is the ridge solution against the support items' ``[q_i, 1]``:
``(X^T X + lam I)^-1 (X^T (y - mu - b_i) + lam w0)``; ``w0 = 0`` for plain MF fold-in, or, with
``use_features``, a ridge regression from the user's side features to the trained user vectors.
``lam`` is chosen on validation users (log grid) when there are any.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..numerics.features import FeatureSpec, dense_features
from ..numerics.fold_in import fold_in
from ..numerics.padding import Padded
from ..numerics.scores import linear_scores
from ..recommender.base import FoldIn, Recommender, train_validation_rows, validation_mae


class MatrixFactorization(Recommender):
    """Biased MF + ridge fold-in; ``use_features=True`` starts the new user's vector from a
    features-predicted prior instead of zero."""

    name = "mf"
    _tensors = ("mu_", "item_bias_", "item_factors_", "fold_in_reg_", "feature_weights_")
    GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)

    def __init__(self, dim: int = 32, reg: float = 0.05, epochs: int = 300, lr: float = 0.02,
                 fold_in_reg: float | None = None, use_features: bool = False, feature_reg: float = 1.0,
                 seed: int = 0):
        super().__init__(dim=dim, reg=reg, epochs=epochs, lr=lr, fold_in_reg=fold_in_reg,
                         use_features=use_features, feature_reg=feature_reg, seed=seed)
        if use_features:
            self.name = "mf-features"

    def _fit(self, dataset, h: Histories, validation_users, progress) -> None:
        p = self.params
        train_rows, val_rows = train_validation_rows(h, validation_users)
        torch.manual_seed(p["seed"])
        tr = h.select(train_rows)
        u = torch.from_numpy(np.repeat(np.arange(len(tr)), tr.lengths))
        i = torch.from_numpy(tr.items)
        r = torch.from_numpy(tr.ratings)
        mu = float(r.mean())
        N, d = len(self.item_map_), p["dim"]
        P = (0.1 * torch.randn(len(tr), d)).requires_grad_()
        Q = (0.1 * torch.randn(N, d)).requires_grad_()
        bu = torch.zeros(len(tr), requires_grad=True)
        bi = torch.zeros(N, requires_grad=True)
        opt = torch.optim.Adam([P, Q, bu, bi], lr=p["lr"])
        for _ in range(p["epochs"]):
            pred = mu + bu[u] + bi[i] + (P[u] * Q[i]).sum(1)
            l2 = (P[u].pow(2).sum(1) + Q[i].pow(2).sum(1) + bu[u].pow(2) + bi[i].pow(2)).mean()
            loss = (pred - r).pow(2).mean() + p["reg"] * l2
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.mu_ = torch.tensor(mu)
        self.item_bias_ = bi.detach().clone()
        self.item_factors_ = Q.detach().clone()
        self.feature_weights_ = torch.zeros(0)
        if p["use_features"]:
            self.user_spec_ = FeatureSpec.fit(dataset.users, S.USER_ID)
            F = dense_features(self.user_spec_, self.user_spec_.transform(dataset.users, tr.user_ids))
            W_users = torch.cat([P.detach(), bu.detach().unsqueeze(1)], 1)          # (n_train, D)
            A = F.T @ F + p["feature_reg"] * torch.eye(F.shape[1])
            self.feature_weights_ = torch.linalg.solve(A, F.T @ W_users)          # (F, D)
        self.fold_in_reg_ = torch.tensor(p["fold_in_reg"] or 3.0)
        if p["fold_in_reg"] is None and len(val_rows):
            val = h.select(val_rows)
            scores = {}
            for lam in self.GRID:
                self.fold_in_reg_ = torch.tensor(lam)
                scores[lam] = validation_mae(self, val, dataset.users)
            self.fold_in_reg_ = torch.tensor(min(scores, key=scores.get))

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
        N = len(self.item_map_)
        x_all = torch.cat([self._item_vectors(), torch.zeros(1, self.item_factors_.shape[1] + 1)])  # + padding row
        sup = Padded.from_histories(h, pad_item=N)
        y = sup.ratings - self.mu_ - torch.cat([self.item_bias_, torch.zeros(1)])[sup.items]
        prior = self._prior(h, users)
        lam = torch.full_like(prior, float(self.fold_in_reg_))
        return FoldIn.of(h, {"w": fold_in(x_all[sup.items], y, sup.mask, prior, lam)})     # (B, D)

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
