"""recsys-hyper: a hypernetwork emits each user's scoring head from their interaction history.

The package's face re-exports what users touch (loaded on first use, so that ``import
recsys_hyper`` and the command line's ``--help`` stay fast):

>>> from recsys_hyper import HyperRecommender, load_dataset              # doctest: +SKIP
>>> rec = HyperRecommender().fit(load_dataset("data/default"))           # doctest: +SKIP
"""

from __future__ import annotations

from .errors import DataValidationError, NotFittedError, RecsysHyperError
from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "recommender": ("HyperRecommender", "Recommender", "UserHeads", "AdaptedUsers"),
    "baselines": ("Popularity", "ItemMean", "BiasBaseline", "MatrixFactorization", "MeLU", "EASE"),
    "config": ("Config", "ModelConfig", "TrainConfig", "load_config"),
    "data": ("Dataset", "Histories", "IdMap", "load_dataset", "validate_frames", "write_dataset"),
}
_NAMES, __getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = ["__version__", "DataValidationError", "NotFittedError", "RecsysHyperError", *_NAMES]


def __dir__() -> list[str]:
    return sorted(__all__)
