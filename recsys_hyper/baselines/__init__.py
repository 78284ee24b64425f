"""Baselines behind the same contract as ``HyperRecommender`` (:class:`~recsys_hyper.recommender.Recommender`)."""

from .ease import EASE
from .melu import MeLU
from .mf import MatrixFactorization
from .simple import BiasBaseline, ItemMean, Popularity

__all__ = ["Popularity", "ItemMean", "BiasBaseline", "MatrixFactorization", "MeLU", "EASE"]
