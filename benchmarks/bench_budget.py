"""Quality against the training budget: does a step budget (what the nightly trains under at
scale) or a sampled softmax (what large catalogues train with) cost quality?

    python benchmarks/bench_budget.py [--budgets 100,300,1000,3000] [--synth-users 20000]

Every run is ``recsys-hyper train`` in its own process with the default configuration but for
``--max-steps`` (and, for the sampled rows, a config file lowering ``full_softmax_items`` so that
the ranking loss is the sampled softmax with log-Q correction: ``--negatives`` items drawn by
popularity^0.75 each step, 2,048 by default as in the default configuration). The figures are the training run's own validation figures at its best epoch
(validation users only: MAE and full-catalogue nDCG@10, means over k = 0, 1, 3, 5, 10, 20),
so nothing here looks at test users. "full" is no budget: every epoch passes over every
training user, early stopping decides when to end.

Datasets: MovieLens 100K (imported from ``../shared/data/ml-100k``, read in place) and the
synthetic ``scale`` preset (10,000 items). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scoring import CLI, run_measured, synth_scale  # noqa: E402

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def train(data: Path, out: Path, budget: int | None, config: Path | None) -> dict:
    """One training run: its best epoch's validation figures, steps, time and throughput."""
    args = CLI + ["train", "--data", str(data), "--out", str(out), "--no-track", "--no-progress"]
    args += ["--max-steps", str(budget)] if budget else []
    args += ["--config", str(config)] if config else []
    wall, _ = run_measured(args)
    t = json.loads((out / "model.json").read_text())["training"]
    best = t["history"][t["best_epoch"]]
    shutil.rmtree(out)
    return {"mae": best["val_mae"], "ndcg": best["val_ndcg10"], "steps": t["steps"], "wall": wall,
            "eps": t["episodes"] / t["step_seconds"] if t["step_seconds"] else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="100,300,1000,3000", help="comma-separated step budgets (plus no budget)")
    p.add_argument("--synth-users", type=int, default=20_000)
    p.add_argument("--synth-items", type=int, default=10_000)
    p.add_argument("--negatives", type=int, default=2048, help="negatives of the sampled softmax")
    p.add_argument("--ml100k", type=Path, default=ML100K)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")] + [None]

    work = Path(tempfile.mkdtemp(prefix="bench-budget-", dir=args.workdir))
    tables = {}
    try:
        sampled = work / "sampled.json"
        # every catalogue above 1 item: the sampled softmax
        sampled.write_text(json.dumps({"train": {"full_softmax_items": 1, "negatives": args.negatives}}))
        ml = work / "ml-100k"
        run_measured(CLI + ["data", "import-movielens", str(args.ml100k), "--out", str(ml)])
        synth = work / "synthetic"
        synth_scale(synth, args.synth_users, args.synth_items)
        for name, data, variants in (("ML-100K", ml, (("full softmax", None),)),
                                     (f"synthetic {args.synth_users:,} x {args.synth_items:,}", synth,
                                      (("full softmax", None), (f"sampled softmax, {args.negatives:,} negatives",
                                                                 sampled)))):
            rows = tables.setdefault(name, [])
            for budget in budgets:
                for label, config in variants:
                    r = train(data, work / "model", budget, config)
                    rows.append((budget, label, r))
                    print(f"{name} {budget or 'full'} {label}: {r}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"64 users a step; validation users' figures at the best epoch\n")
    for name, rows in tables.items():
        print(f"| {name}: step budget | ranking loss | steps taken | validation MAE | validation nDCG@10 | "
              f"episodes/s | wall time (s) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for budget, label, r in rows:
            print(f"| {f'{budget:,}' if budget else 'none (full passes, early stopping)'} | {label} | "
                  f"{r['steps']:,} | {r['mae']:.4f} | {r['ndcg']:.4f} | {r['eps']:,.0f} | {r['wall']:.0f} |")
        print()


if __name__ == "__main__":
    main()
