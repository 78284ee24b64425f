"""The recommender contract: one base class that the hypernetwork and every baseline implement.

What users call exists once, here (in the spirit of implicit's ``RecommenderBase`` and
scikit-learn's estimators):

* ``fit(dataset, validation_users=None, progress=True) -> self``: learn from the training users;
  validation users decide early stopping and hyper-parameters (never test users);
* ``adapt(histories, users)``: per-user state from each user's events (the fold-in; the model is
  never mutated);
* ``predict(histories, pairs)``: ratings on the training scale (explicit data) or relevance scores
  (implicit);
* ``recommend(histories, k)``: top K with seen items excluded and an optional allow-list;
* ``save(dir)`` / ``load(dir)``: ``model.pt`` (plain tensors, loaded with ``weights_only=True``),
  ``model.json`` (class, parameters, metadata) and ``item_ids.parquet``; no pickle;
* ``get_params()`` / ``set_params(**params)``: the hyper-parameters, which are the constructor's
  keyword arguments for every method (the hypernetwork's is its ``config``).

A recommender implements hooks only: ``_fit``, ``_adapt``, ``_rate``, ``_rank`` and the
persistence hooks ``_state`` / ``_meta`` / ``_restore`` (and ``_catalogue`` when it can score
items beyond its training vocabulary). Fitted attributes end in ``_``; using an unfitted model
raises :class:`~recsys_hyper.errors.NotFittedError`.

The engines (the cold-start evaluation, tuning on validation users, batch scoring) work on
histories already in catalogue indices, through :func:`indexed` (an :class:`Indexed` view of a
fitted model). The vocabulary and rating-scale checks live in :mod:`.checks`; the grouped
one-row-per-user shape of the MLflow pyfunc and Spark UDFs in :mod:`.grouped`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..atomic import atomic_directory, write_torch
from ..data import schema as S
from ..data.dataset import Dataset
from ..data.episodes import Histories
from ..data.frames import histories_from_frame, require_columns
from ..data.idmap import UNKNOWN, IdMap
from ..errors import NotFittedError, RecsysHyperError, non_finite_users
from ..numerics.scores import allowed_mask, finish_predictions, top_k_frame
from .checks import checked_histories

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
ITEM_IDS_FILE = "item_ids.parquet"


@dataclass
class AdaptedUsers:
    """Per-user state after adaptation, one entry per ``user_ids`` row; ``support_sizes`` is how
    many events each user's state was built from. Recommenders extend it with their own fields."""

    user_ids: np.ndarray
    support_sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class Catalogue:
    """The items a recommender can score: row ``j`` of every score matrix is item ``ids.ids([j])``."""

    ids: IdMap

    @property
    def size(self) -> int:
        return len(self.ids)


