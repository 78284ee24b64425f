"""Batch scoring: same answers as the model, exported heads that reproduce them, atomic commits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_hyper.cli import main
from recsys_hyper.data import load_dataset
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.errors import DataValidationError, RecsysHyperError
from recsys_hyper import Config, HyperRecommender, ModelConfig, TrainConfig
from recsys_hyper.scoring import score_dataset

DATE = "2026-11-22"


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    generate(preset("tiny", n_users=300, seed=8), root / "train")
    rec = HyperRecommender(Config(model=ModelConfig(dim=8, hidden=16, z_dim=16),
                                  train=TrainConfig(epochs=2, k_max=5))).fit(load_dataset(root / "train"),
                                                                              progress=False)
    rec.save(root / "model")
    # users to score: new ids, histories spread over three files in shuffled order
    generate(preset("tiny", n_users=240, seed=9), root / "new")
    events = pd.read_parquet(root / "new" / "interactions.parquet").sample(frac=1.0, random_state=0)
    events["user_id"] += 100_000
    data = root / "data"
    (data / "interactions.parquet").mkdir(parents=True)
    for i, start in enumerate(range(0, len(events), -(-len(events) // 3))):
        part = events.iloc[start:start + -(-len(events) // 3)]
        part.to_parquet(data / "interactions.parquet" / f"part-{i}.parquet", index=False)
    users = pd.read_parquet(root / "new" / "users.parquet").assign(user_id=lambda d: d["user_id"] + 100_000)
    only = users.iloc[[0]].assign(user_id=999_999)                              # features, no history
    pd.concat([users, only]).to_parquet(data / "users.parquet", index=False)
    return rec, root, data, events, pd.concat([users, only])


def _read(out, table):
    return pq.read_table(out / table / f"date={DATE}").to_pandas()


def test_streamed_scores_equal_the_models_recommendations(model_and_data, tmp_path):
    rec, _, data, events, users = model_and_data
    report = score_dataset(rec, data, tmp_path, DATE, top_k=7, chunk_users=50, rows_per_bucket=2000,
                           progress=False)
    assert report.buckets > 1 and report.users == events["user_id"].nunique() + 1
    got = _read(tmp_path, "recommendations").sort_values(["user_id", "rank"]).reset_index(drop=True)
    want = rec.recommend(events, k=7, users=users).sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["user_id", "item_id", "rank"]], want[["user_id", "item_id", "rank"]],
                                  check_dtype=False)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-5)
    assert (got.groupby("user_id").size() == 7).all() and 999_999 in set(got["user_id"])
    seen = set(map(tuple, events[["user_id", "item_id"]].to_numpy()))
    assert not any((u, i) in seen for u, i in got[["user_id", "item_id"]].to_numpy())


def test_exported_heads_reproduce_the_scores_with_a_dot_product(model_and_data, tmp_path):
    rec, _, data, _, _ = model_and_data
    score_dataset(rec, data, tmp_path, DATE, top_k=5, progress=False)
    recs = _read(tmp_path, "recommendations")
    heads = _read(tmp_path, "user_heads").set_index("user_id")
    items = _read(tmp_path, "item_vectors").set_index("item_id")
    phi = np.stack(items.loc[recs["item_id"], "phi"].to_numpy())
    head = np.stack(heads.loc[recs["user_id"], "rank_head"].to_numpy())
    dot = items.loc[recs["item_id"], "rank_bias"].to_numpy() + (head * phi).sum(1)
    np.testing.assert_allclose(dot, recs["score"].to_numpy(), rtol=1e-5, atol=1e-5)
    # ratings too: mu + rating_bias + rating_head . phi, as the manifest documents
    import json

    manifest = json.loads((tmp_path / "recommendations" / f"date={DATE}" / "_manifest.json").read_text())
    pairs = recs.head(20)
    rating = (manifest["formula"]["mu"] + items.loc[pairs["item_id"], "rating_bias"].to_numpy()
              + (np.stack(heads.loc[pairs["user_id"], "rating_head"].to_numpy())
                 * np.stack(items.loc[pairs["item_id"], "phi"].to_numpy())).sum(1))
    events = pq.read_table(data / "interactions.parquet").to_pandas()
    want = rec.predict(events, pairs, users=pd.read_parquet(data / "users.parquet"))
    np.testing.assert_allclose(np.clip(rating, 1, 5), want, rtol=1e-5, atol=1e-5)


def test_candidates_and_rerun_replaces(model_and_data, tmp_path, capsys):
    rec, root, data, _, _ = model_and_data
    pd.DataFrame({"item_id": [1, 2, 3, 4, 5, 6]}).to_parquet(tmp_path / "cands.parquet")
    argv = ["score", "--model", str(root / "model"), "--data", str(data), "--top-k", "3", "--out",
            str(tmp_path / "out"), "--date", DATE, "--candidates", str(tmp_path / "cands.parquet"), "--no-progress"]
    assert main(argv) == 0
    first = _read(tmp_path / "out", "recommendations")
    assert set(first["item_id"]) <= {1, 2, 3, 4, 5, 6}
    assert main(argv) == 0                                                     # same date again
    again = _read(tmp_path / "out", "recommendations")
    assert len(again) == len(first)                                            # replaced, not duplicated
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["item_vectors", "recommendations", "user_heads"]
    assert "scored 241 users" in capsys.readouterr().out


def test_errors_before_any_work(model_and_data, tmp_path):
    rec, _, _, events, _ = model_and_data
    bad = tmp_path / "bad"
    bad.mkdir()
    events.astype({"item_id": str}).to_parquet(bad / "interactions.parquet")
    with pytest.raises(RecsysHyperError, match="vocabulary mismatch"):
        score_dataset(rec, bad, tmp_path / "out", DATE, progress=False)
    events.drop(columns="user_id").to_parquet(bad / "interactions.parquet")
    with pytest.raises(DataValidationError, match="column 'user_id': is missing"):
        score_dataset(rec, bad, tmp_path / "out", DATE, progress=False)
    with pytest.raises(RecsysHyperError, match="use YYYY-MM-DD"):
        score_dataset(rec, bad, tmp_path / "out", "22/11/2026", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_kill_9_mid_run_leaves_nothing_visible_and_a_rerun_completes(model_and_data, tmp_path):
    _, root, _, _, _ = model_and_data
    generate(preset("tiny", n_users=60_000, seed=10), tmp_path / "big")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "recsys_hyper.cli", "score", "--model", str(root / "model"), "--data",
           str(tmp_path / "big"), "--top-k", "20", "--out", str(out), "--date", DATE, "--chunk-users", "256",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        parts = list(out.glob(".staging-*/recommendations/part-*.parquet")) if out.exists() else []
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "scoring finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "recommendations" / f"date={DATE}").exists()              # nothing visible
    subprocess.run(cmd, check=True, capture_output=True)
    recs = _read(out, "recommendations")
    assert len(recs) == 20 * 60_000 and recs["user_id"].nunique() == 60_000
    assert not list(out.glob(".staging-*"))                                   # the dead run's staging is gone
