"""The networks: ``nn.Module``s only (no I/O, no validation, no tracking)."""

from .features import FeatureEncoder
from .hyper import Heads, HistoryEncoder, HyperNetwork, HyperRecModel, ItemTable, ItemTower
from .melu import MeLUNet

__all__ = ["FeatureEncoder", "Heads", "HistoryEncoder", "HyperNetwork", "HyperRecModel", "ItemTable", "ItemTower", "MeLUNet"]
