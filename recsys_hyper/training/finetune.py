"""Fine-tuning emitted heads on their support sets: gradient steps on the heads only (never on the
model), the seeds' "fine-tune" adaptation mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..networks.hyper import Heads, HyperRecModel, ItemTable
from ..numerics.padding import Padded


def finetune_heads(model: HyperRecModel, heads: Heads, items: ItemTable, support: Padded, implicit: bool,
                   t: TrainConfig, steps: int, lr: float, pull: float = 0.1) -> Heads:
    """``steps`` Adam steps on the heads' own parameters (``w``, ``v``; the item-item context stays
    as emitted), on each user's support set: the training
    loss (standardised rating MSE + ``rank_weight`` x a softmax over the catalogue, positives = the
    support items rated >= ``positive_threshold``) plus an L2 pull towards the emitted head.

    ``items`` is the catalogue's item table with a padding row last (N + 1 rows); ``support``
    indexes it. Users without a support set keep their emitted head. The model is not changed.
    """
    items = items.detach()
    N = items.phi.shape[0] - 1
    catalogue = items.take(slice(0, N))
    support_items = items.take(support.items)                                # (B, K, .)
    w0, v0 = heads.w.detach(), heads.v.detach()
    w = w0.clone().requires_grad_(True)
    v = v0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w, v], lr=lr)
    has = support.mask.sum(1) > 0
    pos = support.mask if implicit else support.mask * (support.ratings >= t.positive_threshold).float()
    n = support.mask.sum().clamp(min=1)
    with torch.enable_grad():
        for _ in range(steps):
            h = Heads(w, v, heads.ctx, heads.x)
            pred = h.per_event().rating(support_items, pairs=True)             # (B, K)
            mse = (((pred - support.ratings) / model.r_scale) ** 2 * support.mask).sum() / n
            logp = F.log_softmax(h.ranking(catalogue), dim=1)                   # (B, N)
            rank = -(logp.gather(1, support.items.clamp(max=N - 1)) * pos).sum() / pos.sum().clamp(min=1)
            penalty = ((w - w0) ** 2).sum(-1).mean() + ((v - v0) ** 2).sum(-1).mean()
            loss = (0.0 if implicit else mse) + t.rank_weight * rank + pull * penalty
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return Heads(torch.where(has.unsqueeze(1), w, w0), torch.where(has.unsqueeze(1), v, v0), heads.ctx, heads.x)
