"""The one scoring path every recommender shares: linear heads over item vectors, the seen-item
exclusion, the allow-list, top K, and predictions put on the rating scale.

A linear head scores item ``i`` for user ``u`` as ``bias_i + head_u . phi_i``; the hypernetwork's
ranking score and rating and the linear baselines are all this one form with their own heads,
item vectors and biases (:func:`linear_scores`). Scoring a catalogue is then one GEMM with the
bias fused.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..data.idmap import UNKNOWN, IdMap
from ..errors import check_count, non_finite_users

log = logging.getLogger(__name__)

# users per catalogue GEMM + top K: a 256 x 10,000 block of scores (10 MB) stays in the cache between
# the GEMM that writes it and the top K that reads it (25% faster than 1,024 rows on 2 cores)
SCORE_CHUNK_USERS = 256


def linear_scores(heads: torch.Tensor, phi: torch.Tensor, bias: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    """``bias_i + heads_u . phi_i``.

    Catalogue (default): heads (B, D), phi (N, D), bias (N,) -> (B, N), one GEMM with the bias
    fused. ``pairs``: row ``p`` of each is one (user, item) pair: (P, D), (P, D), (P,) -> (P,).
    """
    if pairs:
        return bias + (heads * phi).sum(-1)
    return torch.addmm(bias, heads, phi.T)


def membership(h: Histories, n_items: int) -> torch.Tensor:
    """(len(h), n_items) bool: True where the row's user has an event on the item."""
    out = torch.zeros(len(h), n_items, dtype=torch.bool)
    out[torch.from_numpy(h.owners()), torch.from_numpy(h.items.astype(np.int64))] = True
    return out


def exclude_seen(scores: torch.Tensor, h: Histories) -> torch.Tensor:
    """Set the score of every item in row ``u``'s history to ``-inf``, in place: scores (len(h), N)."""
    scores[torch.from_numpy(h.owners()), torch.from_numpy(h.items.astype(np.int64))] = float("-inf")
    return scores


def finish_predictions(pred: np.ndarray, rating_range: tuple | None, unknown: np.ndarray | None = None) -> np.ndarray:
    """Clip to the training rating scale (explicit data) and mark unscoreable pairs NaN."""
    pred = pred.astype(np.float64)
    if rating_range is not None:
        pred = np.clip(pred, *rating_range)
    if unknown is not None:
        pred[unknown] = np.nan
    return pred


def allowed_mask(items, item_map: IdMap, excluded=None) -> torch.Tensor | None:
    """A (N,) boolean allow-list over the catalogue (``items``; every item when ``None``) less the
    ``excluded`` ids (retired items, ad-hoc exclusions; ids the catalogue lacks are ignored), or
    ``None`` for every item."""
    if items is None and (excluded is None or not len(excluded)):
        return None
    if items is None:
        allowed = torch.ones(len(item_map), dtype=torch.bool)
    else:
        idx = item_map.index(np.asarray(list(items)), unknown="mark")
        if (idx == UNKNOWN).any():
            log.warning("%d allow-listed items are unknown to the model and have no features; ignored",
                        int((idx == UNKNOWN).sum()))
        allowed = torch.zeros(len(item_map), dtype=torch.bool)
        allowed[torch.from_numpy(idx[idx != UNKNOWN])] = True
    if excluded is not None and len(excluded):
        out = item_map.index(np.asarray(list(excluded)), unknown="mark")
        allowed[torch.from_numpy(out[out != UNKNOWN])] = False
    return allowed


def non_finite_rows(scores: torch.Tensor) -> torch.Tensor:
    """(B,) whether each row of ``scores`` (B, N) holds a NaN or a +inf (-inf is allowed: excluded).

    A row's sum is NaN or +inf whenever the row holds one (once in a sum, +inf never leaves it
    but for NaN), so one cheap pass finds the candidates; only those rows are checked element by
    element, since a sum of large finite scores can also overflow."""
    total = scores.sum(1)
    suspect = (torch.isnan(total) | torch.isposinf(total)).nonzero().flatten()
    broken = torch.zeros(len(scores), dtype=torch.bool)
    if len(suspect):
        rows = scores[suspect]
        broken[suspect] = torch.isnan(rows).any(1) | torch.isposinf(rows).any(1)
    return broken


def top_k_frame(score_rows: Callable[[np.ndarray], torch.Tensor], h: Histories, item_map: IdMap, k: int,
                exclude: bool = True, allowed: torch.Tensor | None = None) -> pd.DataFrame:
    """Top-``k`` per user of ``h``: ``user_id, item_id, score, rank`` (rank 1 = best).

    ``score_rows(rows)`` returns the (B, N) scores of users ``rows`` over the catalogue, a tensor
    this function may modify (not a view of shared state); seen items (the users' histories, when
    ``exclude``) and items outside ``allowed`` are never returned.
    """
    k = check_count(k, "k", "recommend")
    N = len(item_map)
    out_u, out_i, out_s, out_r = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(h), SCORE_CHUNK_USERS):
            rows = np.arange(start, min(len(h), start + SCORE_CHUNK_USERS))
            scores = score_rows(rows)                                        # (B, N), ours to modify
            broken = non_finite_rows(scores)
            if bool(broken.any()):                   # never written: a NaN would silently drop the user
                raise non_finite_users(h.user_ids, rows[broken.numpy()], "ranking scores")
            if allowed is not None:
                scores.masked_fill_(~allowed, float("-inf"))
            if exclude:
                exclude_seen(scores, h.select(rows))
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
