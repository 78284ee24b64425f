"""Batch scoring: the per-chunk scorer every engine runs, the streaming single-machine scorer, Spark."""

from .batch import ScoreReport, score_dataset
from .core import ChunkScorer

__all__ = ["ChunkScorer", "ScoreReport", "score_dataset"]
