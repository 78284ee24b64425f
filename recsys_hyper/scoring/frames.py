"""Histories in two shapes: *long* (one row per event, the data contract) and *grouped* (one row per
user, list columns ``item_id``, ``rating``, ``timestamp``), the shape Spark's ``collect_list`` and
row-wise UDFs produce."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import schema as S

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
    an empty history (the user still appears, with k = 0)."""
    n = grouped[S.ITEM_ID].map(lambda v: 0 if v is None or (isinstance(v, float) and np.isnan(v)) else len(v))
    users = np.repeat(grouped[S.USER_ID].to_numpy(), n.to_numpy())
    out = {S.USER_ID: users}
    for col in LIST_COLUMNS:
        if col in grouped:
            parts = [np.asarray(v) for v, m in zip(grouped[col], n) if m]
            out[col] = np.concatenate(parts) if parts else np.zeros(0)
    long = pd.DataFrame(out)
    if S.RATING in long:
        long[S.RATING] = long[S.RATING].astype(np.float32)
    if S.TIMESTAMP in long:
        long[S.TIMESTAMP] = long[S.TIMESTAMP].astype(np.int64)
    return long


def recommend_grouped(rec, grouped: pd.DataFrame, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
    """Grouped histories in, one row per input row out: ``user_id``, ``item_ids``, ``scores``
    (top ``k``, best first). The shape of the MLflow pyfunc and of row-wise Spark UDFs."""
    users = pd.DataFrame({S.USER_ID: grouped[S.USER_ID].to_numpy()})
    recs = rec.recommend(explode_histories(grouped), k=k, exclude_seen=exclude_seen, users=users,
                         user_ids=users[S.USER_ID].to_numpy())
    lists = recs.groupby(S.USER_ID, sort=False).agg(item_ids=(S.ITEM_ID, list), scores=("score", list))
    aligned = lists.reindex(users[S.USER_ID])
    return pd.DataFrame({
        S.USER_ID: users[S.USER_ID].to_numpy(),
        "item_ids": [v if isinstance(v, list) else [] for v in aligned["item_ids"]],
        "scores": [v if isinstance(v, list) else [] for v in aligned["scores"]],
    })
