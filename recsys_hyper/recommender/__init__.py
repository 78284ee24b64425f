"""The recommender wrapper: one contract (:class:`Recommender`) and the hypernetwork behind it."""

from .base import (AdaptedUsers, Catalogue, FoldIn, Recommender, train_validation_rows, tune, validation_episodes,
                   validation_mae, validation_ndcg)
from .hyper import HyperRecommender, UserHeads

__all__ = ["AdaptedUsers", "Catalogue", "FoldIn", "Recommender", "train_validation_rows", "tune",
           "validation_episodes", "validation_mae", "validation_ndcg", "HyperRecommender", "UserHeads"]
