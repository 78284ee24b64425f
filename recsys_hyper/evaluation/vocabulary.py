"""A fitted recommender measured in another item vocabulary than the one it was trained on.

The cold-start protocol indexes every history by the items of its own training users. A model
fitted elsewhere (the nightly's champion: an earlier night's snapshot, before today's new items)
knows other items. :class:`InVocabulary` lets the protocol measure it as it would serve: events on
items it cannot score (not in its vocabulary, and no features to score them from) are left out of
its supports, as serving leaves them out; pairs on them get no prediction (NaN, left out of the
rating errors); its ranking is laid over the protocol's catalogue, where items it cannot score
rank last. (Items it knows that the protocol's catalogue lacks are left out of its ranking.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.episodes import Histories
from ..data.idmap import UNKNOWN, IdMap
from ..recommender.base import indexed


class InVocabulary:
    """``model`` with histories, pairs and rankings in the item indices of ``item_ids`` (the hooks
    of :class:`~recsys_hyper.recommender.base.Indexed`)."""

    def __init__(self, model, item_ids: IdMap, item_features: pd.DataFrame | None = None,
                 users: pd.DataFrame | None = None):
        self.view = indexed(model, users, item_features)
        self.to_model = self.view.catalogue.ids.index(item_ids.values, unknown="mark")   # (N,) protocol -> model row
        self.known = self.to_model != UNKNOWN
        self.n_items = len(item_ids)
        self.rating_range, self.implicit = self.view.rating_range, self.view.implicit

    @classmethod
    def of(cls, model, item_ids: IdMap, item_features: pd.DataFrame | None = None, users: pd.DataFrame | None = None):
        """The indexed ``model`` itself when it was trained on exactly ``item_ids``, else a view of it."""
        mine = model.item_map_.values
        if len(mine) == len(item_ids) and np.array_equal(mine, item_ids.values):
            return indexed(model, users)
        return cls(model, item_ids, item_features, users)

    def _translate(self, h: Histories) -> Histories:
        kept = h.mask(self.known[h.items])
        return Histories(kept.user_ids, kept.indptr, self.to_model[kept.items].astype(kept.items.dtype), kept.ratings,
                         kept.timestamps)

    def adapt(self, h: Histories, **kwargs):
        return self.view.adapt(self._translate(h), **kwargs)

    def rate(self, adapted, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        idx = items.numpy()
        ok = self.known[idx]
        out = torch.full((len(idx),), float("nan"))
        if ok.any():
            mask = torch.from_numpy(ok)
            out[mask] = self.view.rate(adapted, rows[mask], torch.from_numpy(self.to_model[idx[ok]])).float()
        return out

    def rank(self, adapted, rows: np.ndarray) -> torch.Tensor:
        scores = self.view.rank(adapted, rows)                                            # (B, N_model)
        out = torch.full((scores.shape[0], self.n_items), float("-inf"), dtype=scores.dtype)
        cols = np.flatnonzero(self.known)
        out[:, torch.from_numpy(cols)] = scores[:, torch.from_numpy(self.to_model[cols])]
        return out
