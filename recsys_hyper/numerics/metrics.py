"""Ranking metrics on dense score matrices (torch), one value per user: used by training's
validation and by the cold-start evaluation."""

from __future__ import annotations

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
