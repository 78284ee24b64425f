"""Synthetic datasets with known latent structure, of any size, streamed to Parquet.

The generative story (every part is there so that a model has something real to find):

* **Taste clusters.** ``n_clusters`` centroids in R^d. Every item belongs to one cluster (its
  latent vector is the centroid plus noise); every user belongs to one cluster too (cluster sizes
  are uneven). A user draws items from their own cluster ``in_cluster_weight`` times more often
  than from another, and rates them higher: the rating is
  ``clip(round(mu + b_u + b_i + affinity * <u, v_i> + noise), 1, 5)``.
* **Long-tailed popularity.** Item draws are weighted by a Zipf law (exponent
  ``popularity_exponent``) over a random ranking of the items; popular items also get a small
  bias bonus.
* **Item features that carry signal.** ``genres`` (list<string>) holds the item's cluster genre
  with probability ``genre_signal`` (else a random one) plus sometimes a second random genre;
  ``year`` is noise.
* **User features that partly do.** ``occupation`` is the user's cluster occupation with
  probability ``user_feature_signal`` (else random); ``age`` shifts a little with the cluster;
  ``gender`` leans with it; ``region`` is noise.
* **Long-tailed history lengths** (``min_history`` + log-normal, capped), **timestamps** (each
  user starts at a random time and acts at exponential gaps), **explicit ratings** 1..5 (in steps
  of ``rating_step``: 0.5 gives half stars from 0.5 to 5) or, with ``implicit=True``, no rating
  column (every event counts 1.0). ``user_features=False`` writes no ``users.parquet``.

Ground truth is written beside the dataset: ``ground_truth_users.parquet`` (``user_id``,
``cluster``) and ``ground_truth_items.parquet`` (``item_id``, ``cluster``). Users are generated
in chunks of ``chunk_users`` and written as one Parquet row group per chunk, so memory is bounded
by the chunk, not the number of users. The output is a deterministic function of the config.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_directory
from . import schema as S

TRUTH_USERS_FILE = "ground_truth_users.parquet"
TRUTH_ITEMS_FILE = "ground_truth_items.parquet"


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator (see the module docstring for what each one shapes)."""

    n_users: int = 3000
    n_items: int = 1000
    seed: int = 0
    implicit: bool = False
    n_clusters: int = 8
    latent_dim: int = 16
    in_cluster_weight: float = 12.0
    popularity_exponent: float = 0.9
    affinity: float = 1.5
    rating_noise: float = 0.6
    genre_signal: float = 0.85
    user_feature_signal: float = 0.6
    min_history: int = 5
    median_extra_history: float = 25.0
    history_sigma: float = 0.9
    max_history: int = 400
    start_time: int = 1_577_836_800  # 2020-01-01
    span_days: float = 730.0
    mean_gap_hours: float = 30.0
    chunk_users: int = 20_000
    rating_mean: float = 2.8
    rating_step: float = 1.0
    user_features: bool = True

    def __post_init__(self) -> None:
        positive = ("n_users", "n_items", "n_clusters", "latent_dim", "min_history", "max_history", "chunk_users")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SynthConfig: '{name}' must be a positive integer. Got {value!r} instead.")
        for name in ("genre_signal", "user_feature_signal"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthConfig: '{name}' must be in [0, 1]. Got {getattr(self, name)!r} instead.")
        if self.in_cluster_weight < 1.0:
            raise ValueError(f"SynthConfig: 'in_cluster_weight' must be >= 1. Got {self.in_cluster_weight!r} instead.")
        if self.rating_step not in (0.5, 1.0):
            raise ValueError(f"SynthConfig: 'rating_step' must be 0.5 or 1.0. Got {self.rating_step!r} instead.")
        if self.min_history > self.max_history:
            raise ValueError("SynthConfig: 'min_history' must be <= 'max_history'. "
                             f"Got {self.min_history} > {self.max_history} instead.")


#: Named configurations: ``default`` is the embedded dataset of ``make run``; ``scale`` is the
#: benchmark size; ``tiny`` suits tests.
PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(n_users=300, n_items=200, n_clusters=4, median_extra_history=15.0, max_history=60),
    "default": SynthConfig(),
    "scale": SynthConfig(n_users=1_000_000, n_items=10_000, median_extra_history=15.0, max_history=300),
    # shaped like a small real catalogue: a few hundred users, ~10k items with a long tail (most
    # items rated once or twice), long histories, half-star ratings, no user features, and weaker
    # structure than the default (milder clusters, genres that only half the time say the cluster)
    "longtail": SynthConfig(n_users=610, n_items=9_700, n_clusters=12, popularity_exponent=1.05,
                            in_cluster_weight=4.0, genre_signal=0.5, affinity=1.0,
                            min_history=20, median_extra_history=60.0, history_sigma=1.1, max_history=2_000,
                            rating_mean=2.8, rating_step=0.5, rating_noise=0.9, user_features=False),
}

OCCUPATIONS = 12
REGIONS = 10
GENRES_PER_CLUSTER = 1


