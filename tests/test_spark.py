"""Spark scale-out in local[2] mode: mapInArrow gives exactly the single-machine scorer's output,
and the registered model runs as mlflow.pyfunc.spark_udf. (pyspark comes with the [spark] extra,
which `make` and CI install.)"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pyspark = pytest.importorskip("pyspark", reason="the [spark] extra is not installed (make and CI install it)")

from recsys_hyper.cli import main  # noqa: E402
from recsys_hyper.data.synthetic import generate, preset  # noqa: E402
from recsys_hyper import HyperRecommender  # noqa: E402
from recsys_hyper.scoring import score_dataset  # noqa: E402
from recsys_hyper.jobs import score_with_spark  # noqa: E402
from recsys_hyper.scoring.spark import grouped_histories  # noqa: E402

FAST = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 2\nk_max = 5\n"


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    session = (SparkSession.builder.master("local[2]").appName("recsys-hyper-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark")
    store = f"sqlite:///{root / 'mlflow.db'}"
    generate(preset("tiny", n_users=150, seed=21), root / "ds")
    users = pd.read_parquet(root / "ds" / "users.parquet")
    pd.concat([users, users.iloc[[0]].assign(user_id=777_777)]).to_parquet(root / "ds" / "users.parquet")
    (root / "fast.toml").write_text(FAST)
    old, cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = store
    os.chdir(root)
    try:
        assert main(["train", "--data", str(root / "ds"), "--out", str(root / "model"), "--config",
                     str(root / "fast.toml"), "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
    return root, store


def test_score_with_spark_equals_the_single_machine_scorer(spark, trained, tmp_path):
    root, _ = trained
    rec = HyperRecommender.load(root / "model")
    score_dataset(rec, root / "ds", tmp_path, "2026-11-22", top_k=8, progress=False)
    single = pq.read_table(tmp_path / "recommendations" / "date=2026-11-22").to_pandas()
    distributed = score_with_spark(spark, root / "ds", str(root / "model"), top_k=8).toPandas()
    key = ["user_id", "rank"]
    a = single.sort_values(key).reset_index(drop=True)
    b = distributed.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 8 * 151 and 777_777 in set(b["user_id"])          # feature-only user too
    # the same rows: every user, item and rank
    pd.testing.assert_frame_equal(a[["user_id", "item_id", "rank"]], b[["user_id", "item_id", "rank"]],
                                  check_dtype=False)
    # scores to float32 rounding: Spark's batches hold other users than the streaming scorer's
    # chunks, and BLAS kernels sum in an order that depends on the batch's shape
    # float32 rounding: BLAS sums in an order that depends on the batch's shape, so the error scales
    # with the scores' magnitude (the rank vector now includes the item-item parts)
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4, atol=2e-5 * float(np.abs(b["score"]).max()))


def test_spark_udf_on_the_registered_model(spark, trained, monkeypatch):
    root, store = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    udf = mlflow.pyfunc.spark_udf(spark, "models:/recsys-hyper@challenger", env_manager="local",
                                  result_type="item_ids array<long>, scores array<float>")
    grouped, _ = grouped_histories(spark, root / "ds")
    grouped = grouped.where("user_id <= 5")
    out = grouped.withColumn("recs", udf("user_id", "item_id", "rating", "timestamp")).select(
        "user_id", "recs.item_ids", "recs.scores").toPandas().sort_values("user_id")
    events = pd.read_parquet(root / "ds" / "interactions.parquet")
    want = HyperRecommender.load(root / "model").recommend(events[events["user_id"] <= 5], k=10)
    assert sorted(out["user_id"]) == sorted(want["user_id"].unique()) == [1, 2, 3, 4, 5]   # every user, once
    for _, row in out.iterrows():
        mine = want[want["user_id"] == row["user_id"]]
        assert list(row["item_ids"]) == mine["item_id"].tolist()
        np.testing.assert_allclose(row["scores"], mine["score"].to_numpy(), rtol=1e-5)


def test_paths_keep_their_scheme_and_the_output_schema_follows_the_id_types(spark, tmp_path):
    from recsys_hyper.scoring.spark import grouped_histories, join_path

    assert join_path("s3://bucket/data/", "interactions.parquet") == "s3://bucket/data/interactions.parquet"
    events = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "rating": [4.0, 3.0, 5.0],
                           "timestamp": [1_600_000_000, 1_600_000_001, 1_600_000_002]})
    (tmp_path / "ds").mkdir()
    events.to_parquet(tmp_path / "ds" / "interactions.parquet")              # no users.parquet: optional
    grouped, features = grouped_histories(spark, str(tmp_path / "ds"))
    assert features == [] and grouped.count() == 2
    assert [(f.name, f.dataType.simpleString()) for f in grouped.schema.fields] == [
        ("user_id", "string"), ("item_id", "array<string>"), ("rating", "array<double>"), ("timestamp", "array<bigint>")]


@pytest.fixture(scope="module")
def string_ids(tmp_path_factory):
    """A model on string ids, and data to score it on: a folder of two parts, a (user, item) pair
    rated twice (1.0, then 5.0 later; the later one wins), another pair twice at the same time (the
    later row of the later part wins), and a user known only from users.parquet."""
    root = tmp_path_factory.mktemp("spark-strings")
    generate(preset("tiny", n_users=120, seed=5), root / "train")
    for name, col in (("interactions", None), ("users", None), ("items", None)):
        frame = pd.read_parquet(root / "train" / f"{name}.parquet")
        for c in ("user_id", "item_id"):
            if c in frame:
                frame[c] = ("u" if c == "user_id" else "i") + frame[c].astype(str)
        frame.to_parquet(root / "train" / f"{name}.parquet")
    (root / "fast.toml").write_text(FAST)
    assert main(["train", "--data", str(root / "train"), "--out", str(root / "model"), "--config",
                 str(root / "fast.toml"), "--no-progress", "--no-track"]) == 0
    events = pd.read_parquet(root / "train" / "interactions.parquet")
    first = events.iloc[0]
    extra = pd.DataFrame({"user_id": [first.user_id, first.user_id, "u2", "u2"],
                          "item_id": ["i50", "i50", "i7", "i7"], "rating": [1.0, 5.0, 2.0, 4.0],
                          "timestamp": [first.timestamp - 10, first.timestamp + 10, 1_700_000_000, 1_700_000_000]})
    data = root / "data"
    (data / "interactions.parquet").mkdir(parents=True)
    half = len(events) // 2
    pd.concat([events.iloc[:half], extra.iloc[[0, 2]]]).to_parquet(data / "interactions.parquet" / "part-0.parquet")
    pd.concat([events.iloc[half:], extra.iloc[[1, 3]]]).to_parquet(data / "interactions.parquet" / "part-1.parquet")
    users = pd.read_parquet(root / "train" / "users.parquet")
    pd.concat([users, users.iloc[[0]].assign(user_id="newcomer")]).to_parquet(data / "users.parquet")
    return root


def _score(engine, root, data, out, capsys):
    code = main(["score", "--model", str(root / "model"), "--data", str(data), "--out", str(out), "--date",
                 "2026-11-30", "--top-k", "7", "--engine", engine, "--spark-master", "local[2]", "--no-progress"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("writer", ["tasks", "spark"])
def test_spark_engine_writes_what_score_writes(spark, string_ids, tmp_path, capsys, monkeypatch, writer):
    """Both ways the Spark engine writes: each scoring task with the single machine's writer (a
    local or shared path), or Spark's writers from a staging table (``s3a://``, ``hdfs://``)."""
    from recsys_hyper.scoring import spark as sp

    root = string_ids
    assert sp.tasks_write(spark, tmp_path / "spark")
    if writer == "spark":
        monkeypatch.setattr(sp, "tasks_write", lambda spark, out: False)
    assert _score("local", root, root / "data", tmp_path / "local", capsys)[0] == 0
    assert _score("spark", root, root / "data", tmp_path / "spark", capsys)[0] == 0
    for table, key in (("recommendations", ["user_id", "rank"]), ("user_heads", ["user_id"]),
                       ("item_vectors", ["item_id"])):
        a, b = (pq.read_table(tmp_path / side / table / "date=2026-11-30").to_pandas().sort_values(key)
                .reset_index(drop=True) for side in ("local", "spark"))
        assert list(a.columns) == list(b.columns) and len(a) == len(b), table
        for col in a.columns:
            if isinstance(a[col].iloc[0], np.ndarray):
                np.testing.assert_allclose(np.stack(a[col]), np.stack(b[col]), rtol=1e-5, atol=1e-5)
            elif col in ("score", "rank_bias", "rating_bias"):
                np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-5)
            else:
                assert a[col].tolist() == b[col].tolist(), (table, col)
    recs = pq.read_table(tmp_path / "spark" / "recommendations" / "date=2026-11-30").to_pandas()
    assert "newcomer" in set(recs["user_id"]) and recs["user_id"].map(type).eq(str).all()
    manifests = [json.loads((tmp_path / side / "recommendations" / "date=2026-11-30" / "_manifest.json").read_text())
                 for side in ("local", "spark")]
    for name in ("users", "interactions", "duplicates_dropped", "users_without_history", "unknown_item_events",
                 "top_k", "formula"):
        assert manifests[0][name] == manifests[1][name], name
    assert manifests[1]["duplicates_dropped"] == 2
    assert not [p for p in (tmp_path / "spark").iterdir() if p.name.startswith(".")]     # nothing staged is left


