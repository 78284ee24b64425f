"""The canonical dataset directory: file names, column names and declared Arrow schemas.

A dataset directory holds::

    interactions.parquet   user_id, item_id, rating, timestamp      (required)
    users.parquet          user_id + side features                  (optional)
    items.parquet          item_id + side features                  (optional)

* ``user_id`` / ``item_id``: ``int64`` or ``string`` (each independently, but the same type in
  every file that holds it).
* ``rating``: ``float32``; absent in the file means implicit feedback, every event counts 1.0.
* ``timestamp``: ``int64`` unix seconds (Arrow timestamp / date columns are converted).
* Side features: strings (categorical), numbers, booleans, or ``list<string>`` (e.g. genres).
"""

from __future__ import annotations

import pyarrow as pa

INTERACTIONS_FILE = "interactions.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

RATING_TYPE = pa.float32()
TIMESTAMP_TYPE = pa.int64()
ID_TYPES = (pa.int64(), pa.string())

#: Rating written for implicit events (and assumed when the ``rating`` column is absent).
IMPLICIT_RATING = 1.0


def interactions_schema(user_id_type: pa.DataType = pa.int64(), item_id_type: pa.DataType = pa.int64()) -> pa.Schema:
    """The declared schema of ``interactions.parquet``."""
    _check_id_type(user_id_type)
    _check_id_type(item_id_type)
    return pa.schema(
        [
            pa.field(USER_ID, user_id_type, nullable=False),
            pa.field(ITEM_ID, item_id_type, nullable=False),
            pa.field(RATING, RATING_TYPE, nullable=False),
            pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
        ]
    )


def side_schema(id_column: str, id_type: pa.DataType, features: pa.Schema | list[pa.Field]) -> pa.Schema:
    """The declared schema of ``users.parquet`` / ``items.parquet``: the id, then the features."""
    _check_id_type(id_type)
    fields = [pa.field(id_column, id_type, nullable=False)]
    fields += [f.with_type(normalise_feature_type(f.type)) for f in features if f.name != id_column]
    for f in fields[1:]:
        if not is_feature_type(f.type):
            raise TypeError(f"feature column {f.name!r} has unsupported type {f.type}")
    return pa.schema(fields)


def normalise_feature_type(t: pa.DataType) -> pa.DataType:
    """Large / dictionary variants to the declared types (pandas may produce either)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(normalise_feature_type(t.value_type))
    return t


def is_feature_type(t: pa.DataType) -> bool:
    """Whether ``t`` is a supported side-feature type (after normalisation)."""
    if pa.types.is_string(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return True
    return pa.types.is_list(t) and pa.types.is_string(t.value_type)


def _check_id_type(t: pa.DataType) -> None:
    if t not in ID_TYPES:
        raise TypeError(f"id columns are int64 or string, got {t}")
