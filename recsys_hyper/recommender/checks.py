"""Whether data can be served by a fitted model, checked before any work: the same checks for
``recommend``, ``predict``, ``onboard``, ``score`` and the candidates of ``score``, and for the
library's calls (:func:`checked_histories`: ``adapt``, ``predict``, ``recommend``, ``ask``,
``explain``), hence the MLflow pyfunc, its REST endpoint and Spark UDFs.

* the item vocabulary: ids of another type, or none of them known, are refused; unknown items are
  counted (scored from their features where the model can, else skipped);
* the ratings: feedback of another kind (implicit events into an explicit model, or the reverse)
  and ratings outside the training scale are refused unless the caller allows them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from ..data import schema as S
from ..data.idmap import UNKNOWN, IdMap
from ..errors import RecsysHyperError

if TYPE_CHECKING:
    from ..data.dataset import Dataset


class Recommender(Protocol):
    """What the checks read of a fitted recommender (see :class:`~recsys_hyper.recommender.base.Recommender`)."""

    item_map_: IdMap
    implicit_: bool
    rating_range_: tuple[float, float] | None

    def _check_fitted(self) -> None: ...

    def _scores_new_items(self) -> bool: ...

log = logging.getLogger(__name__)

#: how far beyond its scale a rating may be before it counts as outside (float32 rounding)
SCALE_TOLERANCE = 1e-6


def outside_scale(ratings: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Which of ``ratings`` lie outside the scale ``[lo, hi]`` (beyond ``SCALE_TOLERANCE``)."""
    return (ratings < lo - SCALE_TOLERANCE) | (ratings > hi + SCALE_TOLERANCE)

MISMATCH_FIX = "use the model trained on this kind of data, or pass --allow-rating-mismatch if this is intended"


def check_compatible(model: Recommender, dataset: Dataset, allow_rating_mismatch: bool = False) -> None:
    """Fail before any work if ``dataset`` cannot be served by ``model``: item ids of another type,
    none of its items known, or (unless ``allow_rating_mismatch``) feedback of another kind or
    ratings outside the training scale; warn with counts about items the model has never seen."""
    ids = dataset.item_ids()
    featured = dataset.items[S.ITEM_ID] if dataset.items is not None else None
    check_item_ids(model, ids.to_numpy(), str(dataset.source), featured=featured)
    if not allow_rating_mismatch and len(dataset.interactions):
        check_ratings(model, dataset.interactions[S.RATING].to_numpy(), str(dataset.source), dataset.implicit)


def check_ratings(model: Recommender, ratings, source: str, implicit: bool) -> None:
    """Refuse explicit ratings for an implicit model (and the reverse), and ratings outside the
    scale the model was trained on (e.g. a 0-100 scale into a 1-5 model): every prediction would
    be wrong without any error. ``ratings``: an array, or an iterable of arrays (the batches of a
    streamed file)."""
    if implicit != model.implicit_:
        kinds = ("implicit (no rating column)", "explicit (ratings)")
        raise RecsysHyperError(f"{source}: the events are {kinds[0] if implicit else kinds[1]} but the model was "
                               f"trained on {kinds[0] if model.implicit_ else kinds[1]} feedback; {MISMATCH_FIX}")
    if model.rating_range_ is None or implicit:
        return
    scale = OutsideScale(*model.rating_range_)
    for batch in ([ratings] if isinstance(ratings, np.ndarray) else ratings):
        scale.add(batch)
    scale.raise_if_any(source)


