"""The recommender wrapper: one contract (:class:`Recommender`) and the hypernetwork behind it."""

from .base import AdaptedUsers, Catalogue, FoldIn, Recommender, train_validation_rows, validation_mae
from .hyper import HyperRecommender, UserHeads

__all__ = ["AdaptedUsers", "Catalogue", "FoldIn", "Recommender", "train_validation_rows", "validation_mae", "HyperRecommender",
           "UserHeads"]
