"""The meta-training objective of one batch of episodes, and its form as a module for DDP."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data.episodes import Histories
from ..networks.hyper import HyperRecModel
from ..numerics.padding import Padded
from ..numerics.scores import membership
from .data import TrainingData, batch_user_feats


def batch_loss(model: HyperRecModel, data: TrainingData, cfg: Config, rows: np.ndarray, support: Histories,
               query: Histories, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """The meta-training loss of one batch of episodes (``rows``: the users' rows).

    Catalogues of up to ``full_softmax_items`` items: the ranking loss is a softmax over all of
    them. Larger ones: over the batch's own items plus ``negatives`` items drawn by popularity^0.75
    (``generator``, or the global seed), each logit corrected by ``-log`` of its expected count (the
    log-Q correction), and the item tower runs only for the items the step needs."""
    t = cfg.train
    N = data.n_items
    index, feats, correction = data.item_index, data.item_feats, None
    if N > t.full_softmax_items:
        q = data.negative_distribution
        drawn = torch.multinomial(q, t.negatives, replacement=True, generator=generator)
        need = torch.unique(torch.cat([torch.from_numpy(support.items.astype(np.int64)),
                                       torch.from_numpy(query.items.astype(np.int64)), drawn]))
        local = torch.full((N + 1,), len(need), dtype=torch.long)            # anything else: the pad row
        local[need] = torch.arange(len(need))
        support, query = _relabel(support, local), _relabel(query, local)
        rows_needed = torch.cat([need, torch.tensor([N])])
        index, feats = data.item_index[rows_needed], data.item_feats.take(rows_needed)
        correction = -torch.log(q[need] * t.negatives)                       # (M,) log-Q
    M = len(index) - 1                                                       # catalogue rows of this step
    e_all = model.items(index, feats)                                       # (M + 1, d)
    items = model.item_table(e_all, index)                                  # (M + 1) rows, last = padding
    sup = Padded.from_histories(support, pad_item=M)
    heads, deltas = model.emit(e_all, index, sup, batch_user_feats(data, rows))
    # the query events as flat (user, item) pairs: long-tailed query lengths cost their events,
    # not users x the longest query
    owner = torch.from_numpy(query.owners())                                # (E,)
    q_items = torch.from_numpy(query.items.astype(np.int64))                 # (E,)
    q_ratings = torch.from_numpy(query.ratings)                              # (E,)

    # rating loss on query items
    pred = heads.take(owner).rating(items.take(q_items), pairs=True)        # (E,)
    n_q = max(1, len(q_items))
    mse = ((pred - q_ratings) / model.r_scale).pow(2).sum() / n_q
    mae = (pred - q_ratings).abs().sum() / n_q

    # ranking loss: softmax over the catalogue (or the step's sample of it), support items excluded
    logits = heads.ranking(items.take(slice(0, M)))                         # (B, M)
    if correction is not None:
        logits = logits + correction
    logp = F.log_softmax(logits.masked_fill(membership(support, M), float("-inf")), dim=1)
    pos = torch.ones_like(q_ratings) if data.implicit else (q_ratings >= t.positive_threshold).float()
    picked = logp[owner, q_items]                                            # (E,)
    rank = -(picked.masked_fill(pos == 0, 0.0) * pos).sum() / pos.sum().clamp(min=1)

    l2 = deltas.pow(2).sum(-1).mean()
    loss = (0.0 if data.implicit else mse) + t.rank_weight * rank + t.head_l2 * l2
    return loss, {"loss": loss.item(), "mse": mse.item(), "mae": mae.item(), "rank": rank.item()}


def _relabel(h: Histories, local: torch.Tensor) -> Histories:
    """The same events with item indices mapped through ``local``."""
    return Histories(h.user_ids, h.indptr, local[torch.from_numpy(h.items.astype(np.int64))].numpy(), h.ratings,
                     h.timestamps)
