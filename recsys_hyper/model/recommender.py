"""``HyperRecommender``: the public object. Fit once; emit a head for any user in one forward pass.

Conventions (scikit-learn / implicit): ``fit`` returns ``self``; fitted attributes end in ``_``;
using an unfitted model raises :class:`~recsys_hyper.errors.NotFittedError`. Building heads,
predicting, recommending and adapting never mutate the model.

Inputs are pandas frames in the data contract's columns: ``histories`` holds the interactions
(``user_id, item_id, rating, timestamp``) of the users to serve, who need not have been seen in
training; ``users`` optionally holds their side features (a user listed only there has an empty
history, k = 0); ``item_features`` optionally holds items' side features, so items the model has
never seen are scored from their features.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import __version__
from ..atomic import atomic_directory
from ..data import schema as S
from ..data.dataset import Dataset
from ..data.episodes import Histories
from ..data.idmap import UNKNOWN, IdMap
from ..errors import NotFittedError, RecsysHyperError
from ..topk import allowed_mask, finish_predictions, histories_from_frame, require_columns, top_k_frame
from .batching import Padded, chunks_by_events, emit
from .config import Config
from .features import FeatureSpec, FeatureTensors
from .modules import Heads, HyperRecModel
from .training import TrainingData, TrainResult, train

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
ITEM_IDS_FILE = "item_ids.parquet"
ITEM_FEATURES_FILE = "item_features.parquet"
EMIT_CHUNK_USERS = 4096
EMIT_MAX_CELLS = 131_072  # users x longest history per emission sub-batch


@dataclass
class UserHeads:
    """Emitted heads of ``n`` users, in the order of ``user_ids``.

    ``w`` (n, D): the rating head; ``v`` (n, D): the ranking residual. With item vector
    ``phi_i = [e_i, 1]`` (D = d + 1), item biases ``b_i`` / ``c_i`` and the global mean ``mu``:
    ``rating = mu + b_i + w . phi_i`` and ``ranking score = c_i + (v + w) . phi_i``.
    """

    user_ids: np.ndarray
    w: np.ndarray
    v: np.ndarray
    support_sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def _torch(self) -> Heads:
        return Heads(torch.from_numpy(self.w), torch.from_numpy(self.v))


@dataclass
class _Catalogue:
    """Items scoreable at inference: the training vocabulary plus new items with features.

    Row ``len(ids)`` is a padding row. ``index`` maps each row to the model's id vocabulary
    (``n_items`` = no id embedding: scored from features alone).
    """

    ids: IdMap
    index: torch.Tensor
    feats: FeatureTensors
    n_new: int

    @property
    def size(self) -> int:
        return len(self.ids)


class HyperRecommender:
    """Hypernetwork recommender: history -> user embedding -> head weights -> scores.

    Parameters
    ----------
    config:
        Model and training configuration (:class:`~recsys_hyper.model.config.Config`).

    Examples
    --------
    >>> from recsys_hyper.data import load_dataset                     # doctest: +SKIP
    >>> rec = HyperRecommender().fit(load_dataset("data/default"))     # doctest: +SKIP
    >>> rec.recommend(new_user_events, k=10)                           # doctest: +SKIP
    """

    def __init__(self, config: Config | None = None):
        self.config = config or Config()

    # ------------------------------------------------------------------------------ fitting

    def fit(self, dataset: Dataset, validation_users=None, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, progress: bool = True, callback=None,
            warm_start: "HyperRecommender | None" = None) -> "HyperRecommender":
        """Meta-train on ``dataset``'s users. ``validation_users`` (ids) are held out for early
        stopping and calibration; by default a seeded ``val_fraction`` of the users.
        ``warm_start``: a fitted model whose weights initialise this one (see :func:`_warm_start`)."""
        cfg = self.config
        t = cfg.train
        torch.manual_seed(t.seed)
        item_map = IdMap.from_values(dataset.item_ids(), name="item")
        item_spec = FeatureSpec.fit(dataset.items, S.ITEM_ID)
        user_spec = FeatureSpec.fit(dataset.users, S.USER_ID)
        histories, _ = Histories.from_interactions(dataset.interactions, item_map)
        if len(histories) < 2:
            raise RecsysHyperError(f"{dataset.source}: {len(histories)} users with interactions; "
                                   "meta-training needs at least 2 (training and validation users)")
        val_rows = self._validation_rows(histories, validation_users, t)
        train_rows = np.setdiff1d(np.arange(len(histories)), val_rows)
        data = TrainingData(
            histories=histories,
            user_feats=None if user_spec.empty else user_spec.transform(dataset.users, histories.user_ids),
            item_index=torch.arange(len(item_map) + 1),
            item_feats=_with_pad_row(item_spec.transform(dataset.items, item_map.values)),
            train_rows=train_rows, val_rows=val_rows, implicit=dataset.implicit)
        model = HyperRecModel(len(item_map), item_spec, user_spec, **vars(cfg.model))
        _init_biases(model, histories.select(train_rows), len(item_map))
        if warm_start is not None:
            _warm_start(model, item_map, item_spec, user_spec, warm_start)
        result = train(model, data, cfg, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                       callback=callback)
        model.eval()
        self.model_, self.item_map_ = model, item_map
        self.item_spec_, self.user_spec_ = item_spec, user_spec
        self.item_features_ = _known_item_features(dataset.items, item_spec)
        self.implicit_ = bool(dataset.implicit)
        r = dataset.interactions[S.RATING]
        self.rating_range_ = None if dataset.implicit else (float(r.min()), float(r.max()))
        self.training_ = result
        self.n_train_users_, self.n_val_users_ = len(train_rows), len(val_rows)
        self._cache = {}
        self._item_vectors(self._catalogue())  # item vectors are computed once, not per request
        return self

    @staticmethod
    def _validation_rows(h: Histories, validation_users, t) -> np.ndarray:
        if validation_users is not None:
            rows = np.flatnonzero(np.isin(h.user_ids, np.asarray(list(validation_users))))
            if rows.size == 0:
                raise RecsysHyperError("none of the validation_users has interactions in the training data")
            return rows
        n_val = max(1, int(round(t.val_fraction * len(h))))
        return np.sort(np.random.default_rng([t.seed, 7919]).permutation(len(h))[:n_val])

    # ------------------------------------------------------------------------------ inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("This HyperRecommender is not fitted yet; call fit(dataset) or "
                                 "HyperRecommender.load(path) first")

    def _catalogue(self, item_features: pd.DataFrame | None = None) -> _Catalogue:
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
        feats = _with_pad_row(self.item_spec_.transform(feats_frame, all_ids))
        index = torch.cat([torch.arange(len(known)), torch.full((len(new) + 1,), len(known))])
        cat = _Catalogue(IdMap(all_ids, name="item"), index, feats, len(new))
        if item_features is None:
            self._cache["catalogue"] = cat
        return cat

    @torch.no_grad()
    def _item_vectors(self, cat: _Catalogue) -> torch.Tensor:
        """(N + 1, d) item vectors of ``cat``; those of the training catalogue computed once (the
        model is fixed), those of a catalogue extended with new items each time."""
        if cat is not self._cache.get("catalogue"):
            return self.model_.items(cat.index, cat.feats)
        if "item_vectors" not in self._cache:
            self._cache["item_vectors"] = self.model_.items(cat.index, cat.feats)
        return self._cache["item_vectors"]

    def _histories(self, histories: pd.DataFrame | None, cat: _Catalogue, users: pd.DataFrame | None,
                   user_ids=None) -> Histories:
        return histories_from_frame(histories, cat.ids, users, user_ids)

    @torch.no_grad()
    def emit_heads(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None, user_ids=None,
                   item_features: pd.DataFrame | None = None) -> UserHeads:
        """One head per user from their history (zero gradient steps; the model is unchanged).

        ``user_ids`` fixes which users and in what order (default: the users of ``histories``,
        then those only in ``users``)."""
        self._check_fitted()
        cat = self._catalogue(item_features)
        h = self._histories(histories, cat, users, user_ids)
        return self._emit(h, cat, users)

    def _emit(self, h: Histories, cat: _Catalogue, users: pd.DataFrame | None,
              e_all: torch.Tensor | None = None) -> UserHeads:
        """Heads for every row of ``h``. Users are taken in order of history length, in
        sub-batches of bounded size (users x longest history), so padding stays small and memory
        bounded whatever the mix of light and heavy users; heads go back to ``h``'s order."""
        model = self.model_
        e_all = self._item_vectors(cat) if e_all is None else e_all
        uf_all = None if self.user_spec_.empty else self.user_spec_.transform(users, h.user_ids)
        D = model.dim + 1
        w = np.zeros((len(h), D), np.float32)
        v = np.zeros((len(h), D), np.float32)
        by_length = np.argsort(h.lengths, kind="stable")
        with torch.no_grad():
            for part in chunks_by_events(h.lengths[by_length], EMIT_CHUNK_USERS, max_cells=EMIT_MAX_CELLS):
                rows = by_length[part]
                uf = None if uf_all is None else uf_all.take(torch.from_numpy(rows))
                heads, _ = emit(model, e_all, cat.index, Padded.from_histories(h.select(rows), pad_item=cat.size), uf)
                w[rows] = heads.w.numpy()
                v[rows] = heads.v.numpy()
        return UserHeads(h.user_ids, w, v, h.lengths.copy())

    def predict(self, histories: pd.DataFrame | None, pairs: pd.DataFrame, users: pd.DataFrame | None = None,
                item_features: pd.DataFrame | None = None, heads: UserHeads | None = None) -> np.ndarray:
        """Predicted rating (explicit data; clipped to the training scale) or relevance score
        (implicit) for each ``(user_id, item_id)`` row of ``pairs``. Unknown items give NaN."""
        self._check_fitted()
        require_columns(pairs, (S.USER_ID, S.ITEM_ID), "pairs")
        cat = self._catalogue(item_features)
        if heads is None:
            pair_users = pd.Index(pd.unique(pairs[S.USER_ID]))
            heads = self.emit_heads(histories, users, user_ids=pair_users.to_numpy(), item_features=item_features)
        u = IdMap(heads.user_ids, name="user").index(pairs[S.USER_ID].to_numpy())
        i = cat.ids.index(pairs[S.ITEM_ID].to_numpy(), unknown="mark")
        unknown = i == UNKNOWN
        if unknown.any():
            log.warning("%d pairs are on items the model has never seen and that have no features; "
                        "their prediction is NaN", int(unknown.sum()))
        ii = torch.from_numpy(np.where(unknown, cat.size, i))
        out = self._pair_scores(heads, torch.from_numpy(u), ii, cat)
        return finish_predictions(out.numpy(), self.rating_range_, unknown)

    @torch.no_grad()
    def _pair_scores(self, heads: UserHeads, rows: torch.Tensor, items: torch.Tensor, cat: _Catalogue) -> torch.Tensor:
        """rows (P,) into ``heads``, items (P,) rows of ``cat`` -> (P,) ratings (explicit data) or
        ranking scores (implicit)."""
        model = self.model_
        e = self._item_vectors(cat)[items]                                   # (P, d)
        pair = Heads(torch.from_numpy(heads.w)[rows], torch.from_numpy(heads.v)[rows])
        if self.implicit_:
            return model.item_rank_bias[cat.index[items]] + ((pair.w + pair.v) * model.phi(e)).sum(-1)
        return model.rating(pair, e, cat.index[items])

    def recommend(self, histories: pd.DataFrame | None, k: int = 10, exclude_seen: bool = True, items=None,
                  users: pd.DataFrame | None = None, user_ids=None, item_features: pd.DataFrame | None = None,
                  heads: UserHeads | None = None) -> pd.DataFrame:
        """Top-``k`` items per user: ``user_id, item_id, score, rank`` (rank 1 = best).

        ``exclude_seen`` drops the items in each user's history; ``items`` restricts the
        candidates to an allow-list of item ids. Users with no history get the population head's
        (features-informed) items."""
        self._check_fitted()
        cat = self._catalogue(item_features)
        h = self._histories(histories, cat, users, user_ids if heads is None else heads.user_ids)
        e_all = self._item_vectors(cat)
        if heads is None:
            heads = self._emit(h, cat, users, e_all)
        model = self.model_
        with torch.no_grad():
            phi = model.phi(e_all[:cat.size])                                # (N, D)
            bias = model.item_rank_bias[cat.index[:cat.size]]                # (N,)

        def score_rows(rows: np.ndarray) -> torch.Tensor:                    # (B, N)
            return bias + torch.from_numpy(np.ascontiguousarray(heads.w[rows] + heads.v[rows])) @ phi.T

        return top_k_frame(score_rows, h, cat.ids, k, exclude_seen, allowed_mask(items, cat.ids))

    def adapt(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None,
              mode: Literal["zero-shot", "finetune"] = "zero-shot", steps: int = 5, lr: float = 0.002,
              user_ids=None, item_features: pd.DataFrame | None = None) -> UserHeads:
        """Heads for new users. ``zero-shot``: the emitted heads (one forward pass). ``finetune``:
        then ``steps`` gradient steps on the heads' own parameters only, on each user's support
        set (its history), with an L2 pull towards the emitted head. The model is never changed."""
        if mode not in ("zero-shot", "finetune"):
            raise ValueError(f"The 'mode' parameter of adapt must be 'zero-shot' or 'finetune'. Got {mode!r} instead.")
        self._check_fitted()
        cat = self._catalogue(item_features)
        h = self._histories(histories, cat, users, user_ids)
        e_all = self._item_vectors(cat)
        heads = self._emit(h, cat, users, e_all)
        if mode == "zero-shot" or steps <= 0:
            return heads
        return self._finetune(heads, h, cat, e_all, steps, lr)

    def _finetune(self, heads: UserHeads, h: Histories, cat: _Catalogue, e_all: torch.Tensor, steps: int,
                  lr: float) -> UserHeads:
        model = self.model_
        N = cat.size
        t = self.config.train
        sup = Padded.from_histories(h, pad_item=N)
        w0, v0 = torch.from_numpy(heads.w), torch.from_numpy(heads.v)
        w = w0.clone().requires_grad_(True)
        v = v0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w, v], lr=lr)
        with torch.no_grad():
            phi_all = model.phi(e_all).detach()                              # (N + 1, D)
            b = model.item_bias[cat.index].detach()
            c = model.item_rank_bias[cat.index[:N]].detach()
        has = sup.mask.sum(1) > 0
        pos = sup.mask if self.implicit_ else sup.mask * (sup.ratings >= t.positive_threshold).float()
        for _ in range(steps):
            phi_s = phi_all[sup.items]                                        # (B, K, D)
            pred = model.mu + b[sup.items] + (w.unsqueeze(1) * phi_s).sum(-1)
            n = sup.mask.sum().clamp(min=1)
            mse = (((pred - sup.ratings) / model.r_scale) ** 2 * sup.mask).sum() / n
            logp = F.log_softmax(c + (w + v) @ phi_all[:N].T, dim=1)          # (B, N)
            rank = -(logp.gather(1, sup.items.clamp(max=N - 1)) * pos).sum() / pos.sum().clamp(min=1)
            pull = ((w - w0) ** 2).sum(-1).mean() + ((v - v0) ** 2).sum(-1).mean()
            loss = (0.0 if self.implicit_ else mse) + t.rank_weight * rank + 0.1 * pull
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # users without a support set keep their emitted head
            w_out = torch.where(has.unsqueeze(1), w, w0)
            v_out = torch.where(has.unsqueeze(1), v, v0)
        return UserHeads(heads.user_ids, w_out.detach().numpy(), v_out.detach().numpy(), heads.support_sizes)

    # -------------------------------------------------- the evaluator's path (catalogue indices)

    def adapt_histories(self, h: Histories, users: pd.DataFrame | None = None,
                        mode: Literal["zero-shot", "finetune"] = "zero-shot", steps: int = 5,
                        lr: float = 0.002) -> UserHeads:
        """:meth:`adapt` for histories already in this model's item indices."""
        self._check_fitted()
        cat = self._catalogue()
        e_all = self._item_vectors(cat)
        heads = self._emit(h, cat, users, e_all)
        return heads if mode == "zero-shot" or steps <= 0 else self._finetune(heads, h, cat, e_all, steps, lr)

    @torch.no_grad()
    def rate_pairs(self, heads: UserHeads, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pairwise predictions: rows (P,) into ``heads``, items (P,) catalogue indices -> (P,)."""
        return self._pair_scores(heads, rows, items, self._catalogue())

    @torch.no_grad()
    def score_catalogue(self, heads: UserHeads, rows: np.ndarray) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the training catalogue: (B, N)."""
        cat = self._catalogue()
        e = self._item_vectors(cat)[: cat.size]
        r = torch.from_numpy(np.ascontiguousarray(heads.w[rows] + heads.v[rows]))
        return self.model_.item_rank_bias[: cat.size] + r @ self.model_.phi(e).T

    def check_compatible(self, dataset: Dataset) -> None:
        """Fail before any work if ``dataset`` cannot be served by this model (id types differ, or
        none of its items is known); warn with counts about items the model has never seen."""
        self._check_fitted()
        ids = dataset.item_ids()
        if len(ids) == 0:
            return
        kind = "int64" if pd.api.types.is_integer_dtype(ids) else "string"
        if kind != self.item_map_.kind:
            raise RecsysHyperError(
                f"{dataset.source}: item ids are {kind} but the model was trained on {self.item_map_.kind} item ids; "
                f"this model does not fit this data (vocabulary mismatch): use the model trained on this catalogue")
        known = self.item_map_.index(ids.to_numpy(), unknown="mark") != UNKNOWN
        if not known.any():
            raise RecsysHyperError(
                f"{dataset.source}: none of its {len(ids):,} item ids is known to the model "
                f"(e.g. {ids[:5].tolist()}); vocabulary mismatch: use the model trained on this catalogue")
        n_new = int((~known).sum())
        if n_new:
            with_features = 0
            if dataset.items is not None and not self.item_spec_.empty:
                with_features = int(pd.Index(ids[~known]).isin(dataset.items[S.ITEM_ID]).sum())
            log.warning("%d of %d item ids are unknown to the model: %d have features and are scored from them, "
                        "%d have none and are skipped (e.g. %s)", n_new, len(ids), with_features,
                        n_new - with_features, ids[~known][:5].tolist())

    # ------------------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model directory atomically: weights (``model.pt``, a plain state_dict),
        ``model.json`` (config, feature specs, metadata) and the item id map. No pickle."""
        self._check_fitted()
        meta = {
            "format": FORMAT_VERSION,
            "recsys_hyper_version": __version__,
            "config": self.config.to_dict(),
            "n_items": len(self.item_map_),
            "item_spec": self.item_spec_.to_dict(),
            "user_spec": self.user_spec_.to_dict(),
            "implicit": self.implicit_,
            "rating_range": self.rating_range_,
            "prior_multiplier": float(self.model_.prior_multiplier),
            "training": {"best_epoch": self.training_.best_epoch, "epochs_run": len(self.training_.history),
                         "stopped_early": self.training_.stopped_early, "seconds": self.training_.seconds,
                         "n_train_users": self.n_train_users_, "n_val_users": self.n_val_users_,
                         "history": self.training_.history},
        }
        with atomic_directory(path, overwrite=True) as tmp:
            torch.save(self.model_.state_dict(), tmp / WEIGHTS_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
            self.item_map_.save(tmp / ITEM_IDS_FILE)
            if self.item_features_ is not None:
                self.item_features_.to_parquet(tmp / ITEM_FEATURES_FILE, index=False)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HyperRecommender":
        """Load a model directory written by :meth:`save` (weights loaded with ``weights_only=True``)."""
        root = Path(path)
        if not (root / META_FILE).is_file() or not (root / WEIGHTS_FILE).is_file():
            raise RecsysHyperError(f"{root}: not a recsys-hyper model directory (expected {META_FILE} and "
                                   f"{WEIGHTS_FILE}); pass the --out folder of `recsys-hyper train`")
        meta = json.loads((root / META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise RecsysHyperError(f"{root}: model format {meta.get('format')} is not supported by this version "
                                   f"(expects {FORMAT_VERSION}); retrain or use the version that wrote it")
        cfg = Config.from_dict(meta["config"], source=str(root / META_FILE))
        self = cls(cfg)
        self.item_spec_ = FeatureSpec.from_dict(meta["item_spec"])
        self.user_spec_ = FeatureSpec.from_dict(meta["user_spec"])
        model = HyperRecModel(meta["n_items"], self.item_spec_, self.user_spec_, **vars(cfg.model))
        model.load_state_dict(torch.load(root / WEIGHTS_FILE, weights_only=True))
        model.eval()
        self.model_ = model
        self.item_map_ = IdMap.load(root / ITEM_IDS_FILE)
        feats = root / ITEM_FEATURES_FILE
        self.item_features_ = pd.read_parquet(feats) if feats.is_file() else None
        self.implicit_ = bool(meta["implicit"])
        self.rating_range_ = tuple(meta["rating_range"]) if meta["rating_range"] is not None else None
        tr = meta["training"]
        self.training_ = TrainResult(history=tr["history"], best_epoch=tr["best_epoch"],
                                     stopped_early=tr["stopped_early"],
                                     prior_multiplier=meta["prior_multiplier"], seconds=tr["seconds"])
        self.n_train_users_, self.n_val_users_ = tr["n_train_users"], tr["n_val_users"]
        self._cache = {}
        self._item_vectors(self._catalogue())
        return self


# ---------------------------------------------------------------------------------- helpers

def _with_pad_row(f: FeatureTensors) -> FeatureTensors:
    """Append an all-missing row (the padding / no-item row)."""
    return FeatureTensors(
        cat=torch.cat([f.cat, torch.zeros(1, f.cat.shape[1], dtype=f.cat.dtype)]),
        num=torch.cat([f.num, torch.zeros(1, f.num.shape[1], dtype=f.num.dtype)]),
        multi=[torch.cat([m, torch.zeros(1, m.shape[1], dtype=m.dtype)]) for m in f.multi],
    )


def _known_item_features(items: pd.DataFrame | None, spec: FeatureSpec) -> pd.DataFrame | None:
    if items is None or spec.empty:
        return None
    return items[[S.ITEM_ID] + [c.name for c in spec.columns]].reset_index(drop=True)


def _init_biases(model: HyperRecModel, h: Histories, n_items: int, shrink: float = 10.0) -> None:
    """Item biases from the data: shrunk mean residuals (rating) and centred log-popularity (ranking)."""
    r = h.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    scale = float(r.std()) if r.size and r.std() > 0 else 1.0
    count = np.bincount(h.items, minlength=n_items).astype(np.float64)
    total = np.bincount(h.items, weights=r - mu, minlength=n_items)
    bias = total / (count + shrink)
    logpop = np.log1p(count)
    with torch.no_grad():
        model.mu.fill_(mu)
        model.r_scale.fill_(scale)
        model.item_bias[:n_items] = torch.from_numpy(bias.astype(np.float32))
        model.item_rank_bias[:n_items] = torch.from_numpy((logpop - logpop.mean()).astype(np.float32))
        model.item_rank_bias[n_items] = float((logpop - logpop.mean()).min())  # unseen items start unpopular


ITEM_INDEXED = ("items.id_emb.weight", "item_bias", "item_rank_bias")


def _warm_start(model: HyperRecModel, item_map: IdMap, item_spec: FeatureSpec, user_spec: FeatureSpec,
                source: "HyperRecommender") -> int:
    """Initialise ``model`` from a fitted model (the champion): item-indexed parameters row by row
    through the item ids (new items keep their fresh initialisation), feature encoders when the
    feature vocabularies are unchanged, every other parameter when its shape matches. Returns the
    number of tensors copied."""
    src = source.model_.state_dict()
    same_items = item_spec.to_dict() == source.item_spec_.to_dict()
    same_users = user_spec.to_dict() == source.user_spec_.to_dict()
    old_rows = source.item_map_.index(item_map.values, unknown="mark")        # (N,) row in the source
    known = torch.from_numpy(np.flatnonzero(old_rows != UNKNOWN))
    copied = 0
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if name not in src:
                continue
            if (name.startswith("items.features") and not same_items) or (
                    name.startswith("encoder.user_features") and not same_users):
                continue
            if name in ITEM_INDEXED and param.shape[1:] == src[name].shape[1:]:
                param[known] = src[name][torch.from_numpy(old_rows[known.numpy()])]
                copied += 1
            elif param.shape == src[name].shape:
                param.copy_(src[name])
                copied += 1
    log.info("warm start: %d tensors from the previous model (%d of %d items known)", copied, len(known),
             len(item_map))
    return copied


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
