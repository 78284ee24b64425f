"""The recommender contract: one base class that the hypernetwork and every baseline implement.

What users call exists once, here (in the spirit of implicit's ``RecommenderBase``):

* ``fit(dataset, validation_users=None, progress=True) -> self``: learn from the training users;
  validation users decide early stopping and hyper-parameters (never test users);
* ``adapt(histories, users)``: per-user state from each user's events (the fold-in; the model is
  never mutated); ``adapt_histories(h, users)`` for histories already in the model's item indices;
* ``predict(histories, pairs)``: ratings on the training scale (explicit data) or relevance scores
  (implicit); ``rate_pairs(adapted, rows, items)`` on catalogue indices;
* ``recommend(histories, k)``: top K with seen items excluded and an optional allow-list;
  ``score_catalogue(adapted, rows)`` on catalogue indices; ``recommend_grouped(grouped, k)``;
* ``check_compatible(dataset)`` / ``check_item_ids(ids, source)``: the vocabulary check;
* ``save(dir)`` / ``load(dir)``: ``model.pt`` (plain tensors, loaded with ``weights_only=True``),
  ``model.json`` (class, parameters, metadata) and ``item_ids.parquet``; no pickle.

A recommender implements hooks only: ``_fit``, ``_adapt``, ``_rate``, ``_rank`` and the
persistence hooks ``_state`` / ``_meta`` / ``_restore`` (and ``_catalogue`` when it can score
items beyond its training vocabulary). Fitted attributes end in ``_``; using an unfitted model
raises :class:`~recsys_hyper.errors.NotFittedError`.
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
from ..data.episodes import Histories, capped_sample, chronological_split
from ..data.frames import explode_histories, histories_from_frame, require_columns
from ..data.idmap import UNKNOWN, IdMap
from ..errors import NotFittedError, RecsysHyperError, non_finite_users
from ..numerics.scores import allowed_mask, finish_predictions, top_k_frame

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

    # ------------------------------------------------------------------------------ fitting

    def __init__(self, **params):
        self.params = params

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
        bad = [k for k, v in self.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        return [f"the fitted weights hold NaN or inf ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"] if bad else []

    def _divergence_fix(self) -> str:
        return "Check the data for extreme values (`recsys-hyper data describe DIR`)."

    def _check_fitted(self) -> None:
        if not hasattr(self, "item_map_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(dataset) or "
                                 f"{type(self).__name__}.load(path) first")

    # ------------------------------------------------------------------------------ inference

    def adapt(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None, user_ids=None,
              item_features: pd.DataFrame | None = None, **kwargs) -> AdaptedUsers:
        """Per-user state of the users of ``histories`` (and those only in ``users``, with no
        history); ``user_ids`` fixes which users and in what order. The model is unchanged."""
        self._check_fitted()
        cat = self._catalogue(item_features)
        return self._adapt_no_grad(histories_from_frame(histories, cat.ids, users, user_ids), users, cat, **kwargs)

    def catalogue(self, item_features: pd.DataFrame | None = None) -> Catalogue:
        """The items this model can score: its training vocabulary, plus the items of
        ``item_features`` it has never seen when it scores items from their features."""
        self._check_fitted()
        return self._catalogue(item_features)

    def adapt_histories(self, h: Histories, users: pd.DataFrame | None = None, catalogue: Catalogue | None = None,
                        **kwargs) -> AdaptedUsers:
        """:meth:`adapt` for histories already in the item indices of ``catalogue`` (default: the
        training vocabulary; the evaluator's path)."""
        self._check_fitted()
        return self._adapt_no_grad(h, users, catalogue or self._catalogue(), **kwargs)

    def _adapt_no_grad(self, h, users, cat, **kwargs) -> AdaptedUsers:
        with torch.no_grad():
            return self._adapt(h, users, cat, **kwargs)

    @torch.no_grad()
    def rate_pairs(self, adapted: AdaptedUsers, rows: torch.Tensor, items: torch.Tensor,
                   catalogue: Catalogue | None = None) -> torch.Tensor:
        """Pairwise predictions: rows (P,) into ``adapted``, items (P,) catalogue indices -> (P,)
        (ratings not yet clipped to the scale)."""
        return self._rate(adapted, rows, items, catalogue or self._catalogue())

    @torch.no_grad()
    def score_catalogue(self, adapted: AdaptedUsers, rows: np.ndarray, catalogue: Catalogue | None = None
                        ) -> torch.Tensor:
        """Ranking scores of users ``rows`` over the catalogue (default: the training one): (B, N)."""
        return self._rank(adapted, rows, catalogue or self._catalogue())

    def predict(self, histories: pd.DataFrame | None, pairs: pd.DataFrame, users: pd.DataFrame | None = None,
                item_features: pd.DataFrame | None = None, heads: AdaptedUsers | None = None) -> np.ndarray:
        """Predicted rating (explicit data; clipped to the training scale) or relevance score
        (implicit) for each ``(user_id, item_id)`` row of ``pairs``. Unknown items give NaN."""
        self._check_fitted()
        require_columns(pairs, (S.USER_ID, S.ITEM_ID), "pairs")
        cat = self._catalogue(item_features)
        if heads is None:
            heads = self.adapt(histories, users, user_ids=pd.unique(pairs[S.USER_ID]), item_features=item_features)
        u = IdMap(heads.user_ids, name="user").index(pairs[S.USER_ID].to_numpy())
        i = cat.ids.index(pairs[S.ITEM_ID].to_numpy(), unknown="mark")
        unknown = i == UNKNOWN
        if unknown.any():
            log.warning("%d pairs are on items the model has never seen and that have no features; "
                        "their prediction is NaN", int(unknown.sum()))
        with torch.no_grad():
            out = self._rate(heads, torch.from_numpy(u), torch.from_numpy(np.where(unknown, 0, i)), cat)
        pred = finish_predictions(out.numpy(), self.rating_range_, unknown)
        broken = ~unknown & ~np.isfinite(pred)
        if broken.any():                              # NaN means "unknown item" here, and nothing else
            raise non_finite_users(heads.user_ids, np.unique(u[broken]), "predictions")
        return pred

    def recommend(self, histories: pd.DataFrame | None, k: int = 10, exclude_seen: bool = True, items=None,
                  users: pd.DataFrame | None = None, user_ids=None, item_features: pd.DataFrame | None = None,
                  heads: AdaptedUsers | None = None) -> pd.DataFrame:
        """Top-``k`` items per user: ``user_id, item_id, score, rank`` (rank 1 = best).

        ``exclude_seen`` drops the items in each user's history; ``items`` restricts the
        candidates to an allow-list of item ids. Users with no history get the population's
        (features-informed, where the model uses features) items."""
        self._check_fitted()
        cat = self._catalogue(item_features)
        h = histories_from_frame(histories, cat.ids, users, user_ids if heads is None else heads.user_ids)
        return self.recommend_histories(h, k, heads=heads, users=users, exclude_seen=exclude_seen,
                                        allowed=allowed_mask(items, cat.ids), catalogue=cat)

    def recommend_histories(self, h: Histories, k: int, heads: AdaptedUsers | None = None,
                            users: pd.DataFrame | None = None, exclude_seen: bool = True,
                            allowed: torch.Tensor | None = None, catalogue: Catalogue | None = None) -> pd.DataFrame:
        """:meth:`recommend` for histories already in the catalogue's indices (the batch scorer's
        path); ``heads`` are adapted from ``h`` when not given; ``allowed``: a (N,) allow-list."""
        self._check_fitted()
        cat = catalogue or self._catalogue()
        if heads is None:
            heads = self._adapt_no_grad(h, users, cat)
        return top_k_frame(lambda rows: self._rank(heads, rows, cat), h, cat.ids, k, exclude_seen, allowed)

    def recommend_grouped(self, grouped: pd.DataFrame, k: int = 10, exclude_seen: bool = True,
                          explain: int | None = None, ask: int | None = None) -> pd.DataFrame:
        """Grouped histories in (one row per user: ``user_id`` and the lists ``item_id``,
        ``rating``, ``timestamp``), one row per input row out: ``user_id``, ``item_ids``,
        ``scores`` (top ``k``, best first). The shape of the MLflow pyfunc and of row-wise Spark UDFs.
        ``explain`` (events per item): also ``explanations``, one JSON object per recommended item
        (``score_prior``, ``score_features``, ``score_history``, ``because``; see :meth:`explain`);
        ``ask`` (questions per user): also ``questions``, the items to ask about next (see :meth:`ask`)."""
        import json

        users = pd.DataFrame({S.USER_ID: grouped[S.USER_ID].to_numpy()})
        history = explode_histories(grouped)
        recs = self.recommend(history, k=k, exclude_seen=exclude_seen, users=users,
                              user_ids=users[S.USER_ID].to_numpy())
        agg = {"item_ids": (S.ITEM_ID, list), "scores": ("score", list)}
        if explain:
            recs = self.explain(history, recs, users=users, top_events=explain)
            recs["explanation"] = [json.dumps({"score_prior": float(p), "score_features": float(f),
                                               "score_history": float(h),
                                               "because": [{k_: (v.item() if hasattr(v, "item") else v)
                                                            for k_, v in e.items()} for e in because]})
                                   for p, f, h, because in zip(recs["score_prior"], recs["score_features"],
                                                               recs["score_history"], recs["because"])]
            agg["explanations"] = ("explanation", list)
        aligned = recs.groupby(S.USER_ID, sort=False).agg(**agg).reindex(users[S.USER_ID])
        out = pd.DataFrame({S.USER_ID: users[S.USER_ID].to_numpy(),
                            **{col: [v if isinstance(v, list) else [] for v in aligned[col]] for col in agg}})
        if ask:
            questions = self.ask(history, n=ask, users=users, user_ids=users[S.USER_ID].to_numpy())
            lists = questions.groupby(S.USER_ID, sort=False)[S.ITEM_ID].agg(list).reindex(users[S.USER_ID])
            out["questions"] = [v if isinstance(v, list) else [] for v in lists]
        return out

    def ask(self, histories: pd.DataFrame | None, n: int = 5, users: pd.DataFrame | None = None, user_ids=None,
            **kwargs) -> pd.DataFrame:
        """The ``n`` items to ask each user about next; recommenders that can choose onboarding
        questions implement it."""
        raise RecsysHyperError(f"{type(self).__name__} does not choose onboarding questions; HyperRecommender does")

    def explain(self, histories: pd.DataFrame | None, items: pd.DataFrame, users: pd.DataFrame | None = None,
                item_features: pd.DataFrame | None = None, top_events: int | None = 5) -> pd.DataFrame:
        """Why each ``(user_id, item_id)`` row of ``items`` scores what it does, by the user's
        history events; recommenders that can explain their scores implement it."""
        raise RecsysHyperError(f"{type(self).__name__} does not explain its recommendations; "
                               f"HyperRecommender does")

    # ------------------------------------------------------------------------------ the vocabulary check

    def check_compatible(self, dataset: Dataset, allow_rating_mismatch: bool = False) -> None:
        """Fail before any work if ``dataset`` cannot be served by this model: item ids of another
        type, none of its items known, or (unless ``allow_rating_mismatch``) feedback of another kind
        or ratings outside the training scale; warn with counts about items the model has never seen."""
        self._check_fitted()
        ids = dataset.item_ids()
        featured = dataset.items[S.ITEM_ID] if dataset.items is not None else None
        self.check_item_ids(ids.to_numpy(), str(dataset.source), featured=featured)
        if not allow_rating_mismatch and len(dataset.interactions):
            self.check_ratings(dataset.interactions[S.RATING].to_numpy(), str(dataset.source), dataset.implicit)

    def check_ratings(self, ratings, source: str, implicit: bool) -> None:
        """Refuse explicit ratings for an implicit model (and the reverse), and ratings outside the
        scale the model was trained on (e.g. a 0-100 scale into a 1-5 model): every prediction
        would be wrong without any error. ``ratings``: an array, or an iterable of arrays (the
        batches of a streamed file)."""
        fix = "use the model trained on this kind of data, or pass --allow-rating-mismatch if this is intended"
        if implicit != self.implicit_:
            kinds = ("implicit (no rating column)", "explicit (ratings)")
            raise RecsysHyperError(f"{source}: the events are {kinds[0] if implicit else kinds[1]} but the model was "
                                   f"trained on {kinds[0] if self.implicit_ else kinds[1]} feedback; {fix}")
        if self.rating_range_ is None or implicit:
            return
        lo, hi = self.rating_range_
        n_out, n, rows, examples = 0, 0, [], []
        for batch in ([ratings] if isinstance(ratings, np.ndarray) else ratings):
            outside = np.flatnonzero((batch < lo - 1e-6) | (batch > hi + 1e-6))
            n_out += len(outside)
            rows += (outside[: 5 - len(rows)] + n).tolist()
            examples += batch[outside[: 5 - len(examples)]].tolist()
            n += len(batch)
        if n_out:
            raise RecsysHyperError(
                f"{source}: {n_out:,} ratings of {n:,} are outside the model's training scale [{lo:g}, {hi:g}] "
                f"(rows {', '.join(map(str, rows))}; e.g. {', '.join(f'{v:g}' for v in examples)}); rescale them "
                f"to [{lo:g}, {hi:g}], or {fix}")

    def check_item_ids(self, ids: np.ndarray, source: str, kind: str | None = None, featured=None) -> int:
        """The vocabulary check, on the distinct item ids of some data: refuse another id type
        (``kind``: ``"int64"`` or ``"string"``, inferred from ``ids`` when not given) or a
        catalogue with no known item; warn about unknown items. ``featured``: ids that have a
        features row. Returns how many ids are unknown."""
        self._check_fitted()
        if len(ids) == 0:
            return 0
        self.check_item_kind(kind or ("int64" if pd.api.types.is_integer_dtype(np.asarray(ids)) else "string"), source)
        known = self.item_map_.index(ids, unknown="mark") != UNKNOWN
        if not known.any():
            raise RecsysHyperError(
                f"{source}: none of its {len(ids):,} item ids is known to the model "
                f"(e.g. {list(ids[:5])}); vocabulary mismatch: use the model trained on this catalogue")
        n_new = int((~known).sum())
        if n_new:
            with_features = 0
            if featured is not None and self._scores_new_items():
                with_features = int(pd.Index(ids[~known]).isin(featured).sum())
            log.warning("%d of %d item ids are unknown to the model: %d have features and are scored from them, "
                        "%d have none and are skipped (e.g. %s)", n_new, len(ids), with_features,
                        n_new - with_features, list(ids[~known][:5]))
        return n_new

    def check_item_kind(self, kind: str, source: str) -> None:
        """Refuse item ids of another type (``"int64"`` or ``"string"``) than the model's."""
        self._check_fitted()
        if kind != self.item_map_.kind:
            raise RecsysHyperError(
                f"{source}: item ids are {kind} but the model was trained on {self.item_map_.kind} item ids; "
                f"this model does not fit this data (vocabulary mismatch): use the model trained on this catalogue")

    # ------------------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fitted tensors (what :meth:`save` writes), flattened to dotted names."""
        self._check_fitted()
        return _flatten_tensors(self._state())

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


#: the support sizes every baseline is tuned on (validation users' k earliest events), as evaluated
TUNING_SHOTS = (0, 1, 3, 5, 10, 20)


#: validation users a tuning grid is scored on at most (a seeded sample), so tuning costs the same at any size
MAX_TUNING_USERS = 2000


def validation_episodes(h: Histories, shots=TUNING_SHOTS, max_users: int | None = MAX_TUNING_USERS,
                        seed: int = 0) -> list[tuple[Histories, Histories]]:
    """Chronological (support, query) episodes of validation histories ``h``, one per k; of a
    seeded sample of ``max_users`` of them when there are more."""
    h = h.select(capped_sample(len(h), max_users, [seed, 104729]))
    episodes = [chronological_split(h, k, min_query=1) for k in shots]
    return [(s, q) for s, q in episodes if len(s)]


def validation_mae(model: Recommender, h: Histories | list, users: pd.DataFrame | None = None,
                   shots=TUNING_SHOTS) -> float:
    """Mean (over k) validation MAE of chronological fold-ins (clipped to the rating scale); used
    to pick hyper-parameters. ``h``: validation histories, or their :func:`validation_episodes`."""
    errors = []
    for sup, qry in (h if isinstance(h, list) else validation_episodes(h, shots)):
        adapted = model.adapt_histories(sup, users)
        pred = model.rate_pairs(adapted, torch.from_numpy(qry.owners()), torch.from_numpy(qry.items)).numpy()
        pred = finish_predictions(pred, model.rating_range_)
        errors.append(float(np.mean(np.abs(pred - qry.ratings))))
    return float(np.mean(errors)) if errors else float("nan")


def validation_ndcg(model: Recommender, h: Histories | list, users: pd.DataFrame | None = None,
                    shots=TUNING_SHOTS, threshold: float = 4.0, cutoff: int = 10) -> float:
    """Mean (over k) validation nDCG@``cutoff`` over the whole catalogue, support excluded,
    relevant = query items rated >= ``threshold`` (every query item for implicit data)."""
    from ..numerics.metrics import ndcg_at_k
    from ..numerics.scores import exclude_seen, membership

    values = []
    for sup, qry in (h if isinstance(h, list) else validation_episodes(h, shots)):
        positive = np.ones(len(qry.items), bool) if model.implicit_ else qry.ratings >= threshold
        relevant = qry.mask(positive)
        users_with = np.flatnonzero(relevant.lengths > 0)
        if users_with.size == 0:
            continue
        adapted = model.adapt_histories(sup, users)
        per_user = []
        for start in range(0, len(users_with), 1024):           # users x catalogue stays bounded
            rows = users_with[start:start + 1024]
            scores = exclude_seen(model.score_catalogue(adapted, rows).clone(), sup.select(rows))
            per_user.append(ndcg_at_k(scores, membership(relevant.select(rows), scores.shape[1]), cutoff))
        values.append(float(torch.cat(per_user).mean()))
    return float(np.mean(values)) if values else float("nan")


def tune(model: Recommender, grid: dict[str, list], score, set_params, lower_is_better: bool = True) -> dict:
    """Grid search on validation users: ``set_params(**point)`` then ``score()`` for every point of
    the grid; the best point is set and the search recorded in ``model.tuning_`` (grid, chosen
    values, every score)."""
    import itertools

    names = list(grid)
    results = []
    for values in itertools.product(*(grid[n] for n in names)):
        point = dict(zip(names, values))
        set_params(**point)
        results.append((point, float(score())))
    finite = [r for r in results if np.isfinite(r[1])] or results
    best = (min if lower_is_better else max)(finite, key=lambda r: r[1])
    set_params(**best[0])
    model.tuning_ = {"grid": {n: list(grid[n]) for n in names}, "chosen": best[0],
                     "metric": "validation MAE" if lower_is_better else "validation nDCG@10",
                     "score": best[1], "scores": [{**p, "score": s} for p, s in results]}
    return best[0]


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
