"""Biased matrix factorisation with ridge fold-in of new users (optionally from a features prior):
the baseline over :mod:`recsys_hyper.numerics.mf` (the fit, the fold-in and their tuning live
there, shared with the hypernetwork). With ``use_features``, a new user's vector starts from a
ridge regression from their side features to the trained user vectors instead of 0. ``dim``,
``reg``, ``reg_per_event``, ``fold_in_reg`` and ``bias_fold_in_reg`` are chosen by cross-fitting
over every training user (the cold-start protocol on each fold's users, fitted on the others) when
not given, then MF is fitted on all of them.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..numerics.crossfit import Folds
from ..numerics.features import FeatureSpec, dense_features
from ..numerics.mf import FEATURE_REG, GRID, MF, feature_prior, fit_mf, tune_mf
from ..numerics.scores import linear_scores
from ..recommender.base import FoldIn, Recommender

#: the grids of the four hyper-parameters (re-exported: they are the baseline's)
DIM_GRID, REG_GRID, REG_PER_EVENT_GRID, FOLD_IN_GRID, BIAS_FOLD_IN_GRID = (GRID[k] for k in GRID)


class MatrixFactorization(Recommender):
    """Biased MF (ALS) + ridge fold-in; ``use_features=True`` starts the new user's vector from a
    features-predicted prior instead of zero. Parameters left ``None`` are tuned on validation users."""

    name = "mf"
    _tensors = ("mu_", "item_bias_", "item_factors_", "fold_in_reg_", "feature_weights_")

    def __init__(self, dim: int | None = None, reg: float | None = None, fold_in_reg: float | None = None,
                 bias_fold_in_reg: float | None = None, use_features: bool = False, feature_reg: float = FEATURE_REG,
                 iters: int = 8, seed: int = 0, reg_per_event: float | None = None):
        super().__init__(dim=dim, reg=reg, fold_in_reg=fold_in_reg, bias_fold_in_reg=bias_fold_in_reg,
                         use_features=use_features, feature_reg=feature_reg, iters=iters, seed=seed,
                         reg_per_event=reg_per_event)
        if use_features:
            self.name = "mf-features"

    def _fit(self, dataset, h: Histories, validation_users, progress) -> None:
        p = self.params
        N = len(self.item_map_)
        if p["use_features"]:
            self.user_spec_ = FeatureSpec.fit(dataset.users, S.USER_ID)
        grid = {k: [p[k]] if p[k] is not None else list(v) for k, v in GRID.items()}
        if all(len(v) == 1 for v in grid.values()) or len(h) < 2:
            defaults = {"dim": 32, "reg": 10.0, "reg_per_event": 0.0, "fold_in_reg": 30.0, "bias_fold_in_reg": 10.0}
            point = {k: p[k] if p[k] is not None else defaults[k] for k in grid}
            mu, b_i, Q, users = fit_mf(h, N, point["dim"], point["reg"], iters=p["iters"], seed=p["seed"],
                                       reg_per_event=point["reg_per_event"])
            reg = torch.tensor([float(point["fold_in_reg"])] * point["dim"] + [float(point["bias_fold_in_reg"])])
            self._use(MF(mu, b_i, Q, reg, users, point, h.user_ids), dataset)
            return
        prior_of = (lambda mf: self._prior_of(mf, dataset)) if p["use_features"] else None
        mf, search, _ = tune_mf(h, Folds.split(h, seed=p["seed"]), N, self.rating_range_, grid, iters=p["iters"],
                                seed=p["seed"], prior_of=prior_of)
        self._use(mf, dataset)
        self.tuning_ = search.record()

    def _prior_of(self, mf: MF, dataset):
        """The features prior of ``mf``'s fold-in: a function of the users' histories."""
        weights = self._feature_weights(mf, dataset)
        return lambda h: dense_features(self.user_spec_, self.user_spec_.transform(dataset.users, h.user_ids)) @ weights

    def _feature_weights(self, mf: MF, dataset) -> torch.Tensor:
        """Ridge from the side features of the users ``mf`` was fitted on to their vectors (F, D)."""
        F = dense_features(self.user_spec_, self.user_spec_.transform(dataset.users, mf.user_ids))
        return feature_prior(F, mf.users, self.params["feature_reg"])

    def _use(self, mf: MF, dataset) -> None:
        self.mu_, self.item_bias_, self.item_factors_ = torch.tensor(mf.mu), mf.item_bias, mf.item_factors
        self.fold_in_reg_ = mf.fold_in_reg
        self.feature_weights_ = self._feature_weights(mf, dataset) if self.params["use_features"] else torch.zeros(0)

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
        mf = MF(float(self.mu_), self.item_bias_, self.item_factors_, self.fold_in_reg_, torch.zeros(0), {})
        return FoldIn.of(h, {"w": mf.fold_in(h, prior=self._prior(h, users))})          # (B, D)

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