class Recommender:
    """Base class of every recommender. See the module docstring for the contract and the hooks."""

    name = "recommender"

    # ------------------------------------------------------------------------------ the hooks

    def _fit(self, dataset: Dataset, h: Histories, validation_users, progress: bool, **kwargs) -> None:
        """Learn from ``h`` (every user of ``dataset`` with interactions, in ``item_map_`` indices)."""
        raise NotImplementedError

    def _adapt(self, h: Histories, users: pd.DataFrame | None, catalogue: Catalogue, **kwargs) -> AdaptedUsers:
        """Per-user state from the events of ``h`` (rows of ``catalogue``); no side effects."""
        raise NotImplementedError

    def _rate(self, adapted: AdaptedUsers, rows: torch.Tensor, items: torch.Tensor,
              catalogue: Catalogue) -> torch.Tensor:
        """Pairwise: rows (P,) into ``adapted``, items (P,) catalogue rows -> (P,) ratings (explicit
        data, not yet clipped) or relevance scores (implicit)."""
        raise NotImplementedError

    def _rank(self, adapted: AdaptedUsers, rows: np.ndarray, catalogue: Catalogue) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the whole catalogue: (B, N), a fresh tensor."""
        raise NotImplementedError

    def _catalogue(self, item_features: pd.DataFrame | None = None) -> Catalogue:
        """The items scoreable at inference; by default the training vocabulary."""
        return Catalogue(self.item_map_)

    def _scores_new_items(self) -> bool:
        """Whether items outside the training vocabulary are scored from their features."""
        return False

    #: names of the fitted attributes :meth:`_state` saves (tensors, or dicts / lists of tensors)
    _tensors: tuple[str, ...] = ()

    def _state(self) -> dict:
        """The fitted tensors, as saved in ``model.pt`` (nested dicts of tensors allowed)."""
        return {k: getattr(self, k) for k in self._tensors}

    def _meta(self) -> dict:
        """JSON-serialisable metadata saved in ``model.json`` (besides what the base writes)."""
        return {"params": self.params, "tuning": getattr(self, "tuning_", None)}

    @classmethod
    def _from_meta(cls, meta: dict, root: Path) -> "Recommender":
        """An unfitted instance with the saved parameters."""
        return cls(**meta.get("params", {}))

    def _restore(self, state: dict, meta: dict, root: Path) -> None:
        """Set the fitted attributes from what :meth:`save` wrote."""
        for k, v in state.items():
            setattr(self, k, v)

    # ------------------------------------------------------------------------------ hyper-parameters

    def __init__(self, **params):
        self.params = params

    def get_params(self) -> dict:
        """The hyper-parameters: the constructor's keyword arguments (scikit-learn's sense)."""
        return dict(self.params)

    def set_params(self, **params) -> "Recommender":
        """Set hyper-parameters by name (they take effect at the next :meth:`fit`); returns ``self``.
        An unknown name raises, with the list of known ones."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"Invalid parameter(s) {unknown} for {type(self).__name__}; "
                             f"valid parameters: {sorted(self.params)}")
        self.params.update(params)
        return self

    # ------------------------------------------------------------------------------ fitting

    def fit(self, dataset: Dataset, validation_users=None, progress: bool = True, **kwargs) -> "Recommender":
        """Learn from ``dataset``'s users; ``validation_users`` (ids) decide early stopping and
        hyper-parameters. Returns ``self``."""
        self.item_map_ = IdMap.from_values(dataset.item_ids(), name="item")
        self.implicit_ = bool(dataset.implicit)
        r = dataset.interactions[S.RATING]
        self.rating_range_ = None if dataset.implicit else (float(r.min()), float(r.max()))
        h, _ = Histories.from_interactions(dataset.interactions, self.item_map_)
        try:
            self._fit(dataset, h, validation_users, progress=progress, **kwargs)
            problems = self._fit_problems()
            if problems:                     # nothing non-finite leaves a fit: not saved, registered or served
                raise RecsysHyperError(f"{dataset.source}: fitting {type(self).__name__} diverged: "
                                       f"{'; '.join(problems)}; nothing was saved. {self._divergence_fix()}")
        except BaseException:
            del self.item_map_                                               # not fitted after all
            raise
        return self

    def _fit_problems(self) -> list[str]:
        """What makes a finished fit unusable: non-finite fitted tensors (recommenders add their own
        checks, e.g. non-finite validation figures)."""
        bad = [k for k, v in fitted_tensors(self).items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        return [f"the fitted weights hold NaN or inf ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"] if bad else []

    def _divergence_fix(self) -> str:
        return "Check the data for extreme values (`recsys-hyper data describe DIR`)."

    def _check_fitted(self) -> None:
        if not hasattr(self, "item_map_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(dataset) or "
                                 f"{type(self).__name__}.load(path) first")

    # ------------------------------------------------------------------------------ inference

    def adapt(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None, user_ids=None,
              item_features: pd.DataFrame | None = None, allow_rating_mismatch: bool = False,
              **kwargs) -> AdaptedUsers:
        """Per-user state of the users of ``histories`` (and those only in ``users``, with no
        history); ``user_ids`` fixes which users and in what order. The model is unchanged.

        Every call that takes ``histories`` checks them as the commands check a dataset (see
        :func:`~recsys_hyper.recommender.checks.checked_histories`): bad values, item ids of
        another type or none known, and (unless ``allow_rating_mismatch``) another kind of
        feedback or ratings outside the training scale raise
        :class:`~recsys_hyper.errors.RecsysHyperError`; a pair rated twice counts once (latest)."""
        view = indexed(self, users, item_features)
        return view.adapt(self._histories(histories, view, users, user_ids, allow_rating_mismatch), **kwargs)

    def _histories(self, histories: pd.DataFrame | None, view: "Indexed", users: pd.DataFrame | None, user_ids,
                   allow_rating_mismatch: bool = False) -> Histories:
        """The checked histories of a library call, in the catalogue's indices."""
        checked = checked_histories(self, histories, view.catalogue.ids, allow_rating_mismatch=allow_rating_mismatch)
        return histories_from_frame(checked, view.catalogue.ids, users, user_ids)

    def predict(self, histories: pd.DataFrame | None, pairs: pd.DataFrame, users: pd.DataFrame | None = None,
                item_features: pd.DataFrame | None = None, heads: AdaptedUsers | None = None,
                allow_rating_mismatch: bool = False) -> np.ndarray:
        """Predicted rating (explicit data; clipped to the training scale) or relevance score
        (implicit) for each ``(user_id, item_id)`` row of ``pairs``. Unknown items give NaN."""
        self._check_fitted()
        require_columns(pairs, (S.USER_ID, S.ITEM_ID), "pairs")
        view = indexed(self, users, item_features)
        if heads is None:
            heads = view.adapt(self._histories(histories, view, users, pd.unique(pairs[S.USER_ID]),
                                               allow_rating_mismatch))
        u = IdMap(heads.user_ids, name="user").index(pairs[S.USER_ID].to_numpy())
        i = view.catalogue.ids.index(pairs[S.ITEM_ID].to_numpy(), unknown="mark")
        unknown = i == UNKNOWN
        if unknown.any():
            log.warning("%d pairs are on items the model has never seen and that have no features; "
                        "their prediction is left missing", int(unknown.sum()))
        out = view.rate(heads, torch.from_numpy(u), torch.from_numpy(np.where(unknown, 0, i)))
        pred = finish_predictions(out.numpy(), self.rating_range_, unknown)
        broken = ~unknown & ~np.isfinite(pred)
        if broken.any():                              # NaN means "unknown item" here, and nothing else
            raise non_finite_users(heads.user_ids, np.unique(u[broken]), "predictions")
        return pred

    def recommend(self, histories: pd.DataFrame | None, k: int = 10, exclude_seen: bool = True, items=None,
                  users: pd.DataFrame | None = None, user_ids=None, item_features: pd.DataFrame | None = None,
                  heads: AdaptedUsers | None = None, allow_rating_mismatch: bool = False,
                  exclude_items=None) -> pd.DataFrame:
        """Top-``k`` items per user: ``user_id, item_id, score, rank`` (rank 1 = best).

        ``exclude_seen`` drops the items in each user's history; ``items`` restricts the
        candidates to an allow-list of item ids; ``exclude_items`` are never recommended (retired
        items, ad-hoc exclusions). Users with no history get the population's
        (features-informed, where the model uses features) items."""
        view = indexed(self, users, item_features)
        h = self._histories(histories, view, users, user_ids if heads is None else heads.user_ids, allow_rating_mismatch)
        return view.recommend(h, k, heads=heads, exclude_seen=exclude_seen,
                              allowed=allowed_mask(items, view.catalogue.ids, exclude_items))

    # ------------------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model directory atomically (see the module docstring). No pickle."""
        self._check_fitted()
        meta = {"format": FORMAT_VERSION, "class": type(self).__name__, "recsys_hyper_version": __version__,
                "implicit": self.implicit_, "rating_range": self.rating_range_, **self._meta()}
        with atomic_directory(path, overwrite=True) as tmp:
            write_torch(self._state(), tmp / WEIGHTS_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
            self.item_map_.save(tmp / ITEM_IDS_FILE)
            self._save_files(tmp)
        return Path(path)

    def _save_files(self, root: Path) -> None:
        """Extra files beside the weights (none by default)."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recommender":
        """Load a model directory written by :meth:`save` (tensors loaded with ``weights_only=True``)."""
        root = Path(path)
        if not (root / META_FILE).is_file() or not (root / WEIGHTS_FILE).is_file():
            raise RecsysHyperError(f"{root}: not a recsys-hyper model directory (expected {META_FILE} and "
                                   f"{WEIGHTS_FILE}); pass the --out folder of `recsys-hyper train`")
        fix = "the model directory is damaged or was edited: retrain it, or restore it from the registry"
        try:
            meta = json.loads((root / META_FILE).read_text())
        except (ValueError, OSError) as exc:
            raise RecsysHyperError(f"{root / META_FILE}: is not valid JSON ({exc}); {fix}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise RecsysHyperError(f"{root}: model format {found} is not supported by this version "
                                   f"(expects {FORMAT_VERSION}); retrain or use the version that wrote it")
        saved = meta.get("class", "HyperRecommender")
        if saved != cls.__name__:
            raise RecsysHyperError(f"{root}: holds a {saved}, not a {cls.__name__}; load it with {saved}.load")
        try:
            self = cls._from_meta(meta, root)
            self.implicit_ = bool(meta["implicit"])
            self.rating_range_ = tuple(meta["rating_range"]) if meta["rating_range"] is not None else None
        except KeyError as exc:
            raise RecsysHyperError(f"{root / META_FILE}: the key {exc} is missing; {fix}") from None
        if not (root / ITEM_IDS_FILE).is_file():
            raise RecsysHyperError(f"{root / ITEM_IDS_FILE}: file not found (the model's item vocabulary); {fix}")
        try:
            self.item_map_ = IdMap.load(root / ITEM_IDS_FILE)
        except Exception as exc:  # corrupt Parquet, wrong columns, duplicate ids
            raise RecsysHyperError(f"{root / ITEM_IDS_FILE}: cannot be read ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200]}); {fix}") from None
        try:
            state = torch.load(root / WEIGHTS_FILE, weights_only=True)
        except Exception as exc:  # truncated or garbage files raise several types
            raise RecsysHyperError(f"{root / WEIGHTS_FILE}: cannot be read ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200]}); {fix}") from None
        broken = [k for k, v in _flatten_tensors(state if isinstance(state, dict) else {}).items()
                  if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if broken:
            raise RecsysHyperError(f"{root / WEIGHTS_FILE}: holds non-finite weights (NaN or inf in {', '.join(broken[:5])}"
                                   f"{', ...' if len(broken) > 5 else ''}); it would score nothing but NaN: retrain it, "
                                   f"or serve another version")
        try:
            self._restore(state, meta, root)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise RecsysHyperError(f"{root}: the weights in {WEIGHTS_FILE} do not match {META_FILE} / "
                                   f"{ITEM_IDS_FILE} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                                   f"{fix}") from None
        if meta.get("tuning"):
            self.tuning_ = meta["tuning"]
        return self


class Indexed:
    """A fitted recommender on histories already in catalogue indices: what the engines call (the
    cold-start evaluation and the tuning on validation users measure through it, batch scoring
    scores through it). ``users``: the users' side features; ``catalogue``: the items scored
    (default: the training vocabulary). Built by :func:`indexed`; recommenders with more to offer
    on indices extend it (:class:`~recsys_hyper.recommender.hyper.HyperIndexed`)."""

    def __init__(self, model: Recommender, users: pd.DataFrame | None = None, catalogue: Catalogue | None = None):
        model._check_fitted()
        self.model, self.users = model, users
        self.catalogue = catalogue or model._catalogue()
        self.rating_range, self.implicit = model.rating_range_, model.implicit_

    @property
    def scores_new_items(self) -> bool:
        """Whether items outside the training vocabulary are scored from their features."""
        return self.model._scores_new_items()

    def adapt(self, h: Histories, **kwargs) -> AdaptedUsers:
        """Per-user state from the events of ``h`` (the model is unchanged)."""
        with torch.no_grad():
            return self.model._adapt(h, self.users, self.catalogue, **kwargs)

    @torch.no_grad()
    def rate(self, adapted: AdaptedUsers, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pairwise predictions: rows (P,) into ``adapted``, items (P,) catalogue rows -> (P,)
        (ratings not yet clipped to the scale)."""
        return self.model._rate(adapted, rows, items, self.catalogue)

    @torch.no_grad()
    def rank(self, adapted: AdaptedUsers, rows: np.ndarray) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the catalogue: (B, N)."""
        return self.model._rank(adapted, rows, self.catalogue)

    def recommend(self, h: Histories, k: int, heads: AdaptedUsers | None = None, exclude_seen: bool = True,
                  allowed: torch.Tensor | None = None) -> pd.DataFrame:
        """Top ``k`` per user of ``h`` (``heads`` adapted from ``h`` when not given; ``allowed``: a
        (N,) allow-list): ``user_id, item_id, score, rank``, seen items excluded."""
        if heads is None:
            heads = self.adapt(h)
        return top_k_frame(lambda rows: self.model._rank(heads, rows, self.catalogue), h, self.catalogue.ids, k,
                           exclude_seen, allowed)


def indexed(model: Recommender, users: pd.DataFrame | None = None,
            item_features: pd.DataFrame | None = None) -> Indexed:
    """The fitted ``model`` on catalogue indices: its training vocabulary, plus the items of
    ``item_features`` it has never seen when it scores items from their features."""
    model._check_fitted()
    return model.indexed_view(model, users, model._catalogue(item_features))


Recommender.indexed_view = Indexed


@dataclass
class FoldIn(AdaptedUsers):
    """Per-user state of a baseline: ``state`` tensors with one row per user."""

    state: dict

    @classmethod
    def of(cls, h: Histories, state: dict) -> "FoldIn":
        return cls(h.user_ids, h.lengths.copy(), state)


def train_validation_rows(h: Histories, validation_users) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of ``h``: validation = the rows of ``validation_users``
    (none when ``None``), training = every other row."""
    val = (np.zeros(0, dtype=np.int64) if validation_users is None
           else np.flatnonzero(np.isin(h.user_ids, np.asarray(list(validation_users)))))
    return np.setdiff1d(np.arange(len(h)), val), val


def fitted_tensors(model: Recommender) -> dict[str, torch.Tensor]:
    """The fitted tensors of ``model`` (what :meth:`Recommender.save` writes), flattened to dotted names."""
    model._check_fitted()
    return _flatten_tensors(model._state())


def _flatten_tensors(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_tensors(v, f"{prefix}{k}."))
        elif isinstance(v, (list, tuple)):
            out.update(_flatten_tensors(dict(enumerate(v)), f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def capability(model: Recommender, name: str):
    """``model``'s method ``name``, or a clear error naming the models that have it."""
    method = getattr(model, name, None)
    if method is None:
        what = {"explain": "explain its recommendations", "ask": "choose onboarding questions",
                "predict_interval": "give prediction intervals",
                "score_std": "give its scores' standard deviations"}[name]
        raise RecsysHyperError(f"{type(model).__name__} does not {what}; HyperRecommender does")
    return method