def preset(name: str, **overrides) -> SynthConfig:
    """A preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class _World:
    """The latent structure shared by all chunks."""

    centroids: np.ndarray       # (C, d)
    cluster_weights: np.ndarray  # (C,)
    item_cluster: np.ndarray    # (M,)
    item_latent: np.ndarray     # (M, d)
    item_bias: np.ndarray       # (M,)
    cdf: np.ndarray             # (C * M,) per-cluster draw CDFs, cluster c shifted by +c


def _make_world(cfg: SynthConfig, rng: np.random.Generator) -> tuple[_World, pa.Table, pa.Table]:
    C, M, d = cfg.n_clusters, cfg.n_items, cfg.latent_dim
    centroids = rng.normal(size=(C, d))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)  # unit norm: in-cluster <u, v> ~ 1
    cluster_weights = 1.0 / np.sqrt(np.arange(1, C + 1))
    cluster_weights /= cluster_weights.sum()

    item_cluster = rng.integers(0, C, size=M)
    item_latent = centroids[item_cluster] + rng.normal(scale=0.35 / np.sqrt(d), size=(M, d))
    popularity = 1.0 / np.arange(1, M + 1) ** cfg.popularity_exponent
    popularity = popularity[rng.permutation(M)]
    log_pop = np.log(popularity)
    item_bias = rng.normal(scale=0.3, size=M) + 0.1 * (log_pop - log_pop.mean()) / (log_pop.std() + 1e-9)

    # Per-cluster CDFs over items, concatenated with cluster c shifted to [c, c + 1], so that one
    # searchsorted draws for users of all clusters at once.
    weight = popularity[None, :] * np.where(item_cluster[None, :] == np.arange(C)[:, None], cfg.in_cluster_weight, 1.0)
    cdf = np.cumsum(weight, axis=1)  # (C, M)
    cdf = cdf / cdf[:, -1:] + np.arange(C)[:, None]
    cdf[:, -1] = np.arange(1, C + 1)  # exact upper edges
    world = _World(centroids, cluster_weights, item_cluster, item_latent, item_bias, cdf.ravel())

    item_ids = np.arange(1, M + 1, dtype=np.int64)
    primary = np.where(rng.random(M) < cfg.genre_signal, item_cluster, rng.integers(0, C, size=M))
    second = rng.integers(0, C, size=M)
    has_second = (rng.random(M) < 0.35) & (second != primary)
    genres = [[f"genre_{p}", f"genre_{s}"] if h else [f"genre_{p}"] for p, s, h in zip(primary, second, has_second)]
    items = pa.table({
        S.ITEM_ID: pa.array(item_ids),
        "genres": pa.array(genres, type=pa.list_(pa.string())),
        "year": pa.array(rng.integers(1950, 2025, size=M).astype(np.int64)),
    })
    truth_items = pa.table({S.ITEM_ID: pa.array(item_ids), "cluster": pa.array(item_cluster.astype(np.int64))})
    return world, items, truth_items


def _make_chunk(cfg: SynthConfig, w: _World, first_user: int, n: int, rng: np.random.Generator
                ) -> tuple[pa.Table, pa.Table, pa.Table]:
    C, M, d = cfg.n_clusters, cfg.n_items, cfg.latent_dim
    user_ids = np.arange(first_user + 1, first_user + n + 1, dtype=np.int64)
    cluster = rng.choice(C, size=n, p=w.cluster_weights)
    latent = w.centroids[cluster] + rng.normal(scale=0.35 / np.sqrt(d), size=(n, d))
    user_bias = rng.normal(scale=0.35, size=n)

    # history lengths: min + log-normal tail, capped
    extra = rng.lognormal(mean=np.log(cfg.median_extra_history), sigma=cfg.history_sigma, size=n)
    length = np.minimum(cfg.min_history + np.floor(extra).astype(np.int64), min(cfg.max_history, M))

    owner, item = _draw_histories(w, cluster, length, M, rng)

    # timestamps: a start per user, exponential gaps
    start = cfg.start_time + rng.random(n) * cfg.span_days * 0.7 * 86400
    gaps = rng.exponential(cfg.mean_gap_hours * 3600, size=owner.size)
    offsets = np.cumsum(gaps)                                                # (E,) across all users
    base = np.concatenate([[0.0], offsets])[np.searchsorted(owner, np.arange(n))]  # (n,) sum before each user
    ts = (start[owner] + offsets - base[owner]).astype(np.int64)

    columns = {S.USER_ID: pa.array(user_ids[owner]), S.ITEM_ID: pa.array(item.astype(np.int64) + 1)}
    if not cfg.implicit:
        aff = np.einsum("ij,ij->i", latent[owner], w.item_latent[item])    # (E,) <u, v_i>
        score = cfg.rating_mean + user_bias[owner] + w.item_bias[item] + cfg.affinity * aff
        score += rng.normal(scale=cfg.rating_noise, size=owner.size)
        step = cfg.rating_step
        columns[S.RATING] = pa.array(np.clip(np.rint(score / step) * step, step, 5).astype(np.float32))
    columns[S.TIMESTAMP] = pa.array(ts)
    interactions = pa.table(columns)

    # user features: occupation partly reveals the cluster; age and gender lean with it; region is noise
    occ_of_cluster = np.arange(C) % OCCUPATIONS
    occupation = np.where(rng.random(n) < cfg.user_feature_signal, occ_of_cluster[cluster],
                          rng.integers(0, OCCUPATIONS, size=n))
    age = np.clip(np.rint(22 + 4 * (cluster % 5) + rng.normal(scale=9, size=n)), 16, 80).astype(np.int64)
    p_female = 0.3 + 0.4 * (cluster % 2)
    gender = np.where(rng.random(n) < p_female, "F", "M")
    region = rng.integers(0, REGIONS, size=n)
    users = pa.table({
        S.USER_ID: pa.array(user_ids),
        "age": pa.array(age),
        "gender": pa.array(gender.tolist(), type=pa.string()),
        "occupation": pa.array([f"occ_{o}" for o in occupation], type=pa.string()),
        "region": pa.array([f"r{r}" for r in region], type=pa.string()),
    })
    truth = pa.table({S.USER_ID: pa.array(user_ids), "cluster": pa.array(cluster.astype(np.int64))})
    return interactions, users, truth


def _draw_histories(w: _World, cluster: np.ndarray, length: np.ndarray, M: int, rng: np.random.Generator,
                    max_rounds: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct items in draw (= time) order, ``length[u]`` of them where possible.

    Draws with replacement from the user's cluster CDF and keeps first occurrences; users left
    short by repeats are topped up in further rounds (heavy users near the size of their
    cluster's pool need them).
    """
    n = len(length)
    owner = np.zeros(0, dtype=np.int64)
    item = np.zeros(0, dtype=np.int64)
    need = length.copy()
    for _ in range(max_rounds):
        short = np.flatnonzero(need > 0)
        if short.size == 0:
            break
        draws = np.ceil(need[short] * 1.25).astype(np.int64) + 3
        new_owner = np.repeat(short, draws)                                  # (D,)
        new_item = np.searchsorted(w.cdf, cluster[new_owner] + rng.random(new_owner.size), side="right")
        new_item = np.minimum(new_item - cluster[new_owner] * M, M - 1)      # back to 0..M-1
        owner, item = np.concatenate([owner, new_owner]), np.concatenate([item, new_item])
        _, first = np.unique(owner * M + item, return_index=True)
        first.sort()                                                         # draw order
        first = first[np.argsort(owner[first], kind="stable")]               # grouped by user, draw order kept
        owner, item = owner[first], item[first]
        starts = np.searchsorted(owner, np.arange(n))
        rank = np.arange(owner.size) - starts[owner]                         # position within user
        keep = rank < length[owner]
        owner, item = owner[keep], item[keep]
        need = length - np.bincount(owner, minlength=n)
    return owner, item


