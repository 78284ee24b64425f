"""recsys-hyper: a hypernetwork emits each user's scoring head from their interaction history.

The package's face re-exports what users touch (loaded on first use, so that ``import
recsys_hyper`` and the command line's ``--help`` stay fast):

>>> from recsys_hyper import HyperRecommender, load_dataset              # doctest: +SKIP
>>> rec = HyperRecommender().fit(load_dataset("data/default"))           # doctest: +SKIP
"""

from __future__ import annotations

import importlib

from .errors import DataValidationError, NotFittedError, RecsysHyperError

__version__ = "0.1.0"

_EXPORTS = {
    "recommender": ("HyperRecommender", "Recommender", "UserHeads", "AdaptedUsers"),
    "baselines": ("Popularity", "ItemMean", "BiasBaseline", "MatrixFactorization", "MeLU", "EASE"),
    "config": ("Config", "ModelConfig", "TrainConfig", "load_config"),
    "data": ("Dataset", "Histories", "IdMap", "load_dataset", "validate_frames", "write_dataset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", "DataValidationError", "NotFittedError", "RecsysHyperError", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
