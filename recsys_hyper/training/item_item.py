"""The EASE term of the ranking score, fitted after meta-training: EASE's closed form on the
training users (low rank), then its ridge ``lam`` and its weight chosen on validation users by
nDCG@10 (weight 0, the model alone, is always a candidate, and the term is only kept where it beats
the model alone on the validation users by a clear margin, ``item_item_min_gain``)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..config import Config
from ..networks.hyper import HyperRecModel
from ..numerics.item_item import ease_factors, gram_eigen
from ..numerics.padding import Padded
from .loop import TrainingData, batch_user_feats, validate

log = logging.getLogger(__name__)


@torch.no_grad()
def fit_item_item(model: HyperRecModel, data: TrainingData, cfg: Config, val_eps: dict[int, tuple]) -> dict:
    """Fill the model's EASE buffers; returns what was chosen and every validation score."""
    t = cfg.train
    N = data.n_items
    F, sigma = gram_eigen(data.histories.select(data.train_rows), N, rank=model.item_item_rank, seed=t.seed)
    r = F.shape[1]
    eps = {k: v for k, v in val_eps.items() if k >= 1} or val_eps

    def set_term(lam: float, weight: float) -> None:
        model.ii_factors.zero_()
        model.ii_vectors.zero_()
        model.ii_weights.zero_()
        if weight:
            w, vectors = ease_factors(F, sigma, lam)
            model.ii_factors[:N, :r] = F.float()
            model.ii_vectors[:N, :r] = vectors
            model.ii_weights[:r] = w * weight

    def ndcg() -> float:
        v = validate(model, data, cfg, eps)
        return float(np.mean([v[f"ndcg10_k{k}"] for k in eps]))

    scores = {(0.0, 0.0): ndcg()}                               # the model alone
    for lam in t.item_item_lambdas:
        unit = _scale(model, data, eps, lambda weight: set_term(lam, weight))
        for weight in t.item_item_weights:
            if weight:
                set_term(lam, weight * unit)
                scores[(lam, weight * unit)] = ndcg()
    best = max(scores, key=lambda key: (round(scores[key], 6), -key[1]))   # ties: the smaller weight
    if scores[best] < scores[(0.0, 0.0)] * (1 + t.item_item_min_gain):
        best = (0.0, 0.0)       # a gain this small on a few hundred users is noise more often than not
    set_term(*best)
    log.debug("EASE term: lambda %g, weight %.3g chosen on validation users (nDCG@10 %.4f; model alone %.4f)",
             best[0], best[1], scores[best], scores[(0.0, 0.0)])
    return {"lambda": best[0], "weight": best[1], "ndcg10": scores[best], "alone": scores[(0.0, 0.0)],
            "scores": {f"{lam:g},{w:.4g}": s for (lam, w), s in scores.items()}}


def _scale(model: HyperRecModel, data: TrainingData, eps: dict, set_weight) -> float:
    """How EASE's scores compare in spread with the model's (median over validation users of the
    ratio of per-user standard deviations over the catalogue), so that the weights of the grid
    mean the same on every dataset."""
    k = sorted(eps)[len(eps) // 2]
    rows, sup, _ = eps[k]
    N = data.n_items
    e_all = model.items(data.item_index, data.item_feats)
    padded = Padded.from_histories(sup, pad_item=N)

    def scores() -> torch.Tensor:                                          # (B, N) ranking scores
        heads, _ = model.emit(e_all, data.item_index, padded, batch_user_feats(data, rows))
        return heads.ranking(model.item_table(e_all[:N], data.item_index[:N]))

    set_weight(0.0)
    alone = scores()
    set_weight(1.0)
    ease = scores() - alone
    set_weight(0.0)
    ratio = alone.std(1) / ease.std(1).clamp(min=1e-12)
    return float(ratio.median())
