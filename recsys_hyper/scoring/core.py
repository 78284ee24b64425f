"""Scoring one chunk of users: histories in, top-K recommendations and exported heads out.

This is the unit every engine runs: the streaming single-machine scorer calls it per chunk,
Spark calls it per pandas batch inside ``mapInPandas``. It goes through the recommender's own
path (:meth:`~recsys_hyper.recommender.Indexed.recommend`: the one scoring
function, seen-item exclusion and top K), so every engine produces the rows ``recommend`` does.

Exported heads let an online service score without the networks. For user ``u`` and item ``i``,
with ``phi_i`` the item vector (``item_vectors``: ``phi`` is ``[e_i, 1, p_i, extra_i]``, the item
vector, the constant 1 for the user bias, the item-item target vector and the rating's MF columns)::

    ranking score(u, i) = rank_bias_i + rank_head_u . phi_i      (what recommendations rank by)
    rating(u, i)        = mu + rating_bias_i + rating_head_u . phi_i   (explicit data; clip to the scale)

``rank_head`` and ``rating_head`` (``w`` padded with zeros) are those of
:class:`~recsys_hyper.recommender.UserHeads`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..data.frames import histories_from_frame
from ..data.idmap import IdMap
from ..numerics.scores import allowed_mask
from ..recommender import HyperRecommender, indexed


EXPLANATION_COLUMNS = ("score_prior", "score_features", "score_history", "because")


def recs_schema(user_type: pa.DataType, item_type: pa.DataType, explain: bool = False,
                score_std: bool = False) -> pa.Schema:
    """The recommendations' schema; ``score_std`` adds ``score_std`` (see
    :meth:`~recsys_hyper.recommender.HyperRecommender.score_std`), ``explain`` the explanation
    columns of :meth:`~recsys_hyper.recommender.HyperRecommender.explain`."""
    fields = [pa.field(S.USER_ID, user_type), pa.field(S.ITEM_ID, item_type),
              pa.field("score", pa.float32()), pa.field("rank", pa.int32())]
    if score_std:
        fields.append(pa.field("score_std", pa.float32()))
    if explain:
        fields += [pa.field(name, pa.float32()) for name in EXPLANATION_COLUMNS[:3]]
        fields.append(pa.field("because", pa.list_(pa.struct([pa.field(S.ITEM_ID, item_type),
                                                             pa.field(S.RATING, pa.float32()),
                                                             pa.field("contribution", pa.float32())]))))
    return pa.schema(fields)


def heads_schema(user_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(S.USER_ID, user_type), pa.field("support_size", pa.int32()),
                      pa.field("rank_head", pa.list_(pa.float32())), pa.field("rating_head", pa.list_(pa.float32()))])


# Columns whose values repeat (ids, ranks, history sizes) are dictionary-encoded; the float
# columns (scores, heads) are not: their values are all distinct, so a dictionary only costs the
# writer time (half of it) and the file space before Parquet falls back to plain encoding.
DICTIONARY_COLUMNS = (S.USER_ID, S.ITEM_ID, "rank", "support_size")


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` a Parquet writer should dictionary-encode (``use_dictionary``)."""
    return [name for name in schema.names if name in DICTIONARY_COLUMNS]


def item_arrow_type(model: HyperRecommender) -> pa.DataType:
    """The Arrow type of the model's item ids in the outputs."""
    return pa.int64() if model.item_map_.kind == "int64" else pa.string()


def heads_columns(heads: pd.DataFrame, user_type: pa.DataType) -> list[pa.Array]:
    """The columns of :func:`heads_schema` from a chunk's heads, every list column built from one
    (users, width) array (no per-user Python objects)."""
    columns = [pa.array(heads[S.USER_ID].to_numpy(), user_type),
               pa.array(heads["support_size"].to_numpy(np.int32), pa.int32())]
    for name in ("rank_head", "rating_head"):
        values = np.stack(heads[name].to_list()).astype(np.float32) if len(heads) else np.zeros((0, 0), np.float32)
        offsets = np.arange(len(heads) + 1, dtype=np.int32) * values.shape[1]
        columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel())))
    return columns


@dataclass
class ChunkResult:
    recommendations: pd.DataFrame
    heads: pd.DataFrame


class ChunkScorer:
    """Holds what is fixed for a run (model, catalogue, candidate mask) and scores chunks."""

    def __init__(self, model: HyperRecommender, top_k: int, exclude_seen: bool = True, candidates=None,
                 explain: int | None = None, score_std: bool = False):
        self.model, self.top_k, self.exclude_seen, self.explain = model, top_k, exclude_seen, explain
        self.score_std = score_std
        if score_std:
            model._noise_variance()                    # an implicit or older model is refused before any work
        self.view = indexed(model)
        self.item_ids, self.items = self.view.catalogue.ids, self.view.item_table()
        self.allowed = allowed_mask(candidates, self.item_ids) if candidates is not None else None

    def item_vectors(self) -> pd.DataFrame:
        """The catalogue's item vectors and biases, for dot-product scoring outside the networks."""
        return pd.DataFrame({
            S.ITEM_ID: self.item_ids.values,
            "phi": list(torch.cat([self.items.vectors, self.items.extra], 1).numpy().astype(np.float32)),
            "rank_bias": self.items.rank_bias.numpy().astype(np.float32),
            "rating_bias": self.items.rating_bias.numpy().astype(np.float32),
        })

    def score(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None) -> ChunkResult:
        """Recommendations and heads for every user of ``histories`` and of ``users``."""
        return self.score_histories(histories_from_frame(histories, self.item_ids, users), users)

    def score_histories(self, h: Histories, users: pd.DataFrame | None) -> ChunkResult:
        view = indexed(self.model, users)
        heads = view.adapt(h)
        recs = view.recommend(h, self.top_k, heads=heads, exclude_seen=self.exclude_seen,
                                              allowed=self.allowed)
        if self.score_std:
            rows = IdMap(h.user_ids, name="user").index(recs[S.USER_ID].to_numpy())
            recs["score_std"] = view.score_std(h, rows, self.item_ids.index(recs[S.ITEM_ID].to_numpy()))
        if self.explain:
            # the same heads' scores, split over each user's events (see HyperRecommender.explain)
            rows = IdMap(h.user_ids, name="user").index(recs[S.USER_ID].to_numpy())
            parts = view.explain(h, rows, self.item_ids.index(recs[S.ITEM_ID].to_numpy()), top_events=self.explain)
            recs = recs.assign(**{name: parts[name] for name in EXPLANATION_COLUMNS})
        heads_df = pd.DataFrame({
            S.USER_ID: heads.user_ids,
            "support_size": heads.support_sizes.astype(np.int32),
            "rank_head": list(heads.rank_head.astype(np.float32)),
            "rating_head": list(heads.rating_head.astype(np.float32)),
        })
        return ChunkResult(recs, heads_df)
