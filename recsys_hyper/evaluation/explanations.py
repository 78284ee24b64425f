"""Are the explanations faithful? Remove the event an explanation blames most and see.

For every user and each of their top-``k`` recommendations, the item's ranking score is
recomputed (a full re-emission of the head) twice: without the history event with the largest
attributed contribution (:meth:`HyperRecommender.explain
<recsys_hyper.recommender.hyper.HyperRecommender.explain>`), and without an event drawn at random
from the same history. A faithful explanation makes the first drop larger, on average.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..data.idmap import IdMap
from ..recommender.base import indexed


def faithfulness(model, h: Histories, users: pd.DataFrame | None = None, k: int = 10, seed: int = 0) -> dict:
    """Mean score drops over every (user, recommended item) pair of the users of ``h`` with at
    least 2 events: ``drop_top`` (the most-blamed event removed), ``drop_random`` (a random
    event), ``top_beats_random`` (share of pairs where the first drop is larger), ``pairs``."""
    h = h.select(np.flatnonzero(h.lengths >= 2))
    if len(h) == 0:
        return {"pairs": 0, "users": 0, "drop_top": float("nan"), "drop_random": float("nan"),
                "top_beats_random": float("nan")}
    view = indexed(model, users)
    recs = view.recommend(h, k)
    rows = IdMap(h.user_ids, name="user").index(recs[S.USER_ID].to_numpy())
    items = view.catalogue.ids.index(recs[S.ITEM_ID].to_numpy())
    parts = view.explain(h, rows, items, top_events=1)
    top = np.zeros(len(rows), np.int64)
    for pairs, a, _ in parts["attributions"]:
        valid = torch.arange(a.events.shape[1]).unsqueeze(0) < torch.from_numpy(h.lengths[rows[pairs]]).unsqueeze(1)
        top[pairs] = a.events.masked_fill(~valid, float("-inf")).argmax(1).numpy()     # the most-blamed event
    rng = np.random.default_rng(seed)
    random = rng.integers(0, h.lengths[rows])
    base = recs["score"].to_numpy(np.float64)
    drop_top = base - _scores_without(view, h, rows, items, top)
    drop_random = base - _scores_without(view, h, rows, items, random)
    return {"pairs": int(len(rows)), "users": int(len(h)), "drop_top": float(drop_top.mean()),
            "drop_random": float(drop_random.mean()), "top_beats_random": float((drop_top > drop_random).mean())}


def _scores_without(view, h: Histories, rows: np.ndarray, items: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """The ranking score of each pair (``rows`` into ``h``, catalogue ``items``) with the
    ``drop``-th event of the user's history removed."""
    hp = h.select(rows)                                                      # one history per pair
    reduced = hp.mask(hp.positions_in_user() != np.repeat(drop, hp.lengths))
    adapted = view.adapt(reduced)
    out = np.zeros(len(rows))
    for start in range(0, len(rows), 1024):
        chunk = np.arange(start, min(len(rows), start + 1024))
        scores = view.rank(adapted, chunk)                                  # (b, N)
        out[chunk] = scores[torch.arange(len(chunk)), torch.from_numpy(items[chunk])].numpy()
    return out
