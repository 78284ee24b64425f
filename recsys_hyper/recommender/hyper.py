"""``HyperRecommender``: the public object. Fit once; emit a head for any user in one forward pass.

It implements the hooks of :class:`~recsys_hyper.recommender.base.Recommender` (which holds
``predict``, ``recommend``, ``save`` / ``load`` and the vocabulary check for every recommender).

Inputs are pandas frames in the data contract's columns: ``histories`` holds the interactions
(``user_id, item_id, rating, timestamp``) of the users to serve, who need not have been seen in
training; ``users`` optionally holds their side features (a user listed only there has an empty
history, k = 0); ``item_features`` optionally holds items' side features, so items the model has
never seen are scored from their features.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..config import Config
from ..data import schema as S
from ..data.dataset import Dataset, content_digest
from ..data.episodes import Histories, capped_sample, validation_episodes
from ..data.idmap import UNKNOWN, IdMap
from ..data.frames import histories_from_frame, require_columns
from ..numerics.biases import BiasFold, fit_biases, tune_biases
from ..numerics.crossfit import FixedBlend, Folds, choose_weights, crossfit_predictions, simplex
from ..numerics.mf import FEATURE_REG, MF, FoldedMF, feature_prior, tune_fold_in, tune_mf
from ..numerics.mf import GRID as MF_GRID
from ..errors import RecsysHyperError, check_count
from ..networks.hyper import BLEND, BLEND_MAX_K, Heads, HyperRecModel, ItemTable
from ..numerics.features import FeatureSpec, FeatureTensors, dense_features, with_pad_row
from ..numerics.intervals import Intervals
from ..numerics.padding import Padded, chunks_by_events
from ..numerics.scores import membership
from ..training import TrainingData, TrainResult, finetune_heads, init_biases, train, warm_start
from ..training.checkpoint import check_identity, checkpoint_path, load_checkpoint, training_identity
from .base import ITEM_IDS_FILE, AdaptedUsers, Catalogue, Indexed, Recommender
from .checks import checked_histories
from .explain import attribute
from .onboarding import choose_questions

log = logging.getLogger(__name__)

ITEM_FEATURES_FILE = "item_features.parquet"
#: buffers added to the network after models were first saved, with the value that leaves such a model as it was
ADDED_BUFFERS = {"rating_blend": lambda n: torch.zeros(BLEND_MAX_K + 1, len(BLEND)),
                 "bias_user_reg": lambda n: torch.ones(()), "mf_factors": lambda n: torch.zeros(n + 1, 0),
                 "mf_delta": lambda n: torch.zeros(n + 1), "mf_reg": lambda n: torch.ones(2, 1),
                 "mf_prior_weights": lambda n: torch.zeros(0, 1), "bias_delta": lambda n: torch.zeros(n + 1)}
EMIT_CHUNK_USERS = 4096
# users x longest history per emission sub-batch (at 131,072 a bucket's first chunk took +170-250 MB)
EMIT_MAX_CELLS = 65_536
HEAD_VARIANCE_CELLS = 1 << 18  # users x pairs per sub-batch of the scores' variances
UCB_CELLS = 1 << 23            # users x items x head width per sub-batch of the upper bound's spreads
#: ask's default weight of the uncertainty term, chosen on validation users (see ``ask``)
ASK_UNCERTAINTY = 0.0


@dataclass
class UserHeads(AdaptedUsers):
    """Emitted heads of ``n`` users, in the order of ``user_ids``.

    ``w`` (n, D): the rating head; ``v`` (n, D): the ranking residual; ``ctx`` (n, c): the
    item-item context; ``x`` (n, E): the rating head's coefficients of the items' MF columns (E = 0
    without them). With item vector ``phi_i = [e_i, 1]`` (D = d + 1), target vector ``p_i``, MF
    columns ``extra_i``, item biases ``b_i`` / ``c_i`` and the global mean ``mu``: ``rating = mu +
    b_i + w . phi_i + x . extra_i`` and ``ranking score = c_i + (v + w) . phi_i + ctx . p_i``
    (:class:`~recsys_hyper.networks.hyper.Heads` computes both).
    """

    w: np.ndarray
    v: np.ndarray
    ctx: np.ndarray
    x: np.ndarray | None = None
    #: exploration by an upper bound (``adapt(explore="ucb")``): the Cholesky factors (n, D, D) of
    #: each user's head covariance in rating units, and the multiple of the score's standard
    #: deviation added to the ranking score; None: rank by the score itself
    ucb_factor: np.ndarray | None = None
    ucb_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.x is None:
            self.x = np.zeros((len(self.w), 0), np.float32)

    def heads(self, rows=None) -> Heads:
        """The heads of ``rows`` (default: all) as tensors."""
        parts = (self.w, self.v, self.ctx, self.x)
        if rows is not None:
            parts = tuple(a[rows] for a in parts)
        return Heads(*(torch.from_numpy(np.ascontiguousarray(a)) for a in parts))

    @property
    def rank_head(self) -> np.ndarray:
        """(n, D + c + E): what the ranking score dots with the exported ``[phi_i, p_i, extra_i]``
        (zeros on the MF columns: they are the rating's only)."""
        return np.pad(self.heads().rank_vector.numpy(), ((0, 0), (0, self.x.shape[1])))

    @property
    def rating_head(self) -> np.ndarray:
        """(n, D + c + E): ``[w, 0, x]``, so that it dots with the same exported item vectors."""
        return np.concatenate([self.w, np.zeros((len(self.w), self.ctx.shape[1]), np.float32), self.x], 1)


@dataclass
class SpecialCases:
    """What the rating contains as exact special cases, their hyper-parameters chosen by
    cross-fitting over every training user (:mod:`~recsys_hyper.numerics.crossfit`): ``bias`` the
    bias baseline fitted on every training user (:func:`~recsys_hyper.numerics.biases.tune_biases`'s
    record; None on implicit data or without ``bias_init = "fitted"``), ``network_bias`` the same
    regularisers fitted on the network's training users only (its item biases: the validation users
    never enter them); ``mf`` MF fold-in fitted on every training user, ``mf_features`` the same with
    the fold-in regularisers chosen for the features prior, ``prior_weights`` that prior's ridge
    weights (F, d + 1) (all three None when off); ``held_out`` the three blended with their
    cross-fitted weights per k, fitted without the validation users (``held_out_parts``: their bias
    fit, MF, MF with the features prior and its weights), ``searches`` every search (name -> search),
    ``weights`` the special cases' own blend per k."""

    bias: dict | None = None
    network_bias: dict | None = None
    mf: MF | None = None
    mf_features: MF | None = None
    prior_weights: torch.Tensor | None = None
    held_out: FixedBlend | None = None
    held_out_parts: tuple = ()
    weights: dict = field(default_factory=dict)
    searches: dict = field(default_factory=dict)

    def install(self, model: HyperRecModel, held_out: bool) -> None:
        """Put the special cases in the model's buffers, as deltas from its own mu and item biases:
        those fitted without the validation users (``held_out``: what the validation users are
        measured with) or those fitted on every training user (what is served)."""
        if self.bias is None or not self.held_out_parts:          # no blend: nothing to put in
            return
        if held_out:
            (mu, b_i), mf, mf_features, weights = self.held_out_parts
        else:
            mu, b_i, mf, mf_features, weights = (self.bias["mu"], self.bias["item_bias"], self.mf, self.mf_features,
                                                 self.prior_weights)
        N = len(b_i)
        with torch.no_grad():
            model.bias_user_reg.fill_(float(self.bias["user_reg"]))
            model.bias_delta[:N] = torch.from_numpy(np.asarray(mu + b_i, np.float64)) - model.mu - model.item_bias[:N]
            if mf is not None and model.mf_rank:
                model.mf_factors[:N] = mf.item_factors
                model.mf_delta[:N] = mf.mu + mf.item_bias - model.mu - model.item_bias[:N]
                model.mf_reg.copy_(torch.stack([mf.fold_in_reg, mf_features.fold_in_reg]))
                model.mf_prior_weights.copy_(weights)


@dataclass
class HyperCatalogue(Catalogue):
    """Items scoreable at inference: the training vocabulary plus new items with features.

    Row ``size`` is a padding row. ``index`` maps each row to the model's id vocabulary
    (``n_items`` = no id embedding: scored from features alone).
    """

    index: torch.Tensor
    feats: FeatureTensors
    n_new: int


class HyperRecommender(Recommender):
    """Hypernetwork recommender: history -> user embedding -> head weights -> scores.

    Parameters
    ----------
    config:
        Model and training configuration (:class:`~recsys_hyper.config.Config`).

    Examples
    --------
    >>> from recsys_hyper import HyperRecommender, load_dataset        # doctest: +SKIP
    >>> rec = HyperRecommender().fit(load_dataset("data/default"))     # doctest: +SKIP
    >>> rec.recommend(new_user_events, k=10)                           # doctest: +SKIP
    """

    name = "hyper"

    def __init__(self, config: Config | None = None):
        super().__init__(config=config or Config())

    @property
    def config(self) -> Config:
        """The model's hyper-parameters (``get_params()["config"]``)."""
        return self.params["config"]

    # ------------------------------------------------------------------------------ fitting

    def fit(self, dataset: Dataset, validation_users=None, progress: bool = True,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, callback=None,
            warm_start: "HyperRecommender | None" = None, restart_stale: bool = False) -> "HyperRecommender":
        """Meta-train on ``dataset``'s users. ``validation_users`` (ids) are held out for early
        stopping and calibration; by default a seeded ``val_fraction`` of the users.
        ``checkpoint_dir`` / ``resume``: a checkpoint per epoch, and continuing from it (refused when
        it belongs to another run: other data, config, validation users or warm start; with
        ``restart_stale`` such a checkpoint is replaced by a fresh start instead);
        ``callback(epoch, metrics)`` after every epoch; ``warm_start``: a fitted model whose
        weights initialise this one (see :func:`recsys_hyper.training.warm_start`)."""
        return super().fit(dataset, validation_users, progress=progress, checkpoint_dir=checkpoint_dir,
                           resume=resume, callback=callback, warm_start=warm_start, restart_stale=restart_stale)

    def _fit(self, dataset: Dataset, h: Histories, validation_users, progress: bool, checkpoint_dir=None,
             resume: bool = False, callback=None, warm_start: "HyperRecommender | None" = None,
             restart_stale: bool = False) -> None:
        cfg = self.config
        torch.manual_seed(cfg.train.seed)
        item_map = self.item_map_
        item_spec = FeatureSpec.fit(dataset.items, S.ITEM_ID)
        user_spec = FeatureSpec.fit(dataset.users, S.USER_ID)
        if len(h) < 2:
            raise RecsysHyperError(f"{dataset.source}: {len(h)} users with interactions; "
                                   "meta-training needs at least 2 (training and validation users)")
        val_rows = self._validation_rows(h, validation_users)
        train_rows = np.setdiff1d(np.arange(len(h)), val_rows)
        # validation users capped as in training's validation, so the searches cost the same at any size
        tune_rows = val_rows[capped_sample(len(val_rows), cfg.train.max_val_users, [cfg.train.seed, 104729])]
        identity = None
        if checkpoint_dir is not None:                 # what a checkpoint of this run belongs to
            identity = training_identity(cfg.to_dict(), content_digest(dataset.interactions), h.user_ids[val_rows],
                                         warm_start.model_.state_dict() if warm_start is not None else None)
            if resume and not restart_stale:           # another run's checkpoint: refused before the searches
                path = checkpoint_path(checkpoint_dir)
                saved = load_checkpoint(path)
                if saved is not None:
                    check_identity(saved.get("identity"), identity, path)
        cases = self._special_cases(dataset, h, train_rows, val_rows, user_spec)
        mf = cases.mf
        data = TrainingData(
            histories=h,
            user_feats=None if user_spec.empty else user_spec.transform(dataset.users, h.user_ids),
            item_index=torch.arange(len(item_map) + 1),
            item_feats=with_pad_row(item_spec.transform(dataset.items, item_map.values)),
            train_rows=train_rows, val_rows=val_rows, implicit=dataset.implicit, rating_range=self.rating_range_,
            closed_form=cases.held_out)
        model = HyperRecModel(len(item_map), item_spec, user_spec, mf_rank=mf.params["dim"] if mf else 0,
                              **vars(cfg.model))
        init_biases(model, h.select(train_rows), len(item_map), fitted=cases.network_bias)
        if not cfg.train.train_item_bias:
            model.item_bias.requires_grad_(False)
        if warm_start is not None:
            _warm_start_from(model, item_map, item_spec, user_spec, warm_start)
        result = train(model, data, cfg, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                       callback=callback, identity=identity, restart_stale=restart_stale)
        model.eval()
        self.model_ = model
        self.item_spec_, self.user_spec_ = item_spec, user_spec
        self.item_features_ = _known_item_features(dataset.items, item_spec)
        self.training_ = result
        self.n_train_users_, self.n_val_users_ = len(train_rows), len(val_rows)
        self.tuning_ = _tuning(cases, result)
        # prediction intervals: the finished model's errors on the validation users, per k, with the
        # special cases fitted without them; then the special cases fitted on every training user
        cases.install(model, held_out=True)
        self._cache = {}
        self.intervals_ = None if dataset.implicit else self._calibrate_intervals(h.select(tune_rows), dataset.users)
        cases.install(model, held_out=False)
        self._cache = {}
        self._item_vectors(self._catalogue())  # item vectors are computed once, not per request

    def _calibrate_intervals(self, validation: Histories, users: pd.DataFrame | None = None) -> Intervals | None:
        """The intervals' half-widths per k and level from the validation users' held-out
        ratings, each predicted from their k earliest events and features, as served (see
        :mod:`recsys_hyper.numerics.intervals`); and the rating noise variance that puts the
        heads' posterior in rating units (:meth:`score_std`)."""
        from ..numerics.measure import measure_episode
        from .base import indexed

        view, errors, variances = indexed(self, users), {}, []
        for ep in validation_episodes(validation):
            m = measure_episode(view, ep.support, ep.query, rank=False, per_user=False)
            errors[ep.k] = m.predicted - m.actual
            variances.append(self._head_variance(ep.support, m.owner, ep.query.items, view.catalogue, users))
        intervals = Intervals.calibrate(errors)
        if intervals is not None:
            intervals.fit_noise(np.concatenate(list(errors.values())), np.concatenate(variances))
        return intervals

    def _head_variance(self, h: Histories, rows: np.ndarray, items: np.ndarray, cat: HyperCatalogue,
                       users: pd.DataFrame | None) -> np.ndarray:
        """``phi_i^T Sigma_u phi_i`` of pairs (``rows`` into ``h``, ``items`` catalogue rows): the
        variance of the head's part of the pair's score under the user's posterior, in units of
        the rating noise (:meth:`HyperRecModel.head_covariance`). Each user's pairs are gathered
        into one (pairs, D) block, users in sub-batches of bounded size."""
        phi_all = self._item_vectors(cat)[1].phi
        rows, items = np.asarray(rows, np.int64), np.asarray(items, np.int64)
        out = np.full(len(rows), np.nan)
        order = np.argsort(rows, kind="stable")
        first = np.searchsorted(rows[order], np.arange(len(h)))
        count = np.searchsorted(rows[order], np.arange(len(h)), side="right") - first
        cap = max(1, HEAD_VARIANCE_CELLS // max(1, int(count.max(initial=0))))
        for sub, sigma in self._head_covariances(h, cat, users, max_users=min(EMIT_CHUNK_USERS, cap)):
            n = int(count[sub].max())
            if n == 0:
                continue
            valid = np.arange(n)[None] < count[sub][:, None]                                 # (b, n)
            pos = order[np.where(valid, first[sub][:, None] + np.arange(n)[None], 0)]       # pair of each slot
            phi = phi_all[torch.from_numpy(np.where(valid, items[pos], cat.size))]          # (b, n, D)
            q = ((phi @ sigma) * phi).sum(-1).numpy()
            out[pos[valid]] = q[valid]
        return out

    def score_std(self, histories: pd.DataFrame | None, items: pd.DataFrame, users: pd.DataFrame | None = None,
                  item_features: pd.DataFrame | None = None, allow_rating_mismatch: bool = False) -> np.ndarray:
        """The standard deviation of each ``(user_id, item_id)`` row's score (for instance the
        output of :meth:`recommend`) under the user's head posterior: ``sqrt(s2 phi_i^T Sigma_u
        phi_i)``, where ``Sigma_u`` is the fold-in's Gaussian posterior over the rating head that
        the ranking score shares and ``s2`` the rating noise variance fitted on validation users.
        It shrinks as the user's events arrive, and is larger for items unlike those events: how
        sure the model is of this user's score of this item (the rating's predictive spread adds
        the noise, see :meth:`predict_interval`). Explicit ratings only (the noise is a rating's);
        NaN for items the model cannot score. Users without events (k = 0) get their prior's spread."""
        self._check_fitted()
        require_columns(items, (S.USER_ID, S.ITEM_ID), "items")
        self._noise_variance()                       # an implicit or older model is refused before any work
        cat = self._catalogue(item_features)
        # as predict: a user of ``items`` with no events has the population's (or their features') prior
        h = histories_from_frame(checked_histories(self, histories, cat.ids, allow_rating_mismatch=allow_rating_mismatch),
                                 cat.ids, users, pd.unique(items[S.USER_ID]))
        idx = cat.ids.index(items[S.ITEM_ID].to_numpy(), unknown="mark")
        rows = IdMap(h.user_ids, name="user").index(items[S.USER_ID].to_numpy())
        std = self._score_std(h, rows, np.where(idx == UNKNOWN, cat.size, idx), cat, users)
        return np.where(idx == UNKNOWN, np.nan, std).astype(np.float32)

    def _score_std(self, h: Histories, rows: np.ndarray, items: np.ndarray, cat: HyperCatalogue,
                   users: pd.DataFrame | None) -> np.ndarray:
        """:meth:`score_std` for pairs in indices (``rows`` into ``h``, ``items`` catalogue rows)."""
        q = self._head_variance(h, rows, items, cat, users)
        return np.sqrt(self._noise_variance() * np.maximum(q, 0.0)).astype(np.float32)

    def _noise_variance(self) -> float:
        if self.implicit_:
            raise RecsysHyperError("this model was trained on implicit feedback: the score's standard deviation is "
                                   "in units of a rating's noise, which implicit data does not have")
        noise = getattr(getattr(self, "intervals_", None), "noise_var", None)
        if noise is None:
            raise RecsysHyperError("this model was saved without the noise calibration of its scores' standard "
                                   "deviation (a version before it existed): retrain it")
        return noise

    def predict_interval(self, histories: pd.DataFrame | None, pairs: pd.DataFrame, level: float = 0.9,
                         users: pd.DataFrame | None = None, item_features: pd.DataFrame | None = None,
                         allow_rating_mismatch: bool = False) -> pd.DataFrame:
        """:meth:`predict` with a prediction interval: ``pairs`` with ``prediction``, ``lower``,
        ``upper`` (covering the actual rating with probability ``level`` for a new user with as
        many events, as calibrated on validation users; clipped to the rating scale) and ``std``
        (the predictive standard deviation at the user's k). Explicit ratings only: an implicit
        model gives relevance scores, which have no rating interval."""
        if not 0.01 <= level <= 0.99:
            raise RecsysHyperError(f"the interval's level must be between 0.01 and 0.99 (the levels calibrated), "
                                   f"got {level!r}; e.g. 0.9")
        self._check_fitted()
        if self.implicit_:
            raise RecsysHyperError("this model was trained on implicit feedback: it gives relevance scores, "
                                   "not ratings, so there is no rating interval; drop --interval")
        if getattr(self, "intervals_", None) is None:
            raise RecsysHyperError("this model was saved without interval calibration (a version before "
                                   "intervals existed): retrain it to predict intervals")
        require_columns(pairs, (S.USER_ID, S.ITEM_ID), "pairs")
        # the heads once (histories checked there); each user's k is the events their head used
        heads = self.adapt(histories, users, user_ids=pd.unique(pairs[S.USER_ID]), item_features=item_features,
                           allow_rating_mismatch=allow_rating_mismatch)
        pred = self.predict(None, pairs, users=users, item_features=item_features, heads=heads)
        k = heads.support_sizes[IdMap(heads.user_ids, name="user").index(pairs[S.USER_ID].to_numpy())]
        lower, upper, std = self.intervals_.bounds(pred, k, level, self.rating_range_)
        out = pairs.reset_index(drop=True).copy()
        out["prediction"] = pred.astype(np.float32)
        out["lower"], out["upper"], out["std"] = (a.astype(np.float32) for a in (lower, upper, std))
        return out

    def _fit_problems(self) -> list[str]:
        problems = []
        result = self.training_
        if result.best_epoch < 0 or not result.history:
            problems.append("the validation figures the best epoch is chosen by were never finite")
        else:
            best = result.history[result.best_epoch]
            bad = [f"{name} {best.get(key)}" for key, name in (("val_loss", "loss"), ("val_mae", "MAE"),
                                                               ("val_ndcg10", "nDCG@10"))
                   if not np.isfinite(best.get(key, np.nan))]
            if bad:
                problems.append(f"the best epoch's validation {', '.join(bad)} (epoch {result.best_epoch + 1})")
        if not all(np.isfinite(result.prior_multiplier)):
            problems.append(f"the prior-strength multipliers {result.prior_multiplier}")
        return problems + super()._fit_problems()

    def _divergence_fix(self) -> str:
        return (f"Lower the learning rate (--config [train] lr, now {self.config.train.lr:g}) or check the data for "
                f"extreme values (`recsys-hyper data describe DIR`).")

    def _special_cases(self, dataset: Dataset, h: Histories, train_rows: np.ndarray, val_rows: np.ndarray,
                       user_spec: FeatureSpec) -> SpecialCases:
        """The closed-form models the rating contains as exact special cases: their
        hyper-parameters and their own blend per k chosen by cross-fitting over every training user
        (the validation users one of the folds, so that the fits of the others never saw them),
        then each fitted on every training user, as its baseline is (see :class:`SpecialCases`)."""
        t = self.config.train
        cases = SpecialCases()
        if t.bias_init != "fitted" or dataset.implicit:
            return cases
        N, rr = len(self.item_map_), self.rating_range_
        folds = Folds.split(h, t.crossfit_folds, seed=t.seed, first=val_rows, max_users=t.crossfit_max_users)
        cases.bias = tune_biases(h, folds, N, rr)
        item_reg, user_reg = cases.bias["item_reg"], cases.bias["user_reg"]
        mu, b_i, _ = fit_biases(h.select(train_rows), N, item_reg, user_reg)
        cases.network_bias = {"mu": mu, "item_bias": b_i, "user_reg": user_reg}
        if not t.rating_blend_grid:
            return cases
        bias_of = lambda j: BiasFold(*cases.bias["fold_fits"][j], user_reg, rr)  # noqa: E731
        members, parts = bias_of, lambda j: (cases.bias["fold_fits"][j], None, None, None)
        if t.mf_special_case:
            dense = lambda ids: dense_features(user_spec, user_spec.transform(dataset.users, ids))  # noqa: E731
            weights_of = lambda m: feature_prior(dense(m.user_ids), m.users, FEATURE_REG)  # noqa: E731

            def prior_of(m: MF):
                w = weights_of(m)
                return lambda hh: dense(hh.user_ids) @ w

            sample = h if len(h) <= t.mf_max_users else h.select(capped_sample(len(h), t.mf_max_users, [t.seed, 7877]))
            mf, cases.searches["mf"], fold_mfs = tune_mf(sample, folds, N, rr, MF_GRID, seed=t.seed)
            cases.mf_features, cases.searches["mf_features"], fold_mffs = tune_fold_in(
                mf, folds, fold_mfs, rr, prior_of, MF_GRID)
            cases.mf, cases.prior_weights = mf, weights_of(mf)
            priors = [prior_of(m) for m in fold_mfs]
            members = lambda j: [bias_of(j), FoldedMF(fold_mfs[j], rr), FoldedMF(fold_mffs[j], rr, priors[j])]  # noqa: E731
            parts = lambda j: (cases.bias["fold_fits"][j], fold_mfs[j], fold_mffs[j], weights_of(fold_mfs[j]))  # noqa: E731
        else:
            members = lambda j: [bias_of(j)]  # noqa: E731
        # the special cases' own blend per k, on every user's out-of-fold predictions
        n = 3 if t.mf_special_case else 1
        candidates = simplex(t.rating_blend_grid, n)
        choice = choose_weights(crossfit_predictions(folds, members), candidates, rr)
        if not choice.weights:                       # no fold user long enough to measure: no blend
            return cases
        cases.weights = choice.weights
        cases.held_out = FixedBlend(members(0), choice.weights, rr)         # fold 0: the validation users
        cases.held_out_parts = parts(0)
        return cases

    def _validation_rows(self, h: Histories, validation_users) -> np.ndarray:
        t = self.config.train
        if validation_users is not None:
            rows = np.flatnonzero(np.isin(h.user_ids, np.asarray(list(validation_users))))
            if rows.size == 0:
                raise RecsysHyperError("none of the validation_users has interactions in the training data")
            return rows
        n_val = max(1, int(round(t.val_fraction * len(h))))
        return np.sort(np.random.default_rng([t.seed, 7919]).permutation(len(h))[:n_val])

    # ------------------------------------------------------------------------------ the catalogue

    def _scores_new_items(self) -> bool:
        return not self.item_spec_.empty

    def _catalogue(self, item_features: pd.DataFrame | None = None) -> HyperCatalogue:
        """The training vocabulary, plus the items of ``item_features`` it does not know."""
        if item_features is None and "catalogue" in self._cache:    # the training catalogue is fixed
            return self._cache["catalogue"]
        known = self.item_map_.values
        new = np.zeros(0, dtype=known.dtype)
        if item_features is not None and len(item_features):
            ids = item_features[S.ITEM_ID].to_numpy()
            new = pd.unique(ids[self.item_map_.index(ids, unknown="mark") == UNKNOWN])
        all_ids = np.concatenate([known, new.astype(known.dtype)]) if len(new) else known
        feats_frame = self.item_features_
        if len(new):
            extra = item_features[item_features[S.ITEM_ID].isin(new)]
            feats_frame = extra if feats_frame is None else pd.concat([feats_frame, extra], ignore_index=True)
        feats = with_pad_row(self.item_spec_.transform(feats_frame, all_ids))
        index = torch.cat([torch.arange(len(known)), torch.full((len(new) + 1,), len(known))])
        cat = HyperCatalogue(IdMap(all_ids, name="item"), index, feats, len(new))
        if item_features is None:
            self._cache["catalogue"] = cat
        return cat

    @torch.no_grad()
    def _item_vectors(self, cat: HyperCatalogue) -> tuple[torch.Tensor, ItemTable]:
        """The catalogue's item vectors e (N + 1, d) and item table (N + 1 rows, the last one padding).
        Those of the training catalogue are computed once (the model is fixed), those of a
        catalogue extended with new items each time."""
        cached = cat is self._cache.get("catalogue")
        if cached and "item_vectors" in self._cache:
            return self._cache["item_vectors"]
        e_all = self.model_.items(cat.index, cat.feats)
        out = (e_all, self.model_.item_table(e_all, cat.index).for_gemm())
        if cached:
            self._cache["item_vectors"] = out
        return out

    # ------------------------------------------------------------------------------ the hooks

    def adapt(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None, user_ids=None,
              item_features: pd.DataFrame | None = None, mode: Literal["zero-shot", "finetune"] = "zero-shot",
              steps: int = 5, lr: float = 0.002, allow_rating_mismatch: bool = False,
              explore: Literal["ucb", "thompson"] | None = None, explore_weight: float = 1.0,
              seed: int = 0) -> UserHeads:
        """Heads for new users. ``zero-shot``: the emitted heads (one forward pass). ``finetune``:
        then ``steps`` gradient steps on the heads' own parameters only, on each user's support
        set (its history), with an L2 pull towards the emitted head. The model is never changed.

        ``explore`` (explicit ratings; zero-shot heads): heads whose *ranking* explores, from each
        user's head posterior: ``"thompson"`` ranks by one draw of the head (seeded by ``seed``;
        ``explore_weight`` scales the draw), ``"ucb"`` by the score plus ``explore_weight`` times
        its standard deviation (see :meth:`score_std`). Pass them to :meth:`recommend` (``heads=``);
        predictions are unchanged."""
        return super().adapt(histories, users, user_ids=user_ids, item_features=item_features,
                             allow_rating_mismatch=allow_rating_mismatch, mode=mode, steps=steps, lr=lr,
                             explore=explore, explore_weight=explore_weight, seed=seed)

    def _adapt(self, h: Histories, users: pd.DataFrame | None, cat: HyperCatalogue,
               mode: Literal["zero-shot", "finetune"] = "zero-shot", steps: int = 5, lr: float = 0.002,
               explore: Literal["ucb", "thompson"] | None = None, explore_weight: float = 1.0,
               seed: int = 0) -> UserHeads:
        if mode not in ("zero-shot", "finetune"):
            raise ValueError(f"The 'mode' parameter of adapt must be 'zero-shot' or 'finetune'. Got {mode!r} instead.")
        heads = self._emit(h, cat, users)
        if explore is not None:
            return self._explore(heads, h, cat, users, explore, explore_weight, seed)
        if mode == "zero-shot" or steps <= 0:
            return heads
        tuned = finetune_heads(self.model_, heads.heads(), self._item_vectors(cat)[1],
                               Padded.from_histories(h, pad_item=cat.size), self.implicit_, self.config.train,
                               steps, lr)
        return UserHeads(heads.user_ids, heads.support_sizes, tuned.w.numpy(), tuned.v.numpy(), heads.ctx, heads.x)

    def _explore(self, heads: UserHeads, h: Histories, cat: HyperCatalogue, users: pd.DataFrame | None,
                 explore: str, weight: float, seed: int) -> UserHeads:
        """The heads ranking with exploration, from each user's head posterior ``N(w_u, s2 Sigma_u)``
        (see :meth:`score_std`): ``thompson`` ranks by one seeded draw of the head (the ranking
        head moved by the draw's difference from the mean, ``weight`` scaling the draw), ``ucb``
        by the score plus ``weight`` times its standard deviation. Ratings are left as they were."""
        if explore not in ("ucb", "thompson"):
            raise RecsysHyperError(f"explore must be 'ucb' or 'thompson', got {explore!r}")
        if not (np.isfinite(weight) and weight >= 0):
            raise RecsysHyperError(f"the exploration weight must be a finite number >= 0, got {weight!r}")
        noise = self._noise_variance()
        D = heads.w.shape[1]
        # UCB keeps each user's factor (n, D, D) for the ranking; Thompson only the draw it moves v by
        factor = np.zeros((len(h), D, D), np.float32) if explore == "ucb" else None
        draw = np.random.default_rng([int(seed), 4099]).standard_normal((len(h), D, 1)).astype(np.float32)
        v = heads.v.copy()
        for rows, sigma in self._head_covariances(h, cat, users):
            chol = torch.linalg.cholesky(noise * sigma.double()).float().numpy()
            if factor is not None:
                factor[rows] = chol
            else:
                v[rows] += weight * (chol @ draw[rows])[..., 0]
        if explore == "ucb":
            return replace(heads, ucb_factor=factor, ucb_weight=float(weight))
        return replace(heads, v=v)

    def _head_covariances(self, h: Histories, cat: HyperCatalogue, users: pd.DataFrame | None, max_users: int = 0):
        """``(rows, Sigma)`` for the users of ``h`` in sub-batches (rows into ``h``; Sigma (b, D, D),
        :meth:`HyperRecModel.head_covariance`), users of similar history length together;
        ``max_users`` caps a sub-batch."""
        model = self.model_
        e_all, _ = self._item_vectors(cat)
        uf_all = None if self.user_spec_.empty else self.user_spec_.transform(users, h.user_ids)
        by_length = np.argsort(h.lengths, kind="stable")
        for part in chunks_by_events(h.lengths[by_length], max_users or EMIT_CHUNK_USERS, max_cells=EMIT_MAX_CELLS):
            rows = by_length[part]
            pad = Padded.from_histories(h.select(rows), pad_item=cat.size)
            uf = None if uf_all is None else uf_all.take(torch.from_numpy(rows))
            with torch.no_grad():                  # not across the yield: the caller's mode is its own
                sigma = model.head_covariance(e_all[pad.items], pad.ratings, pad.mask, uf)
            yield rows, sigma

    def _emit(self, h: Histories, cat: HyperCatalogue, users: pd.DataFrame | None) -> UserHeads:
        """Heads for every row of ``h``. Users are taken in order of history length, in
        sub-batches of bounded size (users x longest history), so padding stays small and memory
        bounded whatever the mix of light and heavy users; heads go back to ``h``'s order."""
        model = self.model_
        e_all, _ = self._item_vectors(cat)
        uf_all = None if self.user_spec_.empty else self.user_spec_.transform(users, h.user_ids)
        D = model.dim + 1
        c = model.rank_context_dim
        w = np.zeros((len(h), D), np.float32)
        v = np.zeros((len(h), D), np.float32)
        ctx = np.zeros((len(h), c), np.float32)
        x = np.zeros((len(h), model.extra_dim), np.float32)
        by_length = np.argsort(h.lengths, kind="stable")
        with torch.no_grad():
            for part in chunks_by_events(h.lengths[by_length], EMIT_CHUNK_USERS, max_cells=EMIT_MAX_CELLS):
                rows = by_length[part]
                uf = None if uf_all is None else uf_all.take(torch.from_numpy(rows))
                heads, _ = model.emit(e_all, cat.index, Padded.from_histories(h.select(rows), pad_item=cat.size), uf)
                w[rows] = heads.w.numpy()
                v[rows] = heads.v.numpy()
                ctx[rows] = heads.ctx.numpy()
                x[rows] = heads.x.numpy()
        return UserHeads(h.user_ids, h.lengths.copy(), w, v, ctx, x)

    def _rate(self, adapted: UserHeads, rows: torch.Tensor, items: torch.Tensor, cat: HyperCatalogue) -> torch.Tensor:
        """Ratings (explicit data) or ranking scores (implicit) of the pairs."""
        table = self._item_vectors(cat)[1].take(items)
        heads = adapted.heads(rows.numpy())
        return heads.ranking(table, pairs=True) if self.implicit_ else heads.rating(table, pairs=True)

    def _rank(self, adapted: UserHeads, rows: np.ndarray, cat: HyperCatalogue) -> torch.Tensor:
        table = self._item_vectors(cat)[1].take(slice(0, cat.size))
        scores = adapted.heads(rows).ranking(table)
        if adapted.ucb_factor is not None:                  # + weight x the score's standard deviation
            phi, factor = table.phi, torch.from_numpy(adapted.ucb_factor[rows])
            step = max(1, UCB_CELLS // (phi.shape[0] * phi.shape[1]))
            for s in range(0, len(rows), step):
                spread = (phi @ factor[s:s + step]).square().sum(-1).sqrt()             # (b, N) = ||L_u^T phi_i||
                scores[s:s + step] += adapted.ucb_weight * spread
        return scores

    # ------------------------------------------------------------------------------ onboarding and explanations

    def ask(self, histories: pd.DataFrame | None, n: int = 5, users: pd.DataFrame | None = None, user_ids=None,
            asked: pd.DataFrame | None = None, item_features: pd.DataFrame | None = None,
            targets: int = 100, uncertainty: float = ASK_UNCERTAINTY,
            allow_rating_mismatch: bool = False) -> pd.DataFrame:
        """The ``n`` items to ask each user about next (onboarding), best first.

        An item's value is the chance the user can answer (the model's own ranking score, as a
        softmax over the items not yet asked) times, raised to ``uncertainty``, how much the
        answer would shrink the uncertainty of the user's head where it matters for ranking (the
        variance of the scores of their current top ``targets`` items); see
        :mod:`recsys_hyper.recommender.onboarding`. The default weight was chosen on validation
        users with the elicitation protocol (``benchmarks/bench_onboarding.py``): on MovieLens
        100K and the synthetic data the chance of an answer mattered more than the uncertainty
        term (weights 0, 0.25, 0.5 and 1 measured), so by default items are ranked by the chance
        of an answer alone (``value`` is that chance); pass ``uncertainty=1`` for the full
        expected-information rule (``value``: the expected fall of the variance, in units of the
        rating noise, times the chance of an answer).

        Items in the history and the ``asked`` pairs (``user_id, item_id``: questions already put,
        answered or not) are never asked. Users: those of ``histories`` and ``users`` (a user
        with no events is asked the features-informed population's questions), or ``user_ids``.

        Returns ``user_id, item_id, rank, value``; fewer than ``n`` rows for a user only when
        fewer items are left to ask.
        """
        self._check_fitted()
        cat = self._catalogue(item_features)
        n = check_count(n, "n", "ask", cat.size)
        targets = check_count(targets, "targets", "ask")
        ids = _known_users(histories, users, user_ids, "ask")
        h = histories_from_frame(checked_histories(self, histories, cat.ids, allow_rating_mismatch=allow_rating_mismatch),
                                 cat.ids, users, ids)
        asked_h = None
        if asked is not None:
            require_columns(asked, (S.USER_ID, S.ITEM_ID), "asked")
            asked_h = histories_from_frame(asked[[S.USER_ID, S.ITEM_ID]], cat.ids, user_ids=h.user_ids, warn=False)
        items, values = self._ask_rows(h, n, users=users, asked=asked_h, catalogue=cat, targets=targets,
                                       uncertainty=uncertainty)
        b, q = np.nonzero(np.isfinite(values))
        return pd.DataFrame({S.USER_ID: h.user_ids[b], S.ITEM_ID: cat.ids.ids(items[b, q]),
                             "rank": (q + 1).astype(np.int32), "value": values[b, q].astype(np.float32)})

    def _ask_rows(self, h: Histories, n: int, users: pd.DataFrame | None = None, asked: Histories | None = None,
                  catalogue: HyperCatalogue | None = None, targets: int = 100,
                  uncertainty: float = ASK_UNCERTAINTY) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ask` for histories in catalogue indices (see :meth:`HyperIndexed.ask`)."""
        cat = catalogue or self._catalogue()
        e_all, table = self._item_vectors(cat)
        table = table.take(slice(0, cat.size))
        uf_all = None if self.user_spec_.empty else self.user_spec_.transform(users, h.user_ids)
        items = np.zeros((len(h), n), np.int64)
        values = np.full((len(h), n), -np.inf, np.float32)
        by_length = np.argsort(h.lengths, kind="stable")
        for part in chunks_by_events(h.lengths[by_length], EMIT_CHUNK_USERS, max_cells=EMIT_MAX_CELLS):
            rows = by_length[part]
            sub = h.select(rows)
            excluded = membership(sub, cat.size)
            if asked is not None:
                excluded |= membership(asked.select(rows), cat.size)
            uf = None if uf_all is None else uf_all.take(torch.from_numpy(rows))
            i, v = choose_questions(self.model_, e_all, cat.index, table, Padded.from_histories(sub, pad_item=cat.size),
                                    uf, excluded, n, targets, uncertainty)
            items[rows], values[rows] = i.numpy(), v.numpy()
        return items, values

    def explain(self, histories: pd.DataFrame | None, items: pd.DataFrame, users: pd.DataFrame | None = None,
                item_features: pd.DataFrame | None = None, top_events: int | None = 5,
                allow_rating_mismatch: bool = False) -> pd.DataFrame:
        """Why each ``(user_id, item_id)`` row of ``items`` scores what it does (for instance the
        output of :meth:`recommend`): the user's history events that moved its ranking score most.

        Returns ``items`` with the columns ``score`` (when absent), ``score_prior`` (the
        population prior: what a user with no history and no features gets), ``score_features``
        (what the user's features add), ``score_history`` (what their events add; the three sum
        to ``score``) and ``because``: the ``top_events`` events (all with ``None``) with the
        largest contributions, largest first, as ``{item_id, rating, contribution}`` (signed).
        The fold-in and item-item parts of a contribution are exact; the part that goes through
        the hypernetwork is a leave-one-out estimate (see :mod:`recsys_hyper.recommender.explain`).
        """
        self._check_fitted()
        require_columns(items, (S.USER_ID, S.ITEM_ID), "items")
        if top_events is not None:
            top_events = check_count(top_events, "top_events", "explain")
        cat = self._catalogue(item_features)
        ids = _known_users(histories, users, pd.unique(items[S.USER_ID]), "explain")
        h = histories_from_frame(checked_histories(self, histories, cat.ids, allow_rating_mismatch=allow_rating_mismatch),
                                 cat.ids, users, ids)
        idx = cat.ids.index(items[S.ITEM_ID].to_numpy(), unknown="mark")
        if (idx == UNKNOWN).any():
            bad = items[S.ITEM_ID].to_numpy()[idx == UNKNOWN]
            raise RecsysHyperError(f"explain: {len(bad):,} rows of items are on items the model cannot score "
                                   f"(e.g. {np.asarray(pd.unique(bad))[:5].tolist()}); pass their features in item_features, or drop them")
        rows = IdMap(h.user_ids, name="user").index(items[S.USER_ID].to_numpy())
        parts = self._explain_rows(h, rows, idx, users=users, catalogue=cat, top_events=top_events)
        out = items.reset_index(drop=True).copy()
        if "score" not in out:
            out["score"] = parts["score"]
        for name in ("score_prior", "score_features", "score_history"):
            out[name] = parts[name]
        out["because"] = parts["because"]
        return out

    def _explain_rows(self, h: Histories, rows: np.ndarray, items: np.ndarray, users: pd.DataFrame | None = None,
                      catalogue: HyperCatalogue | None = None, top_events: int | None = 5) -> dict:
        """:meth:`explain` for pairs in indices (see :meth:`HyperIndexed.explain`)."""
        cat = catalogue or self._catalogue()
        e_all, table = self._item_vectors(cat)
        uf_all = None if self.user_spec_.empty else self.user_spec_.transform(users, h.user_ids)
        rows, items = np.asarray(rows, np.int64), np.asarray(items, np.int64)
        P = len(rows)
        cols = {name: np.zeros(P, np.float32) for name in ("score", "score_prior", "score_features", "score_history")}
        pair_of, ev_item, ev_rating, ev_contrib, counts = [], [], [], [], np.zeros(P, np.int64)
        attributions = []
        order = np.argsort(rows, kind="stable")                              # pairs grouped by user
        starts = np.searchsorted(rows[order], np.arange(len(h) + 1))
        by_length = np.argsort(h.lengths, kind="stable")
        in_chunk = np.zeros(len(h), np.int64)
        for part in chunks_by_events(h.lengths[by_length], EMIT_CHUNK_USERS, max_cells=EMIT_MAX_CELLS // 16):
            users_rows = by_length[part]
            pairs = np.concatenate([order[starts[u]:starts[u + 1]] for u in users_rows])
            if not len(pairs):
                continue
            in_chunk[users_rows] = np.arange(len(users_rows))
            local = in_chunk[rows[pairs]]                                     # row of each pair in the chunk
            sub = h.select(users_rows)
            support = Padded.from_histories(sub, pad_item=cat.size)
            uf = None if uf_all is None else uf_all.take(torch.from_numpy(users_rows))
            a = attribute(self.model_, e_all, cat.index, table, support, uf, torch.from_numpy(local),
                          torch.from_numpy(items[pairs]))
            attributions.append((pairs, a, support.items[local]))
            for name, value in (("score", a.score), ("score_prior", a.prior), ("score_features", a.features),
                                ("score_history", a.history)):
                cols[name][pairs] = value.numpy()
            top = a.events.shape[1] if top_events is None else min(top_events, a.events.shape[1])
            size = a.events.abs().masked_fill(support.mask[local] == 0, -1.0)
            best = size.topk(top, dim=1)
            keep = (best.values >= 0).numpy()                                  # (p, top)
            pos = best.indices
            p_idx, t_idx = np.nonzero(keep)
            pair_of.append(pairs[p_idx])
            ev_item.append(support.items[local].gather(1, pos).numpy()[p_idx, t_idx])
            ev_rating.append(support.ratings[local].gather(1, pos).numpy()[p_idx, t_idx])
            ev_contrib.append(a.events.gather(1, pos).numpy()[p_idx, t_idx])
            counts[pairs] = keep.sum(1)
        cols["because"] = _event_lists(np.concatenate(pair_of) if pair_of else np.zeros(0, np.int64),
                                       cat.ids.ids(np.concatenate(ev_item)) if ev_item else cat.ids.ids(np.zeros(0, np.int64)),
                                       np.concatenate(ev_rating) if ev_rating else np.zeros(0, np.float32),
                                       np.concatenate(ev_contrib) if ev_contrib else np.zeros(0, np.float32), counts)
        cols["attributions"] = attributions
        return cols

    # ------------------------------------------------------------------------------ persistence

    def _state(self) -> dict:
        return self.model_.state_dict()

    def _meta(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "n_items": len(self.item_map_),
            "mf_rank": self.model_.mf_rank,
            "item_spec": self.item_spec_.to_dict(),
            "user_spec": self.user_spec_.to_dict(),
            "prior_multiplier": list(self.training_.prior_multiplier),
            "tuning": getattr(self, "tuning_", None),
            "intervals": self.intervals_.to_dict() if getattr(self, "intervals_", None) is not None else None,
            "training": {"best_epoch": self.training_.best_epoch, "epochs_run": len(self.training_.history),
                         "stopped_early": self.training_.stopped_early, "seconds": self.training_.seconds,
                         "steps": self.training_.steps, "step_seconds": self.training_.step_seconds,
                         "episodes": self.training_.episodes,
                         "n_train_users": self.n_train_users_, "n_val_users": self.n_val_users_,
                         "history": self.training_.history},
        }

    def _save_files(self, root: Path) -> None:
        if self.item_features_ is not None:
            self.item_features_.to_parquet(root / ITEM_FEATURES_FILE, index=False)

    @classmethod
    def _from_meta(cls, meta: dict, root: Path) -> "HyperRecommender":
        return cls(Config.from_dict(meta["config"], source=str(root / "model.json")))

    def _restore(self, state: dict, meta: dict, root: Path) -> None:
        self.intervals_ = Intervals.from_dict(meta.get("intervals"))
        if meta["n_items"] != len(self.item_map_):
            raise ValueError(f"{ITEM_IDS_FILE} holds {len(self.item_map_):,} item ids but the weights are for "
                             f"{meta['n_items']:,} items")
        self.item_spec_ = FeatureSpec.from_dict(meta["item_spec"])
        self.user_spec_ = FeatureSpec.from_dict(meta["user_spec"])
        if state["prior_multiplier"].dim() == 0:                    # models saved with one shared multiplier
            state["prior_multiplier"] = state["prior_multiplier"].expand(self.config.model.dim + 1).clone()
        for name, value in ADDED_BUFFERS.items():       # models saved before a buffer existed: its neutral value
            if name not in state:
                state[name] = value(meta["n_items"])
        # built once, on the meta device (nothing allocated): the shapes model.json implies are
        # checked against the weights (an edited size must not allocate gigabytes before failing),
        # then the weights are assigned to it
        with torch.device("meta"):
            model = HyperRecModel(meta["n_items"], self.item_spec_, self.user_spec_, mf_rank=meta.get("mf_rank", 0),
                                  **vars(self.config.model))
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for key in sorted(set(expected) | set(state)):
            got = tuple(state[key].shape) if key in state else None
            if got != expected.get(key):
                raise ValueError(f"'{key}' is {got or 'missing'} in the weights but {expected.get(key) or 'unknown'} "
                                 f"for the config in model.json")
        model.load_state_dict(state, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):     # a tensor outside the state dict
            raise ValueError("the network holds a tensor that the saved weights do not restore")
        model.eval()
        self.model_ = model
        feats = root / ITEM_FEATURES_FILE
        self.item_features_ = pd.read_parquet(feats) if feats.is_file() else None
        tr = meta["training"]
        self.training_ = TrainResult(history=tr["history"], best_epoch=tr["best_epoch"],
                                     stopped_early=tr["stopped_early"],
                                     prior_multiplier=tuple(np.broadcast_to(meta["prior_multiplier"], 2).tolist()),
                                     seconds=tr["seconds"], steps=tr.get("steps", 0),
                                     step_seconds=tr.get("step_seconds", 0.0), episodes=tr.get("episodes", 0))
        self.n_train_users_, self.n_val_users_ = tr["n_train_users"], tr["n_val_users"]
        self._cache = {}
        self._item_vectors(self._catalogue())


class HyperIndexed(Indexed):
    """The hypernetwork on histories in catalogue indices (see
    :class:`~recsys_hyper.recommender.base.Indexed`): besides adapting, rating and ranking, the
    questions to ask (onboarding), the explanations of scores, and the catalogue's item table."""

    def ask(self, h: Histories, n: int, asked: Histories | None = None, targets: int = 100,
            uncertainty: float = ASK_UNCERTAINTY) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`HyperRecommender.ask` on indices: (items (len(h), n) catalogue rows, values
        (len(h), n), ``-inf`` where nothing is left to ask). ``asked``: the questions already put,
        one history per row of ``h``."""
        return self.model._ask_rows(h, n, users=self.users, asked=asked, catalogue=self.catalogue, targets=targets,
                                    uncertainty=uncertainty)

    def explain(self, h: Histories, rows: np.ndarray, items: np.ndarray, top_events: int | None = 5) -> dict:
        """:meth:`HyperRecommender.explain` for pairs in indices (``rows`` into ``h``, ``items``
        catalogue rows): arrays ``score``, ``score_prior``, ``score_features``, ``score_history``
        (P,) and ``because`` (a list per pair); ``attributions``: the per-event contributions as a
        list of (pair indices, :class:`~recsys_hyper.recommender.explain.Attribution`, support
        item rows)."""
        return self.model._explain_rows(h, rows, items, users=self.users, catalogue=self.catalogue,
                                        top_events=top_events)

    def score_std(self, h: Histories, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """:meth:`HyperRecommender.score_std` for pairs in indices (``rows`` into ``h``, ``items``
        catalogue rows), (P,) float32."""
        return self.model._score_std(h, rows, items, self.catalogue, self.users)

    def item_table(self) -> ItemTable:
        """The catalogue's item table (phi, rating and ranking biases, mu), one row per item: with
        the exported heads, what an online service needs to score by dot products."""
        return self.model._item_vectors(self.catalogue)[1].take(slice(0, self.catalogue.size))


HyperRecommender.indexed_view = HyperIndexed


# ---------------------------------------------------------------------------------- helpers

def _tuning(cases: SpecialCases, result: TrainResult) -> dict:
    """What the model chose: the prior-strength multipliers and the EASE term (on validation
    users), the special cases' hyper-parameters (by cross-fitting over every training user: the
    bias fit's regularisers, MF's and its features prior's fold-in) and the rating's blend per k (in
    the order of :data:`~recsys_hyper.networks.hyper.BLEND`; the network's share is 1 minus their
    sum)."""
    chosen = {"prior_head": result.prior_multiplier[0], "prior_bias": result.prior_multiplier[1]}
    grid = {"prior": list(result.calibration)}
    if result.item_item:
        chosen.update(ease_lambda=result.item_item["lambda"], ease_weight=round(result.item_item["weight"], 4))
        grid["ease"] = list(result.item_item["scores"])
    if result.rating_blend:
        chosen["rating_blend"] = {str(k): dict(zip(BLEND, w)) for k, w in result.rating_blend["weights"].items()}
        chosen["rating_blend_network"] = {str(k): w for k, w in result.rating_blend["network"].items()}
        grid.update({f"rating_blend_{name}": values for name, values in result.rating_blend["grid"].items()})
    if cases.weights:
        chosen["special_cases_blend"] = {str(k): dict(zip(BLEND, w)) for k, w in cases.weights.items()}
    for name in ("mf", "mf_features"):
        if name in cases.searches:
            search = cases.searches[name]
            chosen.update({f"{name}_{k}": v for k, v in search.chosen.items()})
            grid.update({f"{name}_{k}": v for k, v in search.grid.items()})
    if cases.bias is not None:
        chosen.update(item_reg=cases.bias["item_reg"], user_reg=cases.bias["user_reg"])
        grid.update(cases.bias["search"].grid)
    return {"grid": grid, "chosen": chosen, "metric": "validation loss; cross-fitted MAE for the special cases",
            "score": min(result.calibration.values()) if result.calibration else float("nan")}


def _known_users(histories: pd.DataFrame | None, users: pd.DataFrame | None, user_ids, method: str):
    """``user_ids`` (or ``None``), refusing ids in neither ``histories`` nor ``users``."""
    if user_ids is None:
        return None
    ids = np.asarray(user_ids)
    known = pd.Index([])
    for frame in (histories, users):
        if frame is not None and S.USER_ID in frame:
            known = known.append(pd.Index(frame[S.USER_ID].unique()))
    missing = ids[~pd.Index(ids).isin(known)]
    if len(missing):
        raise RecsysHyperError(
            f"{method}: {len(missing):,} unknown user(s), in neither the histories nor users (e.g. "
            f"{list(pd.unique(missing)[:5])}); pass their events, or list them in users (a new user with no events)")
    return ids


def _event_lists(pair_of: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray, contributions: np.ndarray,
                 counts: np.ndarray) -> np.ndarray:
    """Per pair, its events as a list of ``{item_id, rating, contribution}`` (largest first)."""
    order = np.argsort(pair_of, kind="stable")                                  # keeps each pair's order
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    structs = pa.StructArray.from_arrays(
        [pa.array(item_ids[order]), pa.array(ratings[order].astype(np.float32)),
         pa.array(contributions[order].astype(np.float32))], names=[S.ITEM_ID, S.RATING, "contribution"])
    return pa.ListArray.from_arrays(pa.array(offsets), structs).to_pandas().to_numpy()


def _known_item_features(items: pd.DataFrame | None, spec: FeatureSpec) -> pd.DataFrame | None:
    if items is None or spec.empty:
        return None
    return items[[S.ITEM_ID] + [c.name for c in spec.columns]].reset_index(drop=True)


def _warm_start_from(model: HyperRecModel, item_map: IdMap, item_spec: FeatureSpec, user_spec: FeatureSpec,
                     source: HyperRecommender) -> int:
    return warm_start(model, item_map, source.model_, source.item_map_,
                      same_item_features=item_spec.to_dict() == source.item_spec_.to_dict(),
                      same_user_features=user_spec.to_dict() == source.user_spec_.to_dict())