class OutsideScale:
    """Ratings outside the training scale ``[lo, hi]``, counted over the batches of a file: how
    many of how many, and the first rows and values. Batches are added in file order, with their
    row numbers (``first_row``) when they are not consecutive (Spark's partitions, merged in order)."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.n_out, self.n, self.rows, self.examples = 0, 0, [], []

    def add(self, batch: np.ndarray, first_row: int | None = None) -> None:
        start = self.n if first_row is None else first_row
        outside = np.flatnonzero(outside_scale(batch, self.lo, self.hi))
        self.n_out += len(outside)
        self.rows += (outside[: 5 - len(self.rows)] + start).tolist()
        self.examples += batch[outside[: 5 - len(self.examples)]].tolist()
        self.n += len(batch)

    def merge(self, other: "OutsideScale", offset: int) -> None:
        """Add the counts of a later part of the file whose row numbers start at ``offset``."""
        self.rows += [r + offset for r in other.rows][: 5 - len(self.rows)]
        self.examples += other.examples[: 5 - len(self.examples)]
        self.n_out += other.n_out
        self.n += other.n

    def raise_if_any(self, source: str) -> None:
        if self.n_out:
            lo, hi = self.lo, self.hi
            raise RecsysHyperError(
                f"{source}: {self.n_out:,} ratings of {self.n:,} are outside the model's training scale "
                f"[{lo:g}, {hi:g}] (rows {', '.join(map(str, self.rows))}; e.g. "
                f"{', '.join(f'{v:g}' for v in self.examples)}); rescale them to [{lo:g}, {hi:g}], or {MISMATCH_FIX}")


def check_item_ids(model: Recommender, ids: np.ndarray, source: str, kind: str | None = None, featured=None,
                   catalogue: IdMap | None = None, warn: bool = True) -> int:
    """The vocabulary check, on the distinct item ids of some data: refuse another id type
    (``kind``: ``"int64"`` or ``"string"``, inferred from ``ids`` when not given) or a catalogue
    with no known item; warn about unknown items (unless not ``warn``). ``featured``: ids that have
    a features row; ``catalogue``: the items that can be scored (default: the training vocabulary).
    Returns how many ids are unknown."""
    if len(ids) == 0:
        model._check_fitted()
        return 0
    check_item_kind(model, kind or ("int64" if pd.api.types.is_integer_dtype(np.asarray(ids)) else "string"), source)
    known = (catalogue or model.item_map_).index(ids, unknown="mark") != UNKNOWN
    if not known.any():
        raise RecsysHyperError(
            f"{source}: none of its {len(ids):,} item ids is known to the model "
            f"(e.g. {np.asarray(ids)[:5].tolist()}); vocabulary mismatch: use the model trained on this catalogue")
    n_new = int((~known).sum())
    if n_new and warn:
        with_features = 0
        if featured is not None and model._scores_new_items():
            with_features = int(pd.Index(ids[~known]).isin(featured).sum())
        log.warning("%d of %d item ids are unknown to the model: %d have features and are scored from them, "
                    "%d have none and are skipped (e.g. %s)", n_new, len(ids), with_features,
                    n_new - with_features, np.asarray(ids)[~known][:5].tolist())
    return n_new


def check_item_kind(model: Recommender, kind: str, source: str) -> None:
    """Refuse item ids of another type (``"int64"`` or ``"string"``) than the model's."""
    model._check_fitted()
    if kind != model.item_map_.kind:
        raise RecsysHyperError(
            f"{source}: item ids are {kind} but the model was trained on {model.item_map_.kind} item ids; "
            f"this model does not fit this data (vocabulary mismatch): use the model trained on this catalogue")


def checked_histories(model: Recommender, histories: pd.DataFrame | None, catalogue: IdMap | None = None,
                      source: str = "histories", allow_rating_mismatch: bool = False) -> pd.DataFrame | None:
    """The histories a library call serves, checked as the commands check a dataset: the values
    (ids without nulls and of a usable type, finite ratings, plausible timestamps), the item
    vocabulary (the model's id type; at least one item the model can score, ``catalogue`` when
    given), the kind of feedback and the rating scale (unless ``allow_rating_mismatch``). A pair
    rated more than once counts once, with its latest rating (the data contract's rule). Returns
    the histories to serve, in the contract's types (ids int64 or string, ratings float32,
    timestamps int64 unix seconds)."""
    import pyarrow as pa

    from ..data.frames import require_columns
    from ..data.validation import Collector, coerce_id, coerce_rating, coerce_timestamp

    model._check_fitted()
    if histories is None or len(histories) == 0:
        return histories
    require_columns(histories, (S.USER_ID, S.ITEM_ID), source)
    c = Collector()
    columns = {}
    for col in (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP):
        if col not in histories.columns:
            continue
        try:
            columns[col] = pa.chunked_array([pa.array(histories[col].to_numpy(), from_pandas=True)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            c.add(source, col, f"holds values of mixed or unusable types ({exc})", "store one type per column")
    coerced = {col: coerce_id(columns[col], source, col, c) for col in (S.USER_ID, S.ITEM_ID) if col in columns}
    if S.RATING in columns:
        coerced[S.RATING] = coerce_rating(columns[S.RATING], source, c)
    if S.TIMESTAMP in columns:
        coerced[S.TIMESTAMP] = coerce_timestamp(columns[S.TIMESTAMP], source, c)
    c.raise_if_any()
    items = coerced[S.ITEM_ID]
    check_item_ids(model, pd.unique(items.to_numpy()), source,
                   kind="int64" if pa.types.is_integer(items.type) else "string", catalogue=catalogue, warn=False)
    out = pd.DataFrame({col: arr.to_numpy() for col, arr in coerced.items()}, index=histories.index)
    implicit = S.RATING not in out.columns
    if not allow_rating_mismatch:
        if model.implicit_ and not implicit:          # implicit events carry the rating 1.0, or none
            implicit = bool((out[S.RATING].to_numpy() == S.IMPLICIT_RATING).all())
        check_ratings(model, out[S.RATING].to_numpy() if not implicit else np.zeros(0), source, implicit)
    key = [S.USER_ID, S.ITEM_ID]
    if not out.duplicated(key).any():
        return out
    order = out.sort_values(S.TIMESTAMP, kind="stable") if S.TIMESTAMP in out.columns else out
    return order[~order.duplicated(key, keep="last")].sort_index()
