"""Every metric, once: one value per user, so that means and confidence intervals can be taken
over users. Used by training's validation, the tuning of every method, the cold-start
evaluation, the nightly's gate and its cohorts.

* Full-catalogue ranking on dense score matrices (torch): :func:`ndcg_at_k`, :func:`recall_at_k`.
* Ranking a user's own query items by predicted rating: :func:`ndcg_graded` (MeLU's nDCG@3).
* Rating errors: :func:`per_user_errors` (MAE, RMSE per user), :func:`mean_absolute_error` (over pairs).
* Ranked lists already served (pairs, pandas): :func:`ranked_list_metrics`.

A new metric (MAP, MRR ...) is one function here, beside its relatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data import schema as S


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


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int, truncated: bool = False) -> torch.Tensor:
    """Share of each user's relevant items in their top k: (B, N), (B, N) bool -> (B,).

    ``truncated``: hits / min(k, |relevant|) instead of hits / |relevant| (the convention of
    EASE and VAE-CF, so that a perfect top k scores 1 whatever the number of relevant items)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hits = relevant.gather(1, top).float().sum(1)
    n_rel = relevant.sum(1).float()
    if truncated:
        n_rel = n_rel.clamp(max=k)
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


def mean_absolute_error(pred: np.ndarray, true: np.ndarray) -> float:
    """MAE over pairs (every pair weighs the same); pairs a model cannot score (NaN predictions)
    are left out; NaN when none is left."""
    ok = np.isfinite(pred)
    return float(np.mean(np.abs(pred[ok] - true[ok]))) if ok.any() else float("nan")


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


def ranked_list_metrics(recs: pd.DataFrame, relevant: pd.DataFrame, users: np.ndarray, k: int = 10
                        ) -> tuple[float, float]:
    """Mean Recall@k and nDCG@k (binary gains; the definitions of :func:`recall_at_k` /
    :func:`ndcg_at_k`) of ``users``: their ranked lists (``recs``: ``user_id, item_id, rank``) against
    their ``relevant`` pairs (``user_id, item_id``). Computed on those pairs alone, never on a users
    x items matrix (at 1M users one was 12 GB): the cohorts' metrics of what was served."""
    key = [S.USER_ID, S.ITEM_ID]
    served = recs[recs[S.USER_ID].isin(users)].sort_values([S.USER_ID, "rank"], kind="stable")
    served = served.assign(position=served.groupby(S.USER_ID).cumcount() + 1)
    served = served[served["position"] <= k]
    relevant = relevant[key].drop_duplicates()
    n_relevant = relevant.groupby(S.USER_ID).size().reindex(users, fill_value=0).to_numpy()
    hits = served[key + ["position"]].merge(relevant, on=key)
    n_hits = hits.groupby(S.USER_ID).size().reindex(users, fill_value=0).to_numpy()
    dcg = (1.0 / np.log2(hits["position"] + 1.0)).groupby(hits[S.USER_ID]).sum().reindex(users, fill_value=0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.clip(n_relevant, 1, k) - 1]
    has = n_relevant > 0
    recall = np.where(has, n_hits / np.maximum(n_relevant, 1), 0.0)
    ndcg = np.where(has, dcg.to_numpy() / ideal, 0.0)
    return float(recall.mean()), float(ndcg.mean())


def catalogue_shown(scores: torch.Tensor, k: int, shown: torch.Tensor | None = None) -> torch.Tensor:
    """The items (N,) bool in some user's top ``k`` of ``scores`` (B, N) (items at ``-inf``, never
    recommendable, excluded), or-ed into ``shown``: its mean is the catalogue coverage."""
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    shown = torch.zeros(scores.shape[1], dtype=torch.bool) if shown is None else shown
    shown[top.indices[torch.isfinite(top.values)]] = True
    return shown
