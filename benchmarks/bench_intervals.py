"""Prediction intervals, measured: do the 50%, 80% and 90% intervals of `predict --interval` cover
new users' ratings as often as they say, at every k?

    python benchmarks/bench_intervals.py [--datasets ml-100k longtail]      # about 3 minutes

For each dataset: the cold-start protocol's seeded user split (seed 0); the hypernetwork fitted
on the training users (its validation users calibrate the intervals, nothing else does); then
every cold-test user with at least 20 + 10 ratings, given their k earliest ratings (k = 0, 1, 3,
5, 10, 20): the share of their other ratings inside the interval (each rated pair counts once),
and the interval's mean width. Target: within 3 points of nominal at every k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import benchdata
from recsys_hyper.evaluation.protocol import TEST

SHOTS = (0, 1, 3, 5, 10, 20)
LEVELS = (0.5, 0.8, 0.9)
MIN_QUERY = 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "longtail"])
    args = p.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            t0 = time.perf_counter()
            ds = benchdata.dataset(name, Path(tmp))
            split, model = benchdata.fitted_on_split(ds)
            test = ds.interactions[ds.interactions["user_id"].isin(split.users(TEST))]
            test = test.sort_values(["user_id", "timestamp"], kind="stable")
            test = test[test.groupby("user_id")["item_id"].transform("size") >= max(SHOTS) + MIN_QUERY]
            rows = []
            for k in SHOTS:
                support = test.groupby("user_id").head(k)
                query = test.drop(support.index)
                actual = query["rating"].to_numpy()
                row = {"k": k}
                for level in LEVELS:
                    out = model.predict_interval(support, query[["user_id", "item_id"]], level=level, users=ds.users)
                    inside = (out["lower"].to_numpy() <= actual + 1e-6) & (actual <= out["upper"].to_numpy() + 1e-6)
                    row[f"{level:.0%}"] = inside.mean()
                    row[f"width {level:.0%}"] = float((out["upper"] - out["lower"]).mean())
                row["std"] = float(out["std"].mean())
                rows.append(row)
            t = pd.DataFrame(rows)
            worst = max(abs(t[f"{lv:.0%}"] - lv).max() for lv in LEVELS)
            lines += [f"**{name}**: {test['user_id'].nunique()} cold-test users, {len(test):,} ratings; fitted and "
                      f"measured in {time.perf_counter() - t0:.0f} s; calibrated on "
                      f"{sum(model.intervals_.pairs):,} validation pairs; largest miss {100 * worst:.1f} points", "",
                      "| k | covered, 50% | 80% | 90% | mean width, 50% | 80% | 90% | predictive std |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                lines.append(f"| {r['k']} | " + " | ".join(f"{100 * r[f'{lv:.0%}']:.1f}%" for lv in LEVELS) + " | "
                             + " | ".join(f"{r[f'width {lv:.0%}']:.2f}" for lv in LEVELS) + f" | {r['std']:.3f} |")
            lines.append("")
            print("\n".join(lines[-10:]), file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
