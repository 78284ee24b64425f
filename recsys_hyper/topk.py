"""What every recommender shares at inference: frames -> histories, and top-K with exclusions."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .data import schema as S
from .data.episodes import Histories
from .data.idmap import UNKNOWN, IdMap
from .errors import RecsysHyperError

log = logging.getLogger(__name__)

SCORE_CHUNK_USERS = 1024


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


def finish_predictions(pred: np.ndarray, rating_range: tuple | None, unknown: np.ndarray) -> np.ndarray:
    """Clip to the training rating scale (explicit data) and mark unscoreable pairs NaN."""
    pred = pred.astype(np.float64)
    if rating_range is not None:
        pred = np.clip(pred, *rating_range)
    pred[unknown] = np.nan
    return pred


def allowed_mask(items, item_map: IdMap) -> torch.Tensor | None:
    """A (N,) boolean allow-list over the catalogue, or ``None`` for every item."""
    if items is None:
        return None
    idx = item_map.index(np.asarray(list(items)), unknown="mark")
    if (idx == UNKNOWN).any():
        log.warning("%d allow-listed items are unknown to the model and have no features; ignored",
                    int((idx == UNKNOWN).sum()))
    allowed = torch.zeros(len(item_map), dtype=torch.bool)
    allowed[torch.from_numpy(idx[idx != UNKNOWN])] = True
    return allowed


def top_k_frame(score_rows: Callable[[np.ndarray], torch.Tensor], h: Histories, item_map: IdMap, k: int,
                exclude_seen: bool = True, allowed: torch.Tensor | None = None) -> pd.DataFrame:
    """Top-``k`` per user of ``h``: ``user_id, item_id, score, rank`` (rank 1 = best).

    ``score_rows(rows)`` returns the (B, N) scores of users ``rows`` over the catalogue, a tensor
    this function may modify (not a view of shared state); seen items (the users' histories) and
    items outside ``allowed`` are never returned.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"The 'k' parameter of recommend must be a positive int. Got {k!r} instead.")
    N = len(item_map)
    out_u, out_i, out_s, out_r = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(h), SCORE_CHUNK_USERS):
            rows = np.arange(start, min(len(h), start + SCORE_CHUNK_USERS))
            scores = score_rows(rows)                                        # (B, N), ours to modify
            if allowed is not None:
                scores.masked_fill_(~allowed, float("-inf"))
            if exclude_seen:
                sub = h.select(rows)
                owner = torch.from_numpy(np.repeat(np.arange(len(rows)), sub.lengths))
                scores[owner, torch.from_numpy(sub.items)] = float("-inf")
            top = scores.topk(min(k, N), dim=1)
            b_idx, j_idx = torch.isfinite(top.values).nonzero(as_tuple=True)
            out_u.append(rows[b_idx.numpy()])
            out_i.append(top.indices[b_idx, j_idx].numpy())
            out_s.append(top.values[b_idx, j_idx].numpy())
            out_r.append(j_idx.numpy() + 1)
    rows = np.concatenate(out_u) if out_u else np.zeros(0, np.int64)
    items = np.concatenate(out_i) if out_i else np.zeros(0, np.int64)
    return pd.DataFrame({
        S.USER_ID: h.user_ids[rows] if len(rows) else h.user_ids[:0],
        S.ITEM_ID: item_map.ids(items),
        "score": np.concatenate(out_s).astype(np.float32) if out_s else np.zeros(0, np.float32),
        "rank": np.concatenate(out_r).astype(np.int32) if out_r else np.zeros(0, np.int32),
    })
