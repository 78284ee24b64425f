"""External ids <-> contiguous indices, with explicit handling of unknown ids.

An :class:`IdMap` is built from the ids a model was trained on and saved beside it. Looking up
ids it has never seen is not an accident waiting to happen: the caller chooses what happens
(``unknown="raise"`` names them; ``unknown="mark"`` maps them to :data:`UNKNOWN` = -1).
"""

from __future__ import annotations

import os
from typing import Iterable, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_file
from ..errors import MAX_EXAMPLES, RecsysHyperError

UNKNOWN = -1


class UnknownIdError(RecsysHyperError, KeyError):
    """Ids were looked up that the map does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IdMap:
    """A bijection between external ids (int64 or string) and indices ``0..n-1``.

    Indices follow the sorted order of the ids, so the same set of ids always gives the same
    map, whatever order the rows came in.

    >>> m = IdMap.from_values(["b", "a", "b"])
    >>> m.index(["a", "b", "zz"], unknown="mark").tolist()
    [0, 1, -1]
    >>> m.ids([1, 0]).tolist()
    ['b', 'a']
    """

    def __init__(self, ids: Iterable, name: str = "id"):
        index = pd.Index(ids)
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:MAX_EXAMPLES].tolist()
            raise ValueError(f"IdMap({name}): ids must be unique; duplicated: {dup}")
        if len(index) and not (pd.api.types.is_integer_dtype(index) or pd.api.types.is_object_dtype(index)
                               or pd.api.types.is_string_dtype(index)):
            raise TypeError(f"IdMap({name}): ids must be int64 or string, got {index.dtype}")
        self.name = name
        self._index = index.astype("int64") if pd.api.types.is_integer_dtype(index) else index.astype(object)

    @classmethod
    def from_values(cls, values: Iterable, name: str = "id") -> "IdMap":
        """The map of the distinct values, in sorted order."""
        uniq = pd.unique(pd.Series(list(values) if not hasattr(values, "__len__") else values))
        return cls(np.sort(uniq.astype("int64" if pd.api.types.is_integer_dtype(uniq) else object)), name=name)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, external_id) -> bool:
        return external_id in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index) and self.kind == other.kind

    def __repr__(self) -> str:
        return f"IdMap({self.name}, n={len(self)}, kind={self.kind})"

    @property
    def kind(self) -> str:
        """``"int64"`` or ``"string"``."""
        return "int64" if pd.api.types.is_integer_dtype(self._index) else "string"

    @property
    def values(self) -> np.ndarray:
        """The external ids, index ``i`` at position ``i``."""
        return self._index.to_numpy()

    def index(self, ids, unknown: Literal["raise", "mark"] = "raise") -> np.ndarray:
        """Indices (int64) of ``ids``. Unknown ids raise :class:`UnknownIdError` or map to -1."""
        ids = self._compatible(ids)
        idx = self._index.get_indexer(ids).astype(np.int64)
        if unknown == "raise":
            missing = idx == UNKNOWN
            if missing.any():
                ex = pd.unique(np.asarray(ids, dtype=object)[missing])[:MAX_EXAMPLES].tolist()
                raise UnknownIdError(
                    f"{int(missing.sum())} {self.name}s are unknown to this model (e.g. {ex}); "
                    f"they were not in its training data: drop them, or score them from features")
        elif unknown != "mark":
            raise ValueError(f"unknown must be 'raise' or 'mark', got {unknown!r}")
        return idx

    def ids(self, indices) -> np.ndarray:
        """External ids at ``indices`` (which must all be valid)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.name} indices out of range 0..{len(self) - 1}")
        return self.values[indices]

    def _compatible(self, ids) -> pd.Index:
        """Look-ups across kinds (int ids vs string ids) never match; make that explicit."""
        ids = pd.Index(np.asarray(ids) if not isinstance(ids, pd.Index) else ids)
        if len(ids) and len(self) and (pd.api.types.is_integer_dtype(ids) != (self.kind == "int64")):
            got = "int64" if pd.api.types.is_integer_dtype(ids) else str(ids.dtype)
            raise TypeError(f"{self.name}s are {self.kind} in this map but {got} were given; "
                            f"store ids with the same type as the training data")
        return ids

    # -- persistence (Parquet, never pickle)

    def to_arrow(self) -> pa.Table:
        t = pa.int64() if self.kind == "int64" else pa.string()
        return pa.table({self.name: pa.array(self.values.tolist() if t == pa.string() else self.values, type=t)})

    def save(self, path: str | os.PathLike) -> None:
        with atomic_file(path) as tmp:
            pq.write_table(self.to_arrow(), tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IdMap":
        table = pq.read_table(path)
        name = table.column_names[0]
        return cls(table.column(0).to_numpy(zero_copy_only=False), name=name)
