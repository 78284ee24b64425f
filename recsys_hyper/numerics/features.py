"""Side features -> tensors: a JSON-serialisable spec fitted on the training data.

Column kinds, inferred from the data:

* ``categorical``: strings and booleans; vocabulary of values seen at least ``min_count`` times,
  index 0 for unknown / missing. Near-unique string columns (e.g. titles: more distinct values
  than ``max_cardinality_ratio`` of the rows) are skipped: a model only memorises them.
* ``numeric``: numbers, standardised; a missing value becomes 0 plus a missing flag.
* ``multi``: ``list<string>`` (e.g. genres), a bag of vocabulary indices, mean-pooled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..errors import RecsysHyperError

log = logging.getLogger(__name__)


#: standardised numeric features are clipped to this magnitude: a value far outside the training
#: range (say 1e300 where training saw ages) must not overflow float32 into inf / NaN heads
MAX_STANDARDISED = 1e4
#: batches of at most this many rows with plain string values are encoded value by value (faster
#: than the whole-column path's fixed cost below a few hundred rows; the same codes)
SMALL_BATCH = 512


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the finite values of ``x`` (0 and 1 when there are none, or no
    spread); when huge values overflow the sums, computed on values scaled by their largest
    magnitude."""
    x = x[np.isfinite(x)]
    if not len(x):
        return 0.0, 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(x)), float(np.std(x))
        if not (math.isfinite(mean) and math.isfinite(std)):
            scale = float(np.max(np.abs(x)))
            y = x / scale
            mean, std = float(np.mean(y)) * scale, float(np.std(y)) * scale
    if not (math.isfinite(mean) and math.isfinite(std)) or std == 0.0:
        return (mean if math.isfinite(mean) else 0.0), 1.0
    return mean, std


def as_text(values: pd.Series, column: str, table: str) -> pd.Series:
    """A categorical column's values as the text fitting and encoding both read: ``astype(str)``,
    which decodes bytes as UTF-8. Bytes that are not UTF-8 text are refused with a clear error
    (naming the table, the column, how many values and examples) instead of a decoding traceback."""
    try:
        return values.astype(str)
    except UnicodeDecodeError:
        def undecodable(v) -> bool:
            if not isinstance(v, (bytes, bytearray)):
                return False
            try:
                bytes(v).decode("utf-8")
                return False
            except UnicodeDecodeError:
                return True

        bad = values[values.map(undecodable).astype(bool)]
        raise RecsysHyperError(
            f"{table}: column '{column}': {len(bad):,} value(s) are bytes that are not UTF-8 text (e.g. "
            f"{list(pd.unique(bad)[:3])}); side features must be text, numbers, booleans or lists of text: decode "
            f"the column, or drop it") from None


def _table(id_column: str) -> str:
    """The side table a spec's id column belongs to, as the data contract names it."""
    return {S.USER_ID: S.USERS_FILE, S.ITEM_ID: S.ITEMS_FILE}.get(id_column, f"the {id_column} table")


@dataclass
class ColumnSpec:
    name: str
    kind: str                                   # "categorical" | "numeric" | "multi"
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0


