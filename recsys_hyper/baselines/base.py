"""The contract every baseline shares with ``HyperRecommender``.

``fit(dataset) -> self``; ``adapt(histories, users)`` -> per-user state (:class:`FoldIn`; the
model is never mutated); ``predict(histories, pairs, users, heads=None)``;
``recommend(histories, k, exclude_seen, items, users, heads=None)``; ``save(dir)`` /
``load(dir)`` (tensors as a plain state dict loaded with ``weights_only=True``, JSON metadata,
Parquet id map; no pickle). Subclasses implement four small hooks: ``_fit``, ``_fold_in``,
``_rate`` and ``_scores``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_directory
from ..data import schema as S
from ..data.dataset import Dataset
from ..data.episodes import Histories
from ..data.idmap import UNKNOWN, IdMap
from ..errors import NotFittedError, RecsysHyperError
from ..topk import allowed_mask, finish_predictions, histories_from_frame, require_columns, top_k_frame

STATE_FILE = "state.pt"
META_FILE = "baseline.json"
ITEM_IDS_FILE = "item_ids.parquet"


@dataclass
class FoldIn:
    """Per-user state after adaptation: ``state`` tensors have one row per ``user_ids`` entry."""

    user_ids: np.ndarray
    state: dict
    support_sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)


class BaselineRecommender:
    """Base class: id maps, frames, top-K, persistence. See the module docstring."""

    name = "baseline"

    def __init__(self, **params):
        self.params = params

    # -- the hooks subclasses implement

    def _fit(self, h: Histories, dataset: Dataset, train_rows: np.ndarray, val_rows: np.ndarray) -> None:
        raise NotImplementedError

    def _fold_in(self, h: Histories, users: pd.DataFrame | None) -> dict:
        raise NotImplementedError

    def _rate(self, state: dict, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pairwise ratings: rows (P,) into the state, items (P,) catalogue indices -> (P,)."""
        raise NotImplementedError

    def _scores(self, state: dict, rows: np.ndarray) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the whole catalogue: (B, N)."""
        raise NotImplementedError

    #: names of fitted tensors / scalars to save; subclasses list theirs
    _tensors: tuple[str, ...] = ()

    # -- the contract

    def fit(self, dataset: Dataset, validation_users=None) -> "BaselineRecommender":
        self.item_map_ = IdMap.from_values(dataset.item_ids(), name="item")
        h, _ = Histories.from_interactions(dataset.interactions, self.item_map_)
        val = (np.flatnonzero(np.isin(h.user_ids, np.asarray(list(validation_users))))
               if validation_users is not None else np.zeros(0, dtype=np.int64))
        train = np.setdiff1d(np.arange(len(h)), val)
        self.implicit_ = bool(dataset.implicit)
        r = dataset.interactions[S.RATING]
        self.rating_range_ = None if dataset.implicit else (float(r.min()), float(r.max()))
        self._fit(h, dataset, train, val)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "item_map_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(dataset) or load(path) first")

    @torch.no_grad()
    def adapt(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None, user_ids=None) -> FoldIn:
        self._check_fitted()
        h = histories_from_frame(histories, self.item_map_, users, user_ids)
        return FoldIn(h.user_ids, self._fold_in(h, users), h.lengths.copy())

    def adapt_histories(self, h: Histories, users: pd.DataFrame | None = None) -> FoldIn:
        """:meth:`adapt` for histories already in this model's item indices (the evaluator's path)."""
        self._check_fitted()
        with torch.no_grad():
            return FoldIn(h.user_ids, self._fold_in(h, users), h.lengths.copy())

    @torch.no_grad()
    def rate_pairs(self, heads: FoldIn, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pairwise predictions: rows (P,) into ``heads``, items (P,) catalogue indices -> (P,)."""
        return self._rate(heads.state, rows, items)

    @torch.no_grad()
    def score_catalogue(self, heads: FoldIn, rows: np.ndarray) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the catalogue: (B, N)."""
        return self._scores(heads.state, rows)

    @torch.no_grad()
    def predict(self, histories: pd.DataFrame | None, pairs: pd.DataFrame, users: pd.DataFrame | None = None,
                heads: FoldIn | None = None) -> np.ndarray:
        self._check_fitted()
        require_columns(pairs, (S.USER_ID, S.ITEM_ID), "pairs")
        if heads is None:
            heads = self.adapt(histories, users, user_ids=pd.unique(pairs[S.USER_ID]))
        u = IdMap(heads.user_ids, name="user").index(pairs[S.USER_ID].to_numpy())
        i = self.item_map_.index(pairs[S.ITEM_ID].to_numpy(), unknown="mark")
        unknown = i == UNKNOWN
        out = self._rate(heads.state, torch.from_numpy(u), torch.from_numpy(np.where(unknown, 0, i)))
        return finish_predictions(out.numpy(), self.rating_range_, unknown)

    def recommend(self, histories: pd.DataFrame | None, k: int = 10, exclude_seen: bool = True, items=None,
                  users: pd.DataFrame | None = None, user_ids=None, heads: FoldIn | None = None) -> pd.DataFrame:
        self._check_fitted()
        h = histories_from_frame(histories, self.item_map_, users, user_ids if heads is None else heads.user_ids)
        if heads is None:
            heads = self.adapt_histories(h, users)
        return top_k_frame(lambda rows: self._scores(heads.state, rows), h, self.item_map_, k, exclude_seen,
                           allowed_mask(items, self.item_map_))

    # -- persistence

    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        meta = {"class": type(self).__name__, "params": self.params, "implicit": self.implicit_,
                "rating_range": self.rating_range_, "extra": self._extra_meta()}
        with atomic_directory(path, overwrite=True) as tmp:
            torch.save({k: getattr(self, k) for k in self._tensors}, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
            self.item_map_.save(tmp / ITEM_IDS_FILE)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BaselineRecommender":
        root = Path(path)
        if not (root / META_FILE).is_file():
            raise RecsysHyperError(f"{root}: not a saved baseline (expected {META_FILE})")
        meta = json.loads((root / META_FILE).read_text())
        if meta["class"] != cls.__name__:
            raise RecsysHyperError(f"{root}: holds a {meta['class']}, not a {cls.__name__}")
        self = cls(**meta["params"])
        for k, v in torch.load(root / STATE_FILE, weights_only=True).items():
            setattr(self, k, v)
        self.item_map_ = IdMap.load(root / ITEM_IDS_FILE)
        self.implicit_ = meta["implicit"]
        self.rating_range_ = tuple(meta["rating_range"]) if meta["rating_range"] else None
        self._load_extra_meta(meta["extra"])
        return self

    def _extra_meta(self) -> dict:
        return {}

    def _load_extra_meta(self, extra: dict) -> None:
        pass


def item_stats(h: Histories, rows: np.ndarray, n_items: int, shrink: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(global mean, shrunk item bias (N,), item count (N,)) from the histories of ``rows``."""
    sub = h.select(rows)
    r = sub.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    count = np.bincount(sub.items, minlength=n_items).astype(np.float64)
    total = np.bincount(sub.items, weights=r - mu, minlength=n_items)
    bias = np.divide(total, count + shrink, out=np.zeros(n_items), where=(count + shrink) > 0)
    return mu, torch.from_numpy(bias.astype(np.float32)), torch.from_numpy(count.astype(np.float32))


def mean_abs_error(model: "BaselineRecommender", h: Histories, users: pd.DataFrame | None = None,
                   shots=(1, 3, 5, 10, 20)) -> float:
    """Mean (over k) validation MAE of chronological fold-ins; used to pick hyper-parameters."""
    from ..data.episodes import chronological_split

    errors = []
    for k in shots:
        sup, qry = chronological_split(h, k, min_query=1)
        if len(sup) == 0:
            continue
        with torch.no_grad():
            state = model._fold_in(sup, users)
            rows = torch.from_numpy(np.repeat(np.arange(len(qry)), qry.lengths))
            pred = model._rate(state, rows, torch.from_numpy(qry.items)).numpy()
        errors.append(float(np.mean(np.abs(pred - qry.ratings))))
    return float(np.mean(errors)) if errors else float("nan")
