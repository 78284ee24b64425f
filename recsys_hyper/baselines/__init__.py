"""Baselines behind the same contract as ``HyperRecommender`` (see :mod:`.base`)."""

from .base import BaselineRecommender, FoldIn
from .melu import MeLU
from .mf import MatrixFactorization
from .simple import BiasBaseline, ItemMean, Popularity

__all__ = ["BaselineRecommender", "FoldIn", "Popularity", "ItemMean", "BiasBaseline", "MatrixFactorization", "MeLU"]
