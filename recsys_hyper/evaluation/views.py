"""What the analysis notebook looks at besides the metrics: the heads the hypernetwork emitted for
the evaluated users, and one user's top 10 (explained) as their first events arrive."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import schema as S
from ..data.dataset import Dataset
from ..data.episodes import chronological_split
from .runner import EvalResult
from .vocabulary import InVocabulary


def hypernetwork_views(result: EvalResult, ds: Dataset, k: int = 5) -> dict:
    """For analysis: the heads the hypernetwork emits for the evaluated users from their ``k``
    earliest events (with their features), and one user's top 10 as 1, 3, 5 events arrive, each
    item with its explanation (:meth:`~recsys_hyper.recommender.HyperRecommender.explain`)."""
    rec, h = result.fitted.get("hyper"), result.test_histories
    if rec is None or h is None or len(h) == 0:
        return {}
    items = result.item_ids if result.item_ids is not None else rec.item_map_      # what h's indices mean
    sup, _ = chronological_split(h, k, min_query=1)
    heads = InVocabulary.of(rec, items, ds.items, users=ds.users).adapt(sup)
    frame = pd.DataFrame({S.USER_ID: heads.user_ids, "k": k, "rank_head": list(heads.rank_head)})
    if ds.users is not None:
        frame = frame.merge(ds.users, on=S.USER_ID, how="left")
    rows = []
    user = h.user_ids[:1]
    for n in (1, 3, 5):
        s1, _ = chronological_split(h.select(np.array([0])), n, min_query=1)
        events = pd.DataFrame({S.USER_ID: np.repeat(user, n), S.ITEM_ID: items.ids(s1.items),
                               S.RATING: s1.ratings, S.TIMESTAMP: s1.timestamps})
        recs = rec.recommend(events, k=10, users=ds.users, user_ids=user, item_features=ds.items)
        recs = rec.explain(events, recs, users=ds.users, item_features=ds.items, top_events=2)   # why, by these events
        rows.append(recs.assign(known=n, support=[list(events[S.ITEM_ID])] * len(recs)))
    example = pd.concat(rows, ignore_index=True)
    if ds.items is not None:
        example = example.merge(ds.items, on=S.ITEM_ID, how="left")
    return {"heads.parquet": frame, "example_user.parquet": example}
