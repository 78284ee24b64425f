"""The hypernetwork recommender: networks, meta-training and the public ``HyperRecommender``."""

from .config import Config, ModelConfig, TrainConfig, load_config
from .recommender import HyperRecommender, UserHeads

__all__ = ["Config", "ModelConfig", "TrainConfig", "load_config", "HyperRecommender", "UserHeads"]
