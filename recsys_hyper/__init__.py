"""recsys-hyper: a hypernetwork emits each user's scoring head from their interaction history."""

from .errors import DataValidationError, NotFittedError, RecsysHyperError

__version__ = "0.1.0"

__all__ = ["DataValidationError", "NotFittedError", "RecsysHyperError", "__version__"]
