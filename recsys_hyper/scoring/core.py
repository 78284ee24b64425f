"""Scoring one chunk of users: histories in, top-K recommendations and exported heads out.

This is the unit every engine runs: the streaming single-machine scorer calls it per chunk,
Spark calls it per pandas batch inside ``mapInPandas``. It is a pure function of the model and
the chunk, so every engine produces the same rows.

Exported heads let an online service score without the networks. For user ``u`` and item ``i``,
with ``phi_i`` the item vector (``item_vectors``: ``phi`` already ends with the constant 1)::

    ranking score(u, i) = rank_bias_i + rank_head_u . phi_i      (what recommendations rank by)
    rating(u, i)        = mu + rating_bias_i + rating_head_u . phi_i   (explicit data; clip to the scale)

``rank_head = v + w`` and ``rating_head = w`` of :class:`~recsys_hyper.model.UserHeads`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..data import schema as S
from ..data.episodes import Histories
from ..model import HyperRecommender
from ..topk import histories_from_frame, top_k_frame

def recs_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(S.USER_ID, user_type), pa.field(S.ITEM_ID, item_type),
                      pa.field("score", pa.float32()), pa.field("rank", pa.int32())])


def heads_schema(user_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(S.USER_ID, user_type), pa.field("support_size", pa.int32()),
                      pa.field("rank_head", pa.list_(pa.float32())), pa.field("rating_head", pa.list_(pa.float32()))])


@dataclass
class ChunkResult:
    recommendations: pd.DataFrame
    heads: pd.DataFrame


class ChunkScorer:
    """Holds what is fixed for a run (model, item vectors, candidate mask) and scores chunks."""

    def __init__(self, model: HyperRecommender, top_k: int, exclude_seen: bool = True, candidates=None):
        from ..topk import allowed_mask

        self.model, self.top_k, self.exclude_seen = model, top_k, exclude_seen
        self.catalogue = model._catalogue()
        self.e_all = model._item_vectors(self.catalogue)
        self.allowed = allowed_mask(candidates, self.catalogue.ids) if candidates is not None else None
        m = model.model_
        with torch.no_grad():
            self.phi = m.phi(self.e_all[: self.catalogue.size])               # (N, D)
            self.phi_t = self.phi.T.contiguous()                               # (D, N) for the GEMM
            self.rank_bias = m.item_rank_bias[: self.catalogue.size].clone()   # (N,)

    def item_vectors(self) -> pd.DataFrame:
        """The catalogue's item vectors and biases, for dot-product scoring outside the networks."""
        m = self.model.model_
        return pd.DataFrame({
            S.ITEM_ID: self.catalogue.ids.values,
            "phi": list(self.phi.numpy().astype(np.float32)),
            "rank_bias": self.rank_bias.numpy().astype(np.float32),
            "rating_bias": m.item_bias[: self.catalogue.size].detach().numpy().astype(np.float32),
        })

    def score(self, histories: pd.DataFrame | None, users: pd.DataFrame | None = None) -> ChunkResult:
        """Recommendations and heads for every user of ``histories`` and of ``users``."""
        return self.score_histories(histories_from_frame(histories, self.catalogue.ids, users), users)

    def score_histories(self, h: Histories, users: pd.DataFrame | None) -> ChunkResult:
        heads = self.model._emit(h, self.catalogue, users, self.e_all)
        rank_head = heads.w + heads.v                                          # (B, D)

        def score_rows(rows: np.ndarray) -> torch.Tensor:                      # (b, N): bias + head @ phi^T
            return torch.addmm(self.rank_bias, torch.from_numpy(np.ascontiguousarray(rank_head[rows])), self.phi_t)

        recs = top_k_frame(score_rows, h, self.catalogue.ids, self.top_k, self.exclude_seen, self.allowed)
        heads_df = pd.DataFrame({
            S.USER_ID: heads.user_ids,
            "support_size": heads.support_sizes.astype(np.int32),
            "rank_head": list(rank_head.astype(np.float32)),
            "rating_head": list(heads.w.astype(np.float32)),
        })
        return ChunkResult(recs, heads_df)
