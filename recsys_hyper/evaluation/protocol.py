"""The cold-start protocol: a seeded user split, chronological episodes, written out with a digest.

Users (every user with interactions) are permuted by ``seed`` and cut into train / validation /
cold-test. Methods fit on the training users' interactions; validation users decide early
stopping and hyper-parameters; test users are never used to choose anything. A cold user's
support set is their ``k`` earliest interactions (ties by item id), the query set the rest; only
users with at least ``max(shots) + min_query`` interactions are evaluated, so every ``k`` is
measured on the same users.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import PROTOCOL_MIN_QUERY, PROTOCOL_SEED, PROTOCOL_SHOTS
from ..data import schema as S
from ..data.dataset import Dataset
from ..errors import RecsysHyperError

TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class Protocol:
    shots: tuple[int, ...] = PROTOCOL_SHOTS
    seed: int = PROTOCOL_SEED
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    min_query: int = PROTOCOL_MIN_QUERY
    relevance_threshold: float = 4.0   # explicit data: query items rated >= this are relevant
    cutoff: int = 10                   # Recall@cutoff / nDCG@cutoff over the catalogue

    def __post_init__(self) -> None:
        if not self.shots or min(self.shots) < 0:
            raise ValueError(f"The 'shots' parameter of Protocol must be k values >= 0. Got {self.shots!r} instead.")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("The 'val_fraction' and 'test_fraction' parameters of Protocol must be in (0, 1) and "
                             f"sum to less than 1. Got {self.val_fraction!r} and {self.test_fraction!r} instead.")
        if self.min_query < 1:
            raise ValueError(f"The 'min_query' parameter of Protocol must be >= 1. Got {self.min_query!r} instead.")


@dataclass
class Split:
    """``table``: one row per user, columns ``user_id, split``; ``digest``: its SHA-256."""

    table: pd.DataFrame
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = split_digest(self.table)

    def users(self, name: str) -> np.ndarray:
        return self.table.loc[self.table["split"] == name, S.USER_ID].to_numpy()


def split_users(ds: Dataset, protocol: Protocol) -> Split:
    """Seeded train / validation / test split of the users with interactions."""
    users = np.sort(ds.interactions[S.USER_ID].unique())
    if len(users) < 3:
        raise RecsysHyperError(f"{ds.source}: {len(users)} users with interactions; the protocol needs at least 3")
    perm = np.random.default_rng(protocol.seed).permutation(len(users))
    n_test = max(1, int(round(protocol.test_fraction * len(users))))
    n_val = max(1, int(round(protocol.val_fraction * len(users))))
    label = np.full(len(users), TRAIN, dtype=object)
    label[perm[:n_test]] = TEST
    label[perm[n_test:n_test + n_val]] = VALIDATION
    return Split(pd.DataFrame({S.USER_ID: users, "split": label}))


def split_digest(table: pd.DataFrame) -> str:
    canon = table.sort_values(S.USER_ID).to_csv(index=False).encode()
    return hashlib.sha256(canon).hexdigest()


def training_dataset(ds: Dataset, split: Split) -> Dataset:
    """The dataset methods may learn from: training and validation users only (users the split
    does not label, e.g. test users left out of a capped evaluation, are not learned from either)."""
    keep = ds.interactions[S.USER_ID].isin(np.concatenate([split.users(TRAIN), split.users(VALIDATION)]))
    return Dataset(ds.interactions[keep].reset_index(drop=True), ds.users, ds.items, implicit=ds.implicit,
                   source=ds.source)
