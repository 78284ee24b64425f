"""Shared numerical pieces, used by the networks, training, the recommenders and the baselines:
the fold-in, padding, feature specs, the one scoring path, every metric, the measuring of
episodes and the grid search."""

from .features import ColumnSpec, FeatureSpec, FeatureTensors, dense_features, with_pad_row
from .fold_in import fold_in
from .metrics import ndcg_at_k, ndcg_graded, per_user_errors, ranked_list_metrics, recall_at_k
from .padding import Padded, chunks_by_events
from .scores import (allowed_mask, exclude_seen, finish_predictions, linear_scores, membership, top_k_frame)

__all__ = ["ColumnSpec", "FeatureSpec", "FeatureTensors", "dense_features", "with_pad_row", "fold_in",
           "ndcg_at_k", "ndcg_graded", "per_user_errors", "ranked_list_metrics", "recall_at_k", "Padded", "chunks_by_events", "allowed_mask", "exclude_seen",
           "finish_predictions", "linear_scores", "membership", "top_k_frame"]
