"""Model benchmarks: meta-training on MovieLens 100K to early stop, and head emission speed.

    python benchmarks/bench_model.py [--users 20000] [--history 20]

Prints a Markdown table. Meta-training uses the default config (no MLflow), on ML-100K read in
place from ../shared/data/ml-100k. Head emission times ``HyperRecommender.adapt`` end to end
(a pandas frame of histories in, heads out) for users with exactly ``--history`` events.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_hyper.data.movielens import read_movielens
from recsys_hyper import HyperRecommender

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20_000, help="users for the emission benchmark")
    p.add_argument("--history", type=int, default=20, help="events per user for the emission benchmark")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not (ML100K / "u.data").is_file():
        raise SystemExit(f"MovieLens 100K is not at {ML100K}")

    ds = read_movielens(ML100K)
    t0 = time.perf_counter()
    rec = HyperRecommender().fit(ds, progress=False)
    train_s = time.perf_counter() - t0
    best = rec.training_.history[rec.training_.best_epoch]

    rng = np.random.default_rng(0)
    items = rec.item_map_.values
    n, k = args.users, args.history
    hist = pd.DataFrame({
        "user_id": np.repeat(np.arange(n, dtype=np.int64) + 10**6, k),
        "item_id": np.concatenate([rng.choice(items, size=k, replace=False) for _ in range(n)]),
        "rating": rng.integers(1, 6, size=n * k).astype(np.float32),
        "timestamp": np.tile(np.arange(k, dtype=np.int64), n) + 890_000_000,
    })
    rec.adapt(hist.head(50 * k))  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        heads = rec.adapt(hist)
        times.append(time.perf_counter() - t0)
    assert len(heads) == n
    emit_s = min(times)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"Python {sys.version.split()[0]}\n")
    print("| benchmark | result | target |")
    print("|---|---|---|")
    print(f"| meta-training on ML-100K to early stop | {train_s:.1f} s, {len(rec.training_.history)} epochs "
          f"(best {rec.training_.best_epoch + 1}), {rec.n_train_users_} train / {rec.n_val_users_} validation users "
          f"| < 120 s |")
    print(f"| validation MAE (mean over k = 0, 1, 3, 5, 10, 20) | {best['val_mae']:.4f} | |")
    print(f"| validation nDCG@10, full catalogue (mean over k) | {best['val_ndcg10']:.4f} | |")
    print("| validation MAE at k = 0 / 5 / 20 | "
          f"{best['val_mae_k0']:.4f} / {best['val_mae_k5']:.4f} / {best['val_mae_k20']:.4f} | |")
    print("| validation nDCG@10 at k = 0 / 5 / 20 | "
          f"{best['val_ndcg10_k0']:.4f} / {best['val_ndcg10_k5']:.4f} / {best['val_ndcg10_k20']:.4f} | |")
    print(f"| head emission, {k}-event histories ({n:,} users, best of {args.repeats}) | "
          f"{n / emit_s:,.0f} users/s | >= 5,000 users/s |")


if __name__ == "__main__":
    main()
