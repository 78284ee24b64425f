"""Spark scale-out in local[2] mode: mapInPandas gives exactly the single-machine scorer's output,
and the registered model runs as mlflow.pyfunc.spark_udf. (pyspark comes with the [spark] extra,
which `make` and CI install.)"""

from __future__ import annotations

import os
import sys
import warnings

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


def test_map_in_pandas_equals_the_single_machine_scorer(spark, trained, tmp_path):
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
    from recsys_hyper.scoring.spark import grouped_histories, join_path, recs_ddl

    assert join_path("s3://bucket/data/", "interactions.parquet") == "s3://bucket/data/interactions.parquet"
    events = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "rating": [4.0, 3.0, 5.0],
                           "timestamp": [1_600_000_000, 1_600_000_001, 1_600_000_002]})
    (tmp_path / "ds").mkdir()
    events.to_parquet(tmp_path / "ds" / "interactions.parquet")              # no users.parquet: optional
    grouped, features = grouped_histories(spark, str(tmp_path / "ds"))
    assert features == [] and grouped.count() == 2
    assert recs_ddl(grouped) == "user_id string, item_id string, score float, rank int"
