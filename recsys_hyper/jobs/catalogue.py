"""Items that are never recommended: retired ones (``items.parquet``'s boolean ``retired``
column, or, in the nightly, items gone from the landing's current catalogue) and ad-hoc
exclusions (``--exclude-items FILE``). They stay in the model (history events on them still
count); they are only left out of every top K."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import schema as S
from ..errors import DataValidationError, Problem, RecsysHyperError

#: the items table's column that marks retired items (boolean; null reads as "not retired")
RETIRED = "retired"


def read_item_list(path: str | os.PathLike, kind: str) -> np.ndarray:
    """The item ids of ``path`` (see :func:`read_id_list`), read as the model's id ``kind``."""
    return read_id_list(path, S.ITEM_ID, kind, "--exclude-items")


def read_id_list(path: str | os.PathLike, column: str, kind: str, option: str) -> np.ndarray:
    """The distinct ids of ``path``: a Parquet file with the ``column`` column, or a text file with
    one id per line (blank lines and ``#`` comments skipped), read as ids of ``kind`` ("int64" or
    "string"); ``option`` names the command-line option in messages."""
    from ..data.validation import Collector, coerce_id, read_parquet_checked

    path = Path(path)
    what = column.split("_")[0]
    if not path.is_file():
        raise RecsysHyperError(f"{option} {path}: no such file; pass a Parquet file with a {column} column, "
                               f"or a text file with one {what} id per line")
    with open(path, "rb") as fh:
        parquet = fh.read(4) == b"PAR1"
    if parquet:
        c = Collector()
        table = read_parquet_checked(path, c, required=True, columns=(column,))
        ids = None
        if table is not None:
            if column not in table.column_names:
                c.add(path.name, column, f"is missing (columns present: {', '.join(table.column_names)})",
                      f"{option} needs a {column} column with the ids")
            else:
                ids = coerce_id(table.column(column), path.name, column, c)
        c.raise_if_any()
        values = ids.to_numpy(zero_copy_only=False)
    else:
        try:
            lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        except UnicodeDecodeError:
            raise RecsysHyperError(f"{option} {path}: neither Parquet nor text; pass a Parquet file with a "
                                   f"{column} column, or a text file with one {what} id per line") from None
        values = np.array([v for v in lines if v], dtype=object)
        if kind == "int64":
            parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            bad = parsed.isna().to_numpy() | (parsed.to_numpy(dtype=float, na_value=np.nan) % 1 != 0)
            if bad.any():
                rows = np.flatnonzero(bad)[:5]
                raise DataValidationError([Problem(path.name, column, f"has {int(bad.sum())} lines that are not "
                                                   f"integer {what} ids, as the data's are", "one integer id per line",
                                                   int(bad.sum()), tuple(int(r) for r in rows),
                                                   tuple(values[rows]))])
            values = np.array([int(v) for v in values], dtype=np.int64)
        else:
            values = values.astype(str)
    got = "int64" if np.issubdtype(values.dtype, np.integer) else "string"
    if len(values) and got != kind:
        raise DataValidationError([Problem(path.name, column, f"has {got} ids but the data's {what} ids are {kind}",
                                           f"store the {what} ids with the type of the data")])
    return pd.unique(values)


def retired_items(items: pd.DataFrame | None, file: str = S.ITEMS_FILE) -> np.ndarray:
    """The ids the items table marks retired (its boolean ``retired`` column)."""
    if items is None or RETIRED not in items.columns:
        return np.array([])
    flag = items[RETIRED]
    if not pd.api.types.is_bool_dtype(flag) and not (flag.dropna().map(type) == bool).all():
        raise DataValidationError([Problem(file, RETIRED, f"marks retired items but holds {flag.dtype} values",
                                           "store true for a retired item, false (or null) otherwise; or rename the "
                                           "column if it is a feature")])
    return items.loc[flag.fillna(False).astype(bool).to_numpy(), S.ITEM_ID].to_numpy()


def union(*ids: np.ndarray) -> np.ndarray:
    """The distinct ids of ``ids`` (empty parts, whatever their dtype, add nothing)."""
    parts = [np.asarray(p) for p in ids if p is not None and len(p)]
    return pd.unique(np.concatenate(parts)) if parts else np.array([])


def excluded_items(items: pd.DataFrame | None, exclude_file: str | os.PathLike | None, kind: str) -> np.ndarray:
    """Every item never to recommend: those ``items`` marks retired and those of ``exclude_file``."""
    return union(retired_items(items), read_item_list(exclude_file, kind) if exclude_file is not None else None)


def allowed_items(catalogue: np.ndarray, candidates, excluded: np.ndarray) -> np.ndarray | None:
    """The items to score: ``candidates`` (default ``catalogue``) less ``excluded``; ``None`` when
    nothing is excluded (the whole catalogue, or the candidates, as they are). Refused when nothing
    is left."""
    if not len(excluded):
        return candidates
    pool = catalogue if candidates is None else np.asarray(candidates)
    left = pool[~pd.Index(pool).isin(excluded)]
    if not len(left):
        raise RecsysHyperError(f"every one of the {len(pool):,} items to score is retired or excluded "
                               f"({len(excluded):,} excluded): nothing to recommend; check --exclude-items and the "
                               f"'{RETIRED}' column of {S.ITEMS_FILE}")
    return left
