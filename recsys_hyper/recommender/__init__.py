"""The recommender wrapper: one contract (:class:`Recommender`), the hypernetwork behind it, the
indexed view the engines use (:func:`indexed`), the serving checks and the grouped shape."""

from .base import AdaptedUsers, Catalogue, FoldIn, Indexed, Recommender, fitted_tensors, indexed, train_validation_rows
from .checks import check_compatible, check_item_ids, check_item_kind, check_ratings
from .grouped import recommend_grouped
from .hyper import HyperIndexed, HyperRecommender, UserHeads

__all__ = ["AdaptedUsers", "Catalogue", "FoldIn", "Indexed", "Recommender", "fitted_tensors", "indexed",
           "train_validation_rows", "check_compatible", "check_item_ids", "check_item_kind", "check_ratings",
           "recommend_grouped", "HyperIndexed", "HyperRecommender", "UserHeads"]
