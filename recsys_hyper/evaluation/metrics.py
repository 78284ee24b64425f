"""Ranking metrics on dense score matrices (torch), one value per user."""

from __future__ import annotations

import numpy as np
import torch


def ndcg_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-gain nDCG@k per user: scores (B, N), relevant (B, N) bool -> (B,).

    Items scored ``-inf`` (e.g. excluded support items) are never relevant hits. Users with no
    relevant item get 0 (callers usually drop them).
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices                                     # (B, k)
    hits = relevant.gather(1, top).float()                                  # (B, k)
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))  # (k,)
    dcg = (hits * discount).sum(1)
    n_rel = relevant.sum(1).clamp(max=k)
    ideal = torch.cumsum(discount, 0)[(n_rel - 1).clamp(min=0)] * (n_rel > 0)
    return torch.where(n_rel > 0, dcg / ideal.clamp(min=1e-12), torch.zeros_like(dcg))


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Share of each user's relevant items in their top k: (B, N), (B, N) bool -> (B,)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hits = relevant.gather(1, top).float().sum(1)
    n_rel = relevant.sum(1).float()
    return torch.where(n_rel > 0, hits / n_rel.clamp(min=1), torch.zeros_like(hits))


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
    """Per-user MAE and RMSE: (P,) arrays grouped by ``owner`` -> two (n_users,) arrays."""
    n = np.bincount(owner, minlength=n_users).astype(np.float64)
    err = pred - true
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.bincount(owner, weights=np.abs(err), minlength=n_users) / n
        rmse = np.sqrt(np.bincount(owner, weights=err * err, minlength=n_users) / n)
    return mae, rmse
