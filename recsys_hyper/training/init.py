"""Where training starts: item biases from the data, and warm starts from an earlier model."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data.episodes import Histories
from ..data.idmap import UNKNOWN, IdMap
from ..networks.hyper import HyperRecModel

log = logging.getLogger(__name__)

#: parameters with one row per item of the vocabulary (carried over item by item)
ITEM_INDEXED = ("items.id_emb.weight", "item_bias", "item_rank_bias", "context.q_id.weight", "context.p_id.weight")


def init_biases(model: HyperRecModel, h: Histories, n_items: int, shrink: float = 10.0,
                fitted: dict | None = None) -> None:
    """Item biases from the data: shrunk mean residuals, or ``fitted`` ones (the bias baseline's
    ``mu`` and ``item_bias``, whose ``user_reg`` then starts the user bias's prior precision), for
    the rating; centred log-popularity for the ranking."""
    r = h.ratings.astype(np.float64)
    mu = float(r.mean()) if r.size else 0.0
    scale = float(r.std()) if r.size and r.std() > 0 else 1.0
    count = np.bincount(h.items, minlength=n_items).astype(np.float64)
    total = np.bincount(h.items, weights=r - mu, minlength=n_items)
    bias = total / (count + shrink)
    if fitted is not None:
        mu, bias = fitted["mu"], fitted["item_bias"]
    logpop = np.log1p(count)
    with torch.no_grad():
        if fitted is not None:
            model.hyper.global_log_precision[-1] = float(np.log(fitted["user_reg"]))
            model.bias_user_reg.fill_(float(fitted["user_reg"]))          # the bias baseline's own fold-in
        model.mu.fill_(mu)
        model.r_scale.fill_(scale)
        model.item_bias[:n_items] = torch.from_numpy(bias.astype(np.float32))
        model.item_rank_bias[:n_items] = torch.from_numpy((logpop - logpop.mean()).astype(np.float32))
        model.item_rank_bias[n_items] = float((logpop - logpop.mean()).min())  # unseen items start unpopular


def warm_start(model: HyperRecModel, item_map: IdMap, source: HyperRecModel, source_items: IdMap,
               same_item_features: bool, same_user_features: bool) -> int:
    """Initialise ``model`` from a fitted model (the champion): item-indexed parameters row by row
    through the item ids (new items keep their fresh initialisation), feature encoders when the
    feature vocabularies are unchanged, every other parameter when its shape matches. Frozen
    parameters (the item biases fitted on this data) and every buffer keep this fit's own values:
    a buffer is what a fit sets from its own data or chooses on its own validation users after
    meta-training (the rating scale, the prior-strength multipliers, the EASE term, the rating's
    blend with its special cases), so a challenger never meta-trains with the champion's choices
    switched on. Returns the number of tensors copied."""
    src = source.state_dict()
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    frozen |= {name for name, _ in model.named_buffers()}
    old_rows = source_items.index(item_map.values, unknown="mark")          # (N,) row in the source
    known = torch.from_numpy(np.flatnonzero(old_rows != UNKNOWN))
    copied = 0
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if name not in src or name in frozen:
                continue
            if (name.startswith("items.features") and not same_item_features) or (
                    name.startswith("encoder.user_features") and not same_user_features):
                continue
            if name in ITEM_INDEXED and param.shape[1:] == src[name].shape[1:]:
                param[known] = src[name][torch.from_numpy(old_rows[known.numpy()])]
                copied += 1
            elif param.shape == src[name].shape:
                param.copy_(src[name])
                copied += 1
    log.debug("warm start: %d tensors from the previous model (%d of %d items known)", copied, len(known),
             len(item_map))
    return copied