@pytest.mark.parametrize("bad", [9.0, float("nan"), "null user"], ids=["off-scale", "nan", "null-user"])
def test_spark_engine_refuses_what_score_refuses_with_the_same_error(spark, string_ids, tmp_path, capsys, bad):
    root = string_ids
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    part = data / "interactions.parquet" / "part-1.parquet"
    frame = pd.read_parquet(part)
    if bad == "null user":
        frame["user_id"] = frame["user_id"].astype(object)
        frame.loc[frame.index[[3, 11]], "user_id"] = None
    else:
        frame.loc[frame.index[[3, 11]], "rating"] = bad
    frame.to_parquet(part)
    local = _score("local", root, data, tmp_path / "local", capsys)
    distributed = _score("spark", root, data, tmp_path / "spark", capsys)
    assert local[0] == distributed[0] == 2
    assert ("rows" in local[1].err or bad == "null user") and local[1].err == distributed[1].err
    assert not (tmp_path / "spark").exists() or not any((tmp_path / "spark").iterdir())


def test_spark_submit_runs_the_scoring_job(string_ids, tmp_path, capsys):
    """The job as a cluster runs it: spark-submit on the module's file, the score command's options."""
    import subprocess

    import recsys_hyper.spark_submit as job

    root = string_ids
    assert _score("local", root, root / "data", tmp_path / "local", capsys)[0] == 0
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    run = subprocess.run([str(Path(sys.executable).with_name("spark-submit")), "--master", "local[1]", job.__file__,
                          "--model", str(root / "model"), "--data", str(root / "data"), "--out", str(tmp_path / "sub"),
                          "--date", "2026-11-30", "--top-k", "7", "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scored 121 users" in run.stdout
    a, b = (pq.read_table(tmp_path / side / "recommendations" / "date=2026-11-30").to_pandas()
            .sort_values(["user_id", "rank"]).reset_index(drop=True) for side in ("local", "sub"))
    assert a[["user_id", "item_id", "rank"]].equals(b[["user_id", "item_id", "rank"]])


def test_spark_engine_reads_every_time_form_and_refuses_a_truncated_file_in_one_line(spark, string_ids, tmp_path,
                                                                                      capsys):
    """Used to be: zoned timestamps gave an AssertionError in pyspark, a truncated Parquet file a
    Py4J traceback (rc 1), where `score` succeeds or exits 2 with a line."""
    import pyarrow as pa

    root = string_ids
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    for n, (unit, tz) in enumerate((("ms", "America/Los_Angeles"), ("us", None))):
        part = data / "interactions.parquet" / f"part-{n}.parquet"
        table = pq.read_table(part)
        seconds = table.column("timestamp").to_numpy()
        times = pd.to_datetime(seconds, unit="s", utc=True)
        times = times.tz_convert(tz) if tz else times.tz_localize(None)
        i = table.schema.get_field_index("timestamp")
        pq.write_table(table.set_column(i, "timestamp", pa.array(times, pa.timestamp(unit, tz=tz))), part)
    code, printed = _score("local", root, data, tmp_path / "local", capsys)
    assert code == 0, printed.err[-2000:]
    code, printed = _score("spark", root, data, tmp_path / "spark", capsys)
    assert code == 0, printed.err[-2000:]
    key = ["user_id", "rank"]
    a, b = (pq.read_table(tmp_path / side / "recommendations" / "date=2026-11-30").to_pandas().sort_values(key)
            .reset_index(drop=True) for side in ("local", "spark"))
    assert a["item_id"].tolist() == b["item_id"].tolist()
    part = data / "interactions.parquet" / "part-1.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])                   # truncated
    for where in (str(data), data.as_uri()):       # a local folder is checked before Spark starts; a URI by Spark
        code = main(["score", "--model", str(root / "model"), "--data", where, "--out", str(tmp_path / "bad"),
                     "--date", "2026-11-30", "--engine", "spark", "--spark-master", "local[2]", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err[-3000:]
        assert "part-1.parquet" in err or where in err, err


def test_users_whose_rows_span_arrow_batches_are_scored_whole(trained):
    """The scoring pass gathers whole users from a sorted stream whose Arrow batches may cut a
    user's rows anywhere: small batches and small chunks give every user the answer of one batch."""
    import functools

    import pyarrow as pa

    from recsys_hyper.jobs.models import load_model
    from recsys_hyper.scoring import spark as sp

    root, _ = trained
    model = str(root / "model")
    events = pd.read_parquet(root / "ds" / "interactions.parquet").sort_values(["user_id", "timestamp"],
                                                                               kind="stable").head(400)
    table = pa.Table.from_pandas(events.assign(**{sp.FILE: "part-0", sp.ROW: np.arange(len(events)),
                                                  sp.KIND: np.int8(1)}), preserve_index=False)
    schema = sp._scored_schema(pa.int64(), pa.int64())

    def scored(batch_rows: int, chunk_users: int) -> pd.DataFrame:
        run = sp._score_streams(sp._score_chunks(functools.partial(load_model, model), 5, True, None, [], schema),
                                chunk_users)
        out = pa.Table.from_batches(list(run(iter(table.to_batches(max_chunksize=batch_rows))))).to_pandas()
        return out.sort_values("user_id").reset_index(drop=True)

    whole, cut = scored(10_000, 10_000), scored(7, 3)
    assert len(whole) == events["user_id"].nunique() and whole["user_id"].tolist() == cut["user_id"].tolist()
    assert whole["support_size"].tolist() == cut["support_size"].tolist()
    assert [list(v) for v in whole["rec_items"]] == [list(v) for v in cut["rec_items"]]


def test_spark_engine_never_recommends_retired_or_excluded_items(spark, string_ids, tmp_path, capsys):
    root = string_ids
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    assert _score("local", root, data, tmp_path / "before", capsys)[0] == 0
    before = pq.read_table(tmp_path / "before" / "recommendations" / "date=2026-11-30").to_pandas()
    popular = before["item_id"].value_counts().index[:4].tolist()
    items = pd.read_parquet(root / "train" / "items.parquet")
    items.assign(retired=items["item_id"].isin(popular[:2])).to_parquet(data / "items.parquet", index=False)
    (tmp_path / "exclude.txt").write_text("\n".join(popular[2:]) + "\n")
    for where, out in ((str(data), "local-folder"), (data.as_uri(), "uri")):          # checked here, or by Spark
        code = main(["score", "--model", str(root / "model"), "--data", where, "--out", str(tmp_path / out),
                     "--date", "2026-11-30", "--top-k", "7", "--engine", "spark", "--spark-master", "local[2]",
                     "--exclude-items", str(tmp_path / "exclude.txt"), "--no-progress"])
        assert code == 0, capsys.readouterr().err[-2000:]
        recs = pq.read_table(tmp_path / out / "recommendations" / "date=2026-11-30").to_pandas()
        assert len(recs) == len(before) and not recs["item_id"].isin(popular).any(), out
