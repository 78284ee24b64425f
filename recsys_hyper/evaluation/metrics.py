"""The cold-start evaluation's metrics, one value per user: the full-catalogue ranking metrics
(shared with training's validation), nDCG among the query items, rating errors."""

from __future__ import annotations

import numpy as np

from ..numerics.metrics import ndcg_at_k, recall_at_k

__all__ = ["ndcg_at_k", "recall_at_k", "ndcg_graded", "per_user_errors"]


def ndcg_graded(pred: np.ndarray, true: np.ndarray, owner: np.ndarray, n_users: int, k: int = 3) -> np.ndarray:
    """Per-user nDCG@k ranking each user's own items by ``pred``, gain ``2^r - 1``, log2 discount
    (the MeLU papers' "nDCG@3 among the query items"). pred / true / owner: (P,) -> (n_users,).

    Ties in ``pred`` are broken by position (first come first); users whose ideal DCG is 0 (all
    ratings 0) get NaN.
    """
    out = np.full(n_users, np.nan)
    order = np.lexsort((np.arange(len(pred)), -pred, owner))             # by user, then score desc
    ideal = np.lexsort((np.arange(len(true)), -true, owner))
    starts = np.searchsorted(owner[order], np.arange(n_users + 1))
    gain_p = np.power(2.0, true[order]) - 1.0
    gain_i = np.power(2.0, true[ideal]) - 1.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for u in range(n_users):
        s, e = starts[u], min(starts[u + 1], starts[u] + k)
        if e <= s:
            continue
        idcg = float(gain_i[s:e] @ disc[: e - s])
        if idcg > 0:
            out[u] = float(gain_p[s:e] @ disc[: e - s]) / idcg
    return out


def per_user_errors(pred: np.ndarray, true: np.ndarray, owner: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user MAE and RMSE: (P,) arrays grouped by ``owner`` -> two (n_users,) arrays. Pairs a
    model cannot score (NaN predictions: items it does not know) are left out."""
    scored = np.isfinite(pred)
    if not scored.all():
        pred, true, owner = pred[scored], true[scored], owner[scored]
    n = np.bincount(owner, minlength=n_users).astype(np.float64)
    err = pred - true
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.bincount(owner, weights=np.abs(err), minlength=n_users) / n
        rmse = np.sqrt(np.bincount(owner, weights=err * err, minlength=n_users) / n)
    return mae, rmse
