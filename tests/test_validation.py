"""Every bad-input case of the data contract: its message (file, column, rows, examples, fix),
and that nothing is written when validation fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_hyper.cli import main
from recsys_hyper.data import Dataset, load_dataset, validate_frames, write_dataset
from recsys_hyper.errors import DataValidationError

from .conftest import good_interactions, write_frames


def _bad_rating_strings(df):
    df = df.copy()
    df["rating"] = df["rating"].astype(str)
    df.loc[[2, 6], "rating"] = ["good", "n/a"]
    return df


def _with(df, column, rows, values):
    df = df.copy()
    if column == "timestamp":
        df[column] = df[column].astype("int64")
    else:
        df[column] = df[column].astype(object if any(v is None for v in values) else df[column].dtype)
    for r, v in zip(rows, values):
        df.at[r, column] = v
    return df


# (case id, how to break a good dataset directory, fragments the message must hold)
CASES = [
    ("missing-file", lambda root: write_frames(root, users=pd.DataFrame({"user_id": [1]})),
     ["interactions.parquet", "file not found", "import-movielens"]),
    ("missing-column", lambda root: write_frames(root, good_interactions().drop(columns="item_id")),
     ["interactions.parquet", "column 'item_id'", "is missing", "columns present: user_id, rating, timestamp",
      "rename"]),
    ("uncastable-rating", lambda root: write_frames(root, _bad_rating_strings(good_interactions())),
     ["column 'rating'", "2 strings that are not numbers", "rows 2, 6", "'good'", "'n/a'", "drop the column"]),
    ("uncastable-id-type", lambda root: write_frames(
        root, pa.table({"user_id": pa.array([[1], [2]]), "item_id": [1, 2], "rating": [1.0, 2.0],
                        "timestamp": [1_600_000_000, 1_600_000_001]})),
     ["column 'user_id'", "has type list<", "cannot be used as an id", "astype"]),
    ("fractional-float-id", lambda root: write_frames(
        root, good_interactions().assign(item_id=lambda d: d["item_id"] + 0.5)),
     ["column 'item_id'", "not whole numbers", "e.g. 101.5"]),
    ("null-ids", lambda root: write_frames(root, _with(good_interactions(), "user_id", [3, 7], [None, None])),
     ["column 'user_id'", "2 null ids of 20 rows", "rows 3, 7", "dropna"]),
    ("nan-rating", lambda root: write_frames(root, _with(good_interactions(), "rating", [1, 4, 9], [np.nan] * 3)),
     ["column 'rating'", "3 missing (null / NaN) values of 20 rows", "rows 1, 4, 9", "implicit"]),
    ("inf-rating", lambda root: write_frames(root, _with(good_interactions(), "rating", [5], [np.inf])),
     ["column 'rating'", "1 infinite values", "rows 5", "inf"]),
    ("negative-timestamp", lambda root: write_frames(root, _with(good_interactions(), "timestamp", [0, 11], [-5, 0])),
     ["column 'timestamp'", "2 implausible times", "rows 0, 11", "-5", "unix seconds"]),
    ("millisecond-timestamps", lambda root: write_frames(
        root, good_interactions().assign(timestamp=lambda d: d["timestamp"] * 1000)),
     ["column 'timestamp'", "20 implausible times", "milliseconds: divide by 1000"]),
    ("unparsable-timestamp-strings", lambda root: write_frames(
        root, good_interactions().assign(timestamp=["2021-03-04T10:00:00"] * 19 + ["yesterday"])),
     ["column 'timestamp'", "1 strings that are neither unix seconds nor ISO-8601", "rows 19", "'yesterday'"]),
    ("duplicate-user-ids", lambda root: write_frames(
        root, good_interactions(), users=pd.DataFrame({"user_id": [1, 2, 2, 3, 1], "age": [1, 2, 3, 4, 5]})),
     ["users.parquet", "column 'user_id'", "2 ids that appear more than once (4 rows)", "rows 0, 1, 2, 4",
      "drop_duplicates"]),
    ("duplicate-item-ids", lambda root: write_frames(
        root, good_interactions(), items=pd.DataFrame({"item_id": [100, 100], "year": [1, 2]})),
     ["items.parquet", "column 'item_id'", "appear more than once"]),
    ("id-type-mismatch", lambda root: write_frames(
        root, good_interactions(), users=pd.DataFrame({"user_id": ["1", "2"], "age": [1, 2]})),
     ["users.parquet", "column 'user_id'", "is string but interactions.parquet's 'user_id' is int64"]),
    ("unsupported-feature", lambda root: write_frames(
        root, good_interactions(), items=pa.table({"item_id": [100], "meta": pa.array([{"a": 1}])})),
     ["items.parquet", "column 'meta'", "unsupported feature type struct", "convert the column or drop it"]),
    ("empty-file", lambda root: write_frames(root, good_interactions().iloc[:0]),
     ["interactions.parquet", "is empty (0 rows)"]),
    ("corrupt-file", lambda root: (root.mkdir(parents=True), (root / "interactions.parquet").write_bytes(
        b"user_id,item_id\n1,2\n")),
     ["interactions.parquet", "is not a readable Parquet file", "re-export"]),
    ("truncated-file", lambda root: (write_frames(root, good_interactions()), (root / "interactions.parquet").write_bytes(
        (root / "interactions.parquet").read_bytes()[:-40])),
     ["interactions.parquet", "is not a readable Parquet file"]),
]


@pytest.mark.parametrize("case, make, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_nothing_is_written(tmp_path, capsys, case, make, fragments):
    bad = tmp_path / "bad"
    make(bad)
    with pytest.raises(DataValidationError) as info:
        load_dataset(bad)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # the CLI reports the same message, exits 2 and writes nothing
    out = tmp_path / "clean"
    assert main(["data", "validate", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragments[0] in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temporary left behind either


def test_all_problems_are_reported_together(tmp_path):
    df = _with(good_interactions(), "rating", [1], [np.nan])
    df = _with(df, "timestamp", [2], [-1])
    write_frames(tmp_path, df, users=pd.DataFrame({"user_id": [1, 1]}))
    with pytest.raises(DataValidationError) as info:
        load_dataset(tmp_path)
    assert len(info.value.problems) == 3
    assert str(info.value).startswith("3 problems in the input data:")


def test_duplicate_events_keep_the_latest_and_are_reported(tmp_path, caplog):
    df = good_interactions()
    later = df.iloc[[0, 3]].assign(timestamp=lambda d: d["timestamp"] + 10, rating=[5.0, 1.0])
    earlier = df.iloc[[1]].assign(timestamp=lambda d: d["timestamp"] - 10, rating=[4.0])
    write_frames(tmp_path, pd.concat([df, later, earlier], ignore_index=True))
    ds = load_dataset(tmp_path)
    assert ds.report.n_duplicates_dropped == 3
    assert len(ds.interactions) == len(df)
    got = ds.interactions.set_index(["user_id", "item_id"])["rating"]
    assert got[tuple(df.iloc[0][["user_id", "item_id"]])] == 5.0          # the later duplicate won
    assert got[tuple(df.iloc[3][["user_id", "item_id"]])] == 1.0
    assert got[tuple(df.iloc[1][["user_id", "item_id"]])] == df.iloc[1]["rating"]  # the earlier one lost
    assert "3 duplicate (user_id, item_id) events" in caplog.text and "kept the latest" in caplog.text


def test_repairable_input_is_converted(tmp_path):
    df = good_interactions()
    table = pa.table({
        "user_id": pa.array(df["user_id"].astype("int32")),
        "item_id": pa.array(df["item_id"].astype("float64")),                 # whole-number floats
        "rating": pa.array(df["rating"].astype(str)),                         # numeric strings
        "timestamp": pa.array(pd.to_datetime(df["timestamp"], unit="s"), type=pa.timestamp("ms")),
    })
    write_frames(tmp_path, table, items=pa.table({
        "item_id": pa.array([100, 101], type=pa.int16()),
        "genres": pa.array([["a"], ["b", "c"]], type=pa.large_list(pa.large_string())),
        "kind": pa.array(["x", "y"]).dictionary_encode(),
    }))
    ds = load_dataset(tmp_path)
    i = ds.interactions
    assert i["user_id"].dtype == "int64" and i["item_id"].dtype == "int64"
    assert i["rating"].dtype == "float32" and i["timestamp"].dtype == "int64"
    np.testing.assert_array_equal(i["timestamp"].to_numpy(), df["timestamp"].to_numpy())
    np.testing.assert_array_equal(i["rating"].to_numpy(), df["rating"].to_numpy(dtype=np.float32))
    assert list(ds.items["genres"].iloc[1]) == ["b", "c"]
    assert ds.report.n_items_without_features == len(set(df["item_id"]) - {100, 101})


def test_implicit_feedback_without_rating_column(tmp_path):
    write_frames(tmp_path, good_interactions().drop(columns="rating"))
    ds = load_dataset(tmp_path)
    assert ds.implicit and (ds.interactions["rating"] == 1.0).all()


def test_string_ids_are_supported(tmp_path):
    df = good_interactions().astype({"user_id": str, "item_id": str})
    write_frames(tmp_path, df, users=pd.DataFrame({"user_id": ["1", "2"], "gender": ["F", "M"]}))
    ds = load_dataset(tmp_path)
    assert ds.interactions["user_id"].map(type).eq(str).all()
    assert ds.report.n_users_without_features == 2


def test_write_dataset_validates_first_and_writes_nothing_on_failure(tmp_path):
    bad = Dataset(_with(good_interactions(), "rating", [0], [np.nan]))
    with pytest.raises(DataValidationError):
        write_dataset(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_write_then_load_round_trips_with_declared_schema(tmp_path):
    import pyarrow.parquet as pq

    ds = validate_frames(good_interactions(), pd.DataFrame({"user_id": [1, 2], "age": [30, 40]}),
                         pd.DataFrame({"item_id": [100], "genres": [["x", "y"]]}))
    write_dataset(ds, tmp_path / "ds")
    schema = pq.read_schema(tmp_path / "ds" / "interactions.parquet")
    assert [str(t) for t in schema.types] == ["int64", "int64", "float", "int64"]
    assert pq.read_schema(tmp_path / "ds" / "items.parquet").field("genres").type == pa.list_(pa.string())
    back = load_dataset(tmp_path / "ds")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset(ds, tmp_path / "ds")
    write_dataset(ds, tmp_path / "ds", overwrite=True)
