"""Shared fixtures: small synthetic datasets, the real ML-100K folder, frame writers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_hyper.data import load_dataset
from recsys_hyper.data.dataset import Dataset
from recsys_hyper.data.synthetic import TRUTH_ITEMS_FILE, TRUTH_USERS_FILE, generate, preset

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store, created once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture(autouse=True)
def _isolated_mlflow(_mlflow_template, tmp_path_factory, monkeypatch):
    """Every test gets its own copy of the store (registered versions and aliases never leak
    between tests), and no test writes to the working directory's default store."""
    import shutil

    import mlflow

    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"          # outside the test's tmp_path
    shutil.copy(_mlflow_template, store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("RECSYS_HYPER_CACHE", str(store.parent / "model-cache"))
    mlflow.set_tracking_uri(f"sqlite:///{store}")


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K is not at {ML100K} (it lives in ../shared/data beside the checkout; "
                    "its licence forbids copying it into the repository)")
    return ML100K


#: a small, fast hypernetwork config for tests that need a trained model, not a good one
FAST_TOML = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 2\nbatch_users = 64\nk_max = 5\n"


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A folder with a small synthetic dataset (``ds``), the fast config (``fast.toml``) and a model
    trained on them through the command line (``model``). Tests copy before they change anything."""
    from recsys_hyper.cli import main

    root = tmp_path_factory.mktemp("trained")
    generate(preset("tiny", n_users=150, seed=21), root / "ds")
    (root / "fast.toml").write_text(FAST_TOML)
    assert main(["train", "--data", str(root / "ds"), "--out", str(root / "model"), "--config",
                 str(root / "fast.toml"), "--no-track", "--no-progress"]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny explicit synthetic dataset (300 users x 120 items, 4 clusters), generated once."""
    from recsys_hyper.data.synthetic import generate, preset

    out = tmp_path_factory.mktemp("tiny") / "ds"
    generate(preset("tiny", seed=7), out)
    return out


def write_frames(root: Path, interactions=None, users=None, items=None) -> Path:
    """Write raw frames / tables as a dataset directory, bypassing validation (to test it)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, obj in (("interactions.parquet", interactions), ("users.parquet", users), ("items.parquet", items)):
        if obj is None:
            continue
        table = obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(pd.DataFrame(obj), preserve_index=False)
        pq.write_table(table, root / name)
    return root


def good_interactions(n_users: int = 4, per_user: int = 5) -> pd.DataFrame:
    rows = []
    for u in range(1, n_users + 1):
        for j in range(per_user):
            rows.append({"user_id": u, "item_id": 100 + (u + j) % 9, "rating": float(1 + (u + j) % 5),
                         "timestamp": 1_600_000_000 + 3600 * (10 * u + j)})
    return pd.DataFrame(rows).drop_duplicates(["user_id", "item_id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic world with strong taste: 500 users (400 for training, 100 new), 4 clusters,
    ~90% of each user's events in their own cluster, a flat-ish popularity curve (so that knowing
    the cluster is worth far more than knowing what is popular). ``users``: the new users'
    features; ``new``: their events, chronological per user."""
    root = tmp_path_factory.mktemp("world") / "ds"
    generate(preset("tiny", n_users=500, n_items=200, seed=11, in_cluster_weight=60.0, popularity_exponent=0.5),
             root)
    ds = load_dataset(root)
    new_users = ds.users["user_id"].to_numpy()[-100:]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new_users)].reset_index(drop=True),
                    ds.users[~ds.users["user_id"].isin(new_users)], ds.items)
    new = ds.interactions[ds.interactions["user_id"].isin(new_users)].sort_values(["user_id", "timestamp", "item_id"])
    truth_u = pd.read_parquet(root / TRUTH_USERS_FILE).set_index("user_id")["cluster"]
    truth_i = pd.read_parquet(root / TRUTH_ITEMS_FILE).set_index("item_id")["cluster"]
    return {"root": root, "full": ds, "train": train, "new": new, "new_users": new_users,
            "users": ds.users[ds.users["user_id"].isin(new_users)], "items": ds.items, "truth_u": truth_u, "truth_i": truth_i}


@pytest.fixture(scope="module")
def landing_src(tmp_path_factory) -> Path:
    """A small synthetic landing folder of two nights (2026-11-21, 2026-11-22), made once per module."""
    from recsys_hyper.jobs.landing import make_synthetic_landing

    root = tmp_path_factory.mktemp("landing-src") / "landing"
    assert make_synthetic_landing(root, days=2, preset_name="tiny", seed=5, n_users=200,
                                  n_items=150) == ["2026-11-21", "2026-11-22"]
    return root


@pytest.fixture
def landing(landing_src, tmp_path) -> Path:
    """A copy of :func:`landing_src` the test may change."""
    import shutil

    return Path(shutil.copytree(landing_src, tmp_path / "landing"))