@dataclass
class FeatureSpec:
    """Which columns are encoded and how; fitted once, saved with the model as JSON."""

    id_column: str
    columns: list[ColumnSpec] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.columns

    @classmethod
    def fit(cls, df: pd.DataFrame | None, id_column: str, min_count: int = 2,
            max_cardinality_ratio: float = 0.5) -> "FeatureSpec":
        spec = cls(id_column)
        if df is None:
            return spec
        for name in df.columns:
            if name == id_column:
                continue
            s = df[name]
            if s.map(lambda v: isinstance(v, (list, np.ndarray))).any():
                counts = pd.Series([str(x) for v in s.dropna() for x in v]).value_counts()
                vocab = sorted(counts[counts >= min_count].index)
                if vocab:
                    spec.columns.append(ColumnSpec(name, "multi", vocab=vocab))
            elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                mean, std = _moments(s.to_numpy(dtype=np.float64, na_value=np.nan))
                spec.columns.append(ColumnSpec(name, "numeric", mean=mean, std=std))
            else:
                values = as_text(s.dropna(), name, _table(id_column))
                if values.nunique() > max(50, max_cardinality_ratio * len(s)):
                    log.debug("feature %r skipped: %d distinct values in %d rows is near-unique", name,
                             values.nunique(), len(s))
                    continue
                counts = values.value_counts()
                vocab = sorted(counts[counts >= min_count].index)
                if vocab:
                    spec.columns.append(ColumnSpec(name, "categorical", vocab=vocab))
        return spec

    def transform(self, df: pd.DataFrame | None, ids: np.ndarray) -> "FeatureTensors":
        """Tensors for the rows of ``ids`` (ids missing from ``df`` get unknown / missing values)."""
        n = len(ids)
        # ids are unique in a validated side table: row positions are an exact left join
        pos = (pd.Index(df[self.id_column]).get_indexer(np.asarray(ids)) if df is not None and not self.empty
               else np.full(n, -1))
        found = pos >= 0
        cat, num, multi = [], [], []
        for col in self.columns:
            present = df is not None and col.name in df.columns
            if col.kind == "numeric":
                x = np.full(n, np.nan)
                if present:
                    source = pd.to_numeric(df[col.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                    x[found] = source[pos[found]]
                missing = ~np.isfinite(x)                      # non-finite values read as missing
                with np.errstate(over="ignore", invalid="ignore"):
                    z = np.clip((x - col.mean) / col.std, -MAX_STANDARDISED, MAX_STANDARDISED)
                num.append(np.where(missing, 0.0, z))
                num.append(missing.astype(np.float64))
                continue
            values = np.full(n, None, dtype=object)
            if present:
                values[found] = df[col.name].to_numpy(dtype=object)[pos[found]]
            if col.kind == "categorical":                      # unknown / missing (None, NaN, pd.NA) -> 0
                cat.append(self._categorical_codes(col, values))
            else:
                lookup = self._vocab_lookup(col)
                bags = [[lookup.get(str(x), 0) for x in v] if isinstance(v, (list, np.ndarray)) else [] for v in values]
                width = max(1, max((len(b) for b in bags), default=1))
                padded = np.zeros((n, width), dtype=np.int64)
                for r, b in enumerate(bags):
                    padded[r, : len(b)] = b
                multi.append(padded)
        return FeatureTensors(
            cat=torch.from_numpy(np.stack(cat, axis=1)) if cat else torch.zeros(n, 0, dtype=torch.long),
            num=torch.from_numpy(np.stack(num, axis=1).astype(np.float32)) if num else torch.zeros(n, 0),
            multi=[torch.from_numpy(m) for m in multi],
        )

    def _categorical_codes(self, col: ColumnSpec, values: np.ndarray) -> np.ndarray:
        """A categorical column's codes (n,) for its values (objects; missing -> 0, unknown -> 0). A
        small batch of plain strings (a serving call) is looked up value by value: the same codes
        as the whole-column path, which it skips the fixed cost of (``as_text`` leaves a string
        as it is); any other batch goes through ``as_text`` and a hashed index."""
        missing = pd.isna(values)
        if len(values) <= SMALL_BATCH:
            present = values[~missing]
            if all(type(v) is str for v in present):
                lookup = self._vocab_lookup(col)
                out = np.zeros(len(values), np.int64)
                out[~missing] = [lookup.get(v, 0) for v in present]
                return out
        vocab, codes = self._vocab_index(col)
        at = vocab.get_indexer(as_text(pd.Series(values, dtype=object), col.name, _table(self.id_column)).to_numpy())
        return np.where(missing, 0, codes[at])                                  # at = -1: unknown -> 0

    def _vocab_lookup(self, col: ColumnSpec) -> dict:
        """A column's vocabulary as value -> index (from 1), built once (a fitted spec never changes)."""
        cache = self.__dict__.setdefault("_vocab_lookups", {})
        if col.name not in cache:
            cache[col.name] = {v: i + 1 for i, v in enumerate(col.vocab)}
        return cache[col.name]

    def _vocab_index(self, col: ColumnSpec) -> tuple[pd.Index, np.ndarray]:
        """:meth:`_vocab_lookup` as a hashed index and its codes, for a whole column at a time; the
        codes end with a 0, which position -1 (``get_indexer``'s "not found") reads."""
        cache = self.__dict__.setdefault("_vocab_indexes", {})
        if col.name not in cache:
            lookup = self._vocab_lookup(col)
            cache[col.name] = (pd.Index(list(lookup), dtype=object), np.append(np.fromiter(lookup.values(), np.int64), 0))
        return cache[col.name]

    def to_dict(self) -> dict:
        return {"id_column": self.id_column, "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(d["id_column"], [ColumnSpec(**c) for c in d["columns"]])


@dataclass
class FeatureTensors:
    """Encoded features of n rows: ``cat`` (n, C) indices, ``num`` (n, F), ``multi`` [(n, L_j)]."""

    cat: torch.Tensor
    num: torch.Tensor
    multi: list[torch.Tensor]

    def __len__(self) -> int:
        return self.cat.shape[0]

    def take(self, idx: torch.Tensor) -> "FeatureTensors":
        return FeatureTensors(self.cat[idx], self.num[idx], [m[idx] for m in self.multi])


def with_pad_row(f: FeatureTensors) -> FeatureTensors:
    """Append an all-missing row (the padding / no-item row)."""
    return FeatureTensors(
        cat=torch.cat([f.cat, torch.zeros(1, f.cat.shape[1], dtype=f.cat.dtype)]),
        num=torch.cat([f.num, torch.zeros(1, f.num.shape[1], dtype=f.num.dtype)]),
        multi=[torch.cat([m, torch.zeros(1, m.shape[1], dtype=m.dtype)]) for m in f.multi],
    )


def dense_width(spec: FeatureSpec) -> int:
    """F, the width of :func:`dense_features` for ``spec``."""
    return 1 + sum(len(c.vocab) if c.kind != "numeric" else 2 for c in spec.columns)


def dense_features(spec: FeatureSpec, f: FeatureTensors | None, n: int | None = None) -> torch.Tensor:
    """One-hot categoricals, normalised multi-hot lists, numeric columns (value and missing flag)
    and an intercept: (n, F). ``f`` None: ``n`` rows with every feature unknown (the intercept only)."""
    if f is None:
        return torch.cat([torch.ones(n, 1), torch.zeros(n, dense_width(spec) - 1)], 1)
    parts = [torch.ones(len(f), 1)]
    cat_cols = [c for c in spec.columns if c.kind == "categorical"]
    for j, col in enumerate(cat_cols):
        parts.append(torch.nn.functional.one_hot(f.cat[:, j], len(col.vocab) + 1)[:, 1:].float())
    multi_cols = [c for c in spec.columns if c.kind == "multi"]
    for col, bag in zip(multi_cols, f.multi):
        hot = torch.zeros(len(f), len(col.vocab) + 1).scatter_(1, bag, 1.0)[:, 1:]
        parts.append(hot / hot.sum(1, keepdim=True).clamp(min=1))
    if f.num.shape[1]:
        parts.append(f.num)
    return torch.cat(parts, 1)
