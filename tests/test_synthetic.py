"""The synthetic generator: deterministic, streaming, with the latent structure it promises."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_hyper.data import load_dataset
from recsys_hyper.data.synthetic import TRUTH_ITEMS_FILE, TRUTH_USERS_FILE, SynthConfig, generate, preset


def _digest(root):
    return {p.name: hashlib.sha256(pq.read_table(p).to_pandas().to_csv().encode()).hexdigest()
            for p in sorted(root.glob("*.parquet"))}


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    cfg = preset("tiny", n_users=150)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    generate(preset("tiny", n_users=150, seed=1), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["interactions.parquet"] != _digest(tmp_path / "c")["interactions.parquet"]


def test_streams_in_row_groups(tmp_path):
    generate(preset("tiny", n_users=1000, chunk_users=100), tmp_path / "ds")
    meta = pq.ParquetFile(tmp_path / "ds" / "interactions.parquet").metadata
    assert meta.num_row_groups == 10
    assert pq.ParquetFile(tmp_path / "ds" / "users.parquet").metadata.num_rows == 1000


def _joined(root):
    ds = load_dataset(root)
    uc = pd.read_parquet(root / TRUTH_USERS_FILE).rename(columns={"cluster": "user_cluster"})
    ic = pd.read_parquet(root / TRUTH_ITEMS_FILE).rename(columns={"cluster": "item_cluster"})
    return ds, ds.interactions.merge(uc, on="user_id").merge(ic, on="item_id")


def test_latent_structure_is_there(tiny_dir):
    ds, df = _joined(tiny_dir)
    cfg = preset("tiny", seed=7)
    same = df["user_cluster"] == df["item_cluster"]
    # taste clusters: users draw mostly from their own cluster (chance would be ~1 / n_clusters)
    assert same.mean() > 0.6
    # and rate those items higher
    assert df.loc[same, "rating"].mean() > df.loc[~same, "rating"].mean() + 0.8
    # long-tailed popularity: the top 10% of items hold far more than 10% of events
    pop = df["item_id"].value_counts().to_numpy()
    assert pop[: len(pop) // 10].sum() / pop.sum() > 0.25
    # long-tailed history lengths
    lengths = df.groupby("user_id").size()
    assert lengths.min() >= cfg.min_history and lengths.max() > 2.5 * lengths.median()
    # item features carry signal: the first genre names the cluster most of the time
    items = ds.items.merge(pd.read_parquet(tiny_dir / TRUTH_ITEMS_FILE), on="item_id")
    first_genre = items["genres"].map(lambda g: int(g[0].split("_")[1]))
    assert (first_genre == items["cluster"]).mean() > 0.8
    # user features partly do: occupation matches the cluster's more often than chance, not always
    users = ds.users.merge(pd.read_parquet(tiny_dir / TRUTH_USERS_FILE), on="user_id")
    match = (users["occupation"] == users["cluster"].map(lambda c: f"occ_{c % 12}")).mean()
    assert 0.4 < match < 0.9
    # ratings 1..5; every user written in time order
    assert set(df["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert cfg.n_users == len(lengths)
    raw = pq.read_table(tiny_dir / "interactions.parquet").to_pandas()
    assert (raw.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()


def test_implicit_mode_has_no_rating_column(tmp_path):
    generate(preset("tiny", n_users=50, implicit=True), tmp_path / "ds")
    assert "rating" not in pq.read_schema(tmp_path / "ds" / "interactions.parquet").names
    ds = load_dataset(tmp_path / "ds")
    assert ds.implicit and (ds.interactions["rating"] == 1.0).all()


def test_config_is_checked():
    with pytest.raises(ValueError, match="'n_users' must be a positive integer. Got 0 instead."):
        SynthConfig(n_users=0)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


def test_refuses_to_replace_without_overwrite(tmp_path):
    generate(preset("tiny", n_users=20), tmp_path / "ds")
    before = _digest(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate(preset("tiny", n_users=30, seed=5), tmp_path / "ds")
    assert _digest(tmp_path / "ds") == before
    generate(preset("tiny", n_users=30, seed=5), tmp_path / "ds", overwrite=True)
    assert pq.read_metadata(tmp_path / "ds" / "users.parquet").num_rows == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
