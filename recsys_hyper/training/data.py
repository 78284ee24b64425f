"""What meta-training works on: the users' histories and features, and the catalogue, as tensors."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..data.episodes import Histories
from ..numerics.features import FeatureTensors


@dataclass
class TrainingData:
    """Everything the loop needs, as tensors. Catalogue row ``n_items`` is the padding row."""

    histories: Histories              # every user with interactions, rows = user rows
    user_feats: FeatureTensors | None  # rows aligned with ``histories``
    item_index: torch.Tensor          # (N + 1,) model vocabulary index of each catalogue row
    item_feats: FeatureTensors        # (N + 1) rows
    train_rows: np.ndarray
    val_rows: np.ndarray
    implicit: bool
    rating_range: tuple | None = None  # the training ratings' (min, max): validation clips predictions to it
    # the rating's closed-form special cases blended as chosen by cross-fitting, fitted without the
    # validation users (numerics.crossfit.FixedBlend): what the network's share is weighed against
    closed_form: object | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_index) - 1

    @functools.cached_property
    def negative_distribution(self) -> torch.Tensor:
        """(N,) sampling probabilities of the sampled softmax's negatives: training counts^0.75,
        smoothed so that every item can be drawn (computed once)."""
        counts = np.bincount(self.histories.select(self.train_rows).items, minlength=self.n_items)
        q = (counts + 1.0) ** 0.75
        return torch.from_numpy(q / q.sum()).float()


def batch_user_feats(data: TrainingData, rows: np.ndarray) -> FeatureTensors | None:
    """The encoded features of users ``rows`` (``None`` when the data has no user features)."""
    return None if data.user_feats is None else data.user_feats.take(torch.from_numpy(rows))