def generate(cfg: SynthConfig, out: str | os.PathLike, overwrite: bool = False, progress: bool = False) -> Path:
    """Generate a dataset directory at ``out`` (atomically) and return its path."""
    root = np.random.SeedSequence(cfg.seed)
    world_seed, chunk_seed = root.spawn(2)
    world, items, truth_items = _make_world(cfg, np.random.default_rng(world_seed))
    n_chunks = -(-cfg.n_users // cfg.chunk_users)
    chunk_seeds = chunk_seed.spawn(n_chunks)

    inter_schema = S.interactions_schema(pa.int64(), pa.int64())
    if cfg.implicit:
        inter_schema = inter_schema.remove(inter_schema.get_field_index(S.RATING))
    bar = _progress(progress, cfg.n_users)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        pq.write_table(items.cast(S.side_schema(S.ITEM_ID, pa.int64(), list(items.schema))), tmp / S.ITEMS_FILE)
        pq.write_table(truth_items, tmp / TRUTH_ITEMS_FILE)
        writers = {}
        try:
            for c in range(n_chunks):
                first = c * cfg.chunk_users
                n = min(cfg.chunk_users, cfg.n_users - first)
                inter, users, truth = _make_chunk(cfg, world, first, n, np.random.default_rng(chunk_seeds[c]))
                users = users.cast(S.side_schema(S.USER_ID, pa.int64(), list(users.schema)))
                tables = [(S.INTERACTIONS_FILE, inter.cast(inter_schema)), (TRUTH_USERS_FILE, truth)]
                if cfg.user_features:
                    tables.append((S.USERS_FILE, users))
                for name, table in tables:
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(tmp / name, table.schema)
                    writers[name].write_table(table)
                bar.update(n)
        finally:
            for wr in writers.values():
                wr.close()
            bar.close()
    return Path(out)


def _progress(enabled: bool, total: int):
    from ..progress import progress

    return progress(total=total, unit="users", unit_scale=True, enabled=enabled, desc="synth")
