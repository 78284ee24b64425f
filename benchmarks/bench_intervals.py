"""Prediction intervals, measured: do the 50%, 80% and 90% intervals of `predict --interval` cover
new users' ratings as often as they say, at every k? And the scores' standard deviation
(`--score-std`) and the exploration built on it (`recommend --explore`), on the same users.

    python benchmarks/bench_intervals.py [--datasets ml-100k longtail]      # about 3 minutes

For each dataset: the cold-start protocol's seeded user split (seed 0); the hypernetwork fitted
on the training users (its validation users calibrate the intervals, nothing else does); then
the protocol's own measurement (what `evaluate` reports): every cold-test user with at least
20 + 10 ratings, given their k earliest ratings (k = 0, 1, 3, 5, 10, 20): the share of their other
ratings inside the interval (each rated pair counts once), and the interval's mean width; the
reliability figure of the first dataset goes to docs/. Target: within 3 points of nominal at
every k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchdata
from recsys_hyper.evaluation.protocol import Protocol
from recsys_hyper.evaluation.report import reliability_figure
from recsys_hyper.evaluation.runner import evaluate
from recsys_hyper.numerics.intervals import REPORTED as LEVELS

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "interval_reliability.png"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "longtail"])
    p.add_argument("--figure", type=Path, default=FIGURE,
                   help="where the reliability figure of the first dataset goes (default: %(default)s)")
    args = p.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.datasets):
            t0 = time.perf_counter()
            ds = benchdata.dataset(name, Path(tmp))
            split, model = benchdata.fitted_on_split(ds)
            # the cold-start protocol's own measurement (what `evaluate` reports and logs)
            r = evaluate(ds, Protocol(seed=0), methods=("hyper", "hyper-ucb", "hyper-thompson"), split=split,
                         fitted={"hyper": model}, progress=False)
            c = r.coverage.set_index(["k", "level"])
            shots = sorted(r.coverage["k"].unique())
            worst = max(abs(c.at[(k, lv), "covered"] - lv) for k in shots for lv in LEVELS)
            lines += [f"**{name}**: {r.n_eligible} cold-test users, {int(c['pairs'].max()):,} rated query pairs at "
                      f"k = 0; fitted and measured in {time.perf_counter() - t0:.0f} s; calibrated on "
                      f"{sum(model.intervals_.pairs):,} validation pairs; largest miss {100 * worst:.1f} points", "",
                      "| k | covered, 50% | 80% | 90% | mean width, 50% | 80% | 90% | predictive std |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for k in shots:
                std = float(model.intervals_.lookup([k], 0.9)[1][0])
                lines.append(f"| {k} | " + " | ".join(f"{100 * c.at[(k, lv), 'covered']:.1f}%" for lv in LEVELS)
                             + " | " + " | ".join(f"{c.at[(k, lv), 'mean_width']:.2f}" for lv in LEVELS)
                             + f" | {std:.3f} |")
            lines.append("")
            lines += score_std_table(ds, r, model) + exploration_table(r)
            if i == 0 and args.figure:
                fig = reliability_figure(r.coverage)
                fig.suptitle(f"Prediction intervals of new users, {name} (cold-start protocol, seed 0)")
                fig.tight_layout()
                fig.savefig(args.figure, dpi=100)
                lines.append(f"![interval reliability]({args.figure.relative_to(FIGURE.parents[1])})"
                             if args.figure.is_relative_to(FIGURE.parents[1]) else f"figure -> {args.figure}")
                lines.append("")
            print("\n".join(lines[-12:]), file=sys.stderr, flush=True)
    print("\n".join(lines))


def exploration_table(r) -> list[str]:
    """nDCG@10 and the share of the catalogue in some user's top 10, ranking plainly and with
    ``recommend --explore`` (weight 1), on the same users and episodes."""
    t = r.table.set_index(["method", "k"])
    methods = ("hyper", "hyper-ucb", "hyper-thompson")
    lines = ["Exploration (`recommend --explore`, weight 1): nDCG@10 / share of the catalogue in some user's top 10",
             "", "| k | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for k in r.protocol.shots:
        lines.append(f"| {k} | " + " | ".join(f"{t.at[(m, k), 'ndcg@10']:.4f} / {t.at[(m, k), 'catalogue@10']:.3f}"
                                              for m in methods) + " |")
    return lines + [""]


def score_std_table(ds, r, model) -> list[str]:
    """The scores' standard deviation (``recommend --score-std``) on the same users and episodes:
    its mean, how well ``noise + std^2`` matches the squared rating errors (1 = calibrated), and the
    RMSE of the pairs it is least / most sure of (lowest / highest third)."""
    from recsys_hyper.data.episodes import chronological_split

    lines = [f"Score standard deviation (noise variance fitted on validation users: {model.intervals_.noise_var:.3f})",
             "", "| k | mean score_std | mean error^2 / (noise + std^2) | RMSE, surest third | RMSE, least sure third |",
             "|---:|---:|---:|---:|---:|"]
    for k in r.protocol.shots:
        sup, qry = chronological_split(r.test_histories, k, min_query=r.protocol.min_query)
        support, query = sup.frame(r.item_ids), qry.frame(r.item_ids)
        pairs = query[["user_id", "item_id"]]
        sd = model.score_std(support, pairs, users=ds.users).astype(np.float64)
        err = model.predict(support, pairs, users=ds.users) - query["rating"].to_numpy()
        low, high = sd <= np.quantile(sd, 1 / 3), sd >= np.quantile(sd, 2 / 3)
        lines.append(f"| {k} | {sd.mean():.3f} | {np.mean(err ** 2 / (model.intervals_.noise_var + sd ** 2)):.3f} | "
                     f"{np.sqrt(np.mean(err[low] ** 2)):.3f} | {np.sqrt(np.mean(err[high] ** 2)):.3f} |")
    return lines + [""]


if __name__ == "__main__":
    main()
