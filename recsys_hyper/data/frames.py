"""Histories as frames: *long* (one row per event, the data contract) or *grouped* (one row per
user, list columns ``item_id``, ``rating``, ``timestamp``: the shape Spark's ``collect_list`` and
row-wise UDFs produce), and the per-user :class:`~recsys_hyper.data.episodes.Histories` of the
users a recommender serves."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import RecsysHyperError
from . import schema as S
from .episodes import Histories
from .idmap import IdMap

log = logging.getLogger(__name__)

LIST_COLUMNS = (S.ITEM_ID, S.RATING, S.TIMESTAMP)


def group_histories(events: pd.DataFrame) -> pd.DataFrame:
    """Long -> grouped, users in order of first appearance."""
    events = events.assign(**({} if S.RATING in events else {S.RATING: S.IMPLICIT_RATING}))
    if S.TIMESTAMP not in events:
        events = events.assign(**{S.TIMESTAMP: np.arange(len(events), dtype=np.int64)})
    g = events.groupby(S.USER_ID, sort=False)
    return pd.DataFrame({
        S.USER_ID: list(g.groups.keys()),
        S.ITEM_ID: [list(map(int, v)) if np.issubdtype(np.asarray(v).dtype, np.integer) else list(v)
                    for v in g[S.ITEM_ID].agg(list)],
        S.RATING: [list(map(float, v)) for v in g[S.RATING].agg(list)],
        S.TIMESTAMP: [list(map(int, v)) for v in g[S.TIMESTAMP].agg(list)],
    })


def explode_histories(grouped: pd.DataFrame) -> pd.DataFrame:
    """Grouped -> long. ``rating`` / ``timestamp`` lists are optional; missing or null lists give
    an empty history (the user still appears, with k = 0). A row whose lists differ in length, or
    whose value is not a list, is refused with the users it concerns (nothing is guessed)."""
    require_columns(grouped, (S.USER_ID, S.ITEM_ID), "grouped histories")
    present = [col for col in LIST_COLUMNS if col in grouped]
    lengths = {col: grouped[col].map(_list_length).to_numpy() for col in present}
    users = grouped[S.USER_ID].to_numpy()
    for col, n_col in lengths.items():
        bad = n_col < 0
        if bad.any():
            raise RecsysHyperError(f"grouped histories: column '{col}' of {int(bad.sum())} rows is not a list "
                                   f"(users {users[bad][:5].tolist()}); each row holds one user's events as lists")
    n = lengths[S.ITEM_ID]
    # a rating / timestamp column whose lists are all empty is absent; otherwise each list matches
    kept = [S.ITEM_ID] + [col for col in present[1:] if lengths[col][n > 0].any()]
    for col in kept[1:]:
        rows = np.flatnonzero(lengths[col] != n)
        if len(rows):
            raise RecsysHyperError(
                f"grouped histories: {len(rows)} rows have a '{col}' list of another length than their "
                f"'item_id' list (users {users[rows[:5]].tolist()}: {lengths[col][rows[:5]].tolist()} vs "
                f"{n[rows[:5]].tolist()} values); each event needs one value in every list, or leave '{col}' "
                f"out for every user")
    out = {S.USER_ID: np.repeat(users, n)}
    for col in kept:
        parts = [np.asarray(v) for v, m in zip(grouped[col], n) if m]
        out[col] = np.concatenate(parts) if parts else np.zeros(0)
    return pd.DataFrame(out)                       # values as given: the model checks them before use


def _list_length(v) -> int:
    """The length of one grouped cell: 0 for a missing list, -1 for a value that is no list."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return 0
    if isinstance(v, (list, tuple, np.ndarray)):
        return len(v)
    return -1


def require_columns(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RecsysHyperError(f"{what}: missing column(s) {missing} (columns present: {list(df.columns)}); "
                               f"use the data contract's names")


def histories_from_frame(histories: pd.DataFrame | None, item_map: IdMap, users: pd.DataFrame | None = None,
                         user_ids=None, warn: bool = True) -> Histories:
    """Per-user chronological histories of the users to serve.

    ``user_ids`` fixes the users and their order; by default the users of ``histories`` (in
    order of appearance), then those only in ``users`` (empty histories). Events on items
    ``item_map`` does not hold are skipped, with a warning unless ``warn`` is false (callers that
    report a total themselves).
    """
    if histories is None:
        histories = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                  ((S.USER_ID, "int64"), (S.ITEM_ID, "int64"), (S.RATING, "float32"),
                                   (S.TIMESTAMP, "int64"))})
    require_columns(histories, (S.USER_ID, S.ITEM_ID), "histories")
    if S.RATING not in histories.columns:
        histories = histories.assign(**{S.RATING: S.IMPLICIT_RATING})
    if S.TIMESTAMP not in histories.columns:  # keep the order given
        histories = histories.assign(**{S.TIMESTAMP: np.arange(len(histories), dtype=np.int64)})
    if user_ids is None:
        ids = pd.Index(pd.unique(histories[S.USER_ID]))
        if users is not None:
            ids = ids.append(pd.Index(users[S.USER_ID]).difference(ids, sort=False))
        user_ids = ids.to_numpy()
    h, n_unknown = Histories.from_interactions(histories, item_map, user_ids=user_ids)
    if n_unknown and warn:
        log.warning("%d history events are on items the model has never seen and that have no features; "
                    "they were skipped (pass item features to use them)", n_unknown)
    return h
