"""The robustness suite: the cold-start protocol on several datasets and split seeds, every method,
and paired bootstrap intervals of the hypernetwork minus the best baseline.

Datasets: first, the path a user takes (``ml-100k-user-path``): MovieLens 100K, users 80 / 20,
the model trained by ``recsys-hyper train`` (a subprocess, on a folder holding every training
user's ratings, the model choosing its own validation users among them), then loaded and measured
on the held-out users' first k ratings; every baseline fitted on the same training users (what
the closed-form ones tune, cross-fitted over them). Then MovieLens 100K (three split seeds), the
same without user features, the same with item ids only (no features at all), a synthetic set
shaped like a small real catalogue (a few hundred users, ~10k items with a long tail, half-star
ratings, no user features), and synthetic implicit feedback, each with the protocol's validation
users handed to every method; ``ml-100k-cli`` (the first ML-100K split) fits the model in process
on all its training users, as ``train`` does. Test users decide nothing. For each (dataset, k,
metric) the best baseline is the one with the best mean on the test users, and the interval is a
paired bootstrap over those users of (hypernetwork - best).

Prints Markdown tables (and writes them, with every number, to --out):

    python benchmarks/bench_quality.py                      # the whole suite (~10 min on 2 cores)
    python benchmarks/bench_quality.py --datasets ml-100k   # one dataset
    python benchmarks/bench_quality.py --append --datasets synthetic-implicit   # re-run one, keep the rest
    python benchmarks/bench_quality.py --report             # the tables again from --out
    python benchmarks/bench_quality.py --baselines-from artifacts/bench_quality   # re-measure the model only

Every run's per-user results are kept in --out (per_user/), so that the model alone can be measured
again against the same baselines on the same splits and users (``--baselines-from``): the baselines
do not depend on the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_hyper.config import load_config
from recsys_hyper.data import Dataset, load_dataset
from recsys_hyper.data.movielens import read_movielens
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.evaluation.protocol import Protocol
from recsys_hyper.evaluation.runner import evaluate

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
BASELINES = ("popularity", "item-mean", "bias", "mf", "mf-features", "ease", "melu")
MODEL = "hyper"
SHOTS = (0, 1, 3, 5, 10, 20)
#: metric -> True when lower is better
METRICS = {"mae": True, "rmse": True, "ndcg@10": False, "recall@10": False, "t-recall@10": False}
#: not compared on implicit feedback, where every event's "rating" is 1 and a model's score is not one
RATING_METRICS = ("mae", "rmse")
BOOTSTRAP = 2000
#: a difference below this is the model reproducing a baseline (float32 predictions), so level
LEVEL = 1e-6
#: nDCG@10 is to be this share above the best baseline at these k
AHEAD_BY, AHEAD_AT = 0.05, (1, 3, 5)
#: configurations whose model is fitted as `train` fits it (choosing its own validation users)
OWN_VALIDATION = {"ml-100k-cli": (MODEL,), "ml-100k-user-path": (*BASELINES, MODEL)}
#: configurations whose model is trained through the command line
THROUGH_THE_CLI = ("ml-100k-user-path",)
#: configurations on another one's split, whose baselines are that one's (--baselines-from)
BASELINES_OF = {"ml-100k-cli": "ml-100k"}


def datasets(names: list[str], work: Path) -> list[tuple[str, int, Dataset]]:
    """(name, split seed, dataset) for every run of the suite."""
    out = []
    if any(n.startswith("ml-100k") for n in names):
        if not (ML100K / "u.data").is_file():
            sys.exit(f"MovieLens 100K is not at {ML100K}")
        ml = read_movielens(ML100K)
    if "ml-100k-user-path" in names:
        out.append(("ml-100k-user-path", 0, ml))
    if "ml-100k" in names:
        out += [("ml-100k", seed, ml) for seed in (0, 1, 2)]
    if "ml-100k-cli" in names:
        out.append(("ml-100k-cli", 0, ml))
    if "ml-100k-no-user-features" in names:
        out.append(("ml-100k-no-user-features", 0, Dataset(ml.interactions, None, ml.items, source=ml.source)))
    if "ml-100k-ids-only" in names:
        out.append(("ml-100k-ids-only", 0, Dataset(ml.interactions, None, None, source=ml.source)))
    if "synthetic-longtail" in names:
        generate(preset("longtail", seed=1), work / "longtail", overwrite=True)
        out.append(("synthetic-longtail", 0, load_dataset(work / "longtail")))
    if "synthetic-implicit" in names:
        generate(preset("default", n_users=1500, seed=2, implicit=True), work / "implicit", overwrite=True)
        out.append(("synthetic-implicit", 0, load_dataset(work / "implicit")))
    return out


def paired_interval(per_user: pd.DataFrame, k: int, metric: str, other: str, rng: np.random.Generator):
    """Mean and 95% bootstrap interval over users of (model - other) at ``k``."""
    a = per_user[(per_user["method"] == MODEL) & (per_user["k"] == k)].set_index("user_id")[metric]
    b = per_user[(per_user["method"] == other) & (per_user["k"] == k)].set_index("user_id")[metric]
    d = (a - b.reindex(a.index)).dropna().to_numpy()
    if d.size == 0:
        return np.nan, np.nan, np.nan
    boots = d[rng.integers(0, d.size, size=(BOOTSTRAP, d.size))].mean(1)
    return float(d.mean()), *np.percentile(boots, [2.5, 97.5]).tolist()


def compare(name: str, seed: int, result, rng, implicit: bool = False) -> list[dict]:
    rows = []
    t = result.table
    for k in result.protocol.shots:
        at_k = t[t["k"] == k].set_index("method")
        for metric, lower in METRICS.items():
            if implicit and metric in RATING_METRICS:
                continue
            if metric not in at_k or at_k[metric].isna().all() or MODEL not in at_k.index:
                continue
            base = at_k.loc[[m for m in BASELINES if m in at_k.index], metric].dropna()
            best = base.idxmin() if lower else base.idxmax()
            diff, lo, hi = paired_interval(result.per_user, k, metric, best, rng)
            better = -diff if lower else diff
            if (lower and hi < 0) or (not lower and lo > 0):
                verdict = "win"
            elif (lower and lo > 0) or (not lower and hi < 0):
                verdict = "loss"
            else:
                verdict = "tie"
            rows.append({"dataset": name, "seed": seed, "k": k, "metric": metric, "model": at_k.loc[MODEL, metric],
                         "best_baseline": best, "baseline": base[best], "diff": diff, "lo": lo, "hi": hi,
                         "better_by": better, "verdict": verdict})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k-user-path", "ml-100k", "ml-100k-cli",
                                                     "ml-100k-no-user-features",
                                                     "ml-100k-ids-only", "synthetic-longtail", "synthetic-implicit"])
    p.add_argument("--methods", nargs="+", default=[*BASELINES, MODEL])
    p.add_argument("--out", default="artifacts/bench_quality", help="where the tables and raw results go")
    p.add_argument("--config", help="the hypernetwork's config (TOML / YAML / JSON, as for train); default: defaults")
    p.add_argument("--report", action="store_true",
                   help="only print (and rewrite) the tables from the results already in --out")
    p.add_argument("--append", action="store_true",
                   help="keep the runs already in --out for datasets not named here (resume a suite piecewise)")
    p.add_argument("--baselines-from", metavar="DIR",
                   help="evaluate the model only, and compare it with the baselines' per-user results of an "
                        "earlier suite in DIR (the same splits and users)")
    args = p.parse_args()
    model_config = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    comparisons, tables, tuning = [], [], {}
    if args.report:
        args.datasets, args.append = [], True
    if args.append and (out / "comparisons.csv").is_file():
        keep = lambda f: f[~f["dataset"].isin(args.datasets)]  # noqa: E731
        comparisons = keep(pd.read_csv(out / "comparisons.csv")).to_dict("records")
        tables = [keep(pd.read_csv(out / "results.csv"))]
        tuning = {run: v for run, v in json.loads((out / "tuning.json").read_text()).items()
                  if run.rsplit(" seed ", 1)[0] not in args.datasets}
    methods = (MODEL,) if args.baselines_from else tuple(args.methods)
    (out / "per_user").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed, ds in datasets(args.datasets, Path(tmp)):
            t0 = time.perf_counter()
            protocol = Protocol(shots=SHOTS, seed=seed)
            fitted = trained_through_the_cli(ds, protocol, Path(tmp) / name, args.config) if name in THROUGH_THE_CLI \
                else None
            result = evaluate(ds, protocol, methods=methods, model_config=model_config, progress=False,
                              own_validation=OWN_VALIDATION.get(name, ()), fitted=fitted)
            if args.baselines_from:
                with_baselines(result, Path(args.baselines_from), name, seed)
            result.per_user.to_parquet(out / "per_user" / f"{name}-seed{seed}.parquet", index=False)
            print(f"{name} seed {seed}: {result.n_eligible} of {result.n_test_users} test users evaluated, "
                  f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
            tables.append(result.table.assign(dataset=name, seed=seed))
            tuning[f"{name} seed {seed}"] = {m: ({kk: vv for kk, vv in t.items() if kk != "scores"} if t else None)
                                             for m, t in result.tuning.items()}
            comparisons += compare(name, seed, result, rng, implicit=ds.implicit)
            pd.DataFrame(comparisons).to_csv(out / "comparisons.csv", index=False)
            pd.concat(tables).to_csv(out / "results.csv", index=False)
            (out / "tuning.json").write_text(json.dumps(tuning, indent=2, default=float))
    cmp = pd.DataFrame(comparisons)
    text = [summary_table(cmp), "", targets_table(cmp), "", by_k_table(cmp, "mae"), "", by_k_table(cmp, "ndcg@10"),
            "", detail_table(cmp), "", tuning_table(tuning)]
    (out / "suite.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def trained_through_the_cli(ds: Dataset, protocol: Protocol, work: Path, config: str | None) -> dict:
    """``recsys-hyper train --data DIR --out MODEL --seed 0`` in a subprocess on a folder holding
    every training user of the protocol's split (its training and validation users: the model picks
    its own validation users among them), then the model loaded: ``{"hyper": model}``."""
    import subprocess

    from recsys_hyper import HyperRecommender
    from recsys_hyper.data.dataset import write_dataset
    from recsys_hyper.evaluation.protocol import split_users, training_dataset

    data = write_dataset(training_dataset(ds, split_users(ds, protocol)), work / "train", overwrite=True)
    command = [sys.executable, "-m", "recsys_hyper", "train", "--data", str(data), "--out", str(work / "model"),
               "--seed", "0", "--no-track", "--no-progress"] + (["--config", config] if config else [])
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {MODEL: HyperRecommender.load(work / "model")}


def with_baselines(result, earlier: Path, name: str, seed: int) -> None:
    """Add an earlier suite's baselines (their per-user rows and means, on the same split) to a
    result that measured the model only."""
    if not (earlier / "per_user" / f"{name}-seed{seed}.parquet").is_file() and name in BASELINES_OF:
        name = BASELINES_OF[name]                    # the same split: the same baselines
    per_user = pd.read_parquet(earlier / "per_user" / f"{name}-seed{seed}.parquet")
    per_user = per_user[per_user["method"] != MODEL]
    table = pd.read_csv(earlier / "results.csv")
    table = table[(table["dataset"] == name) & (table["seed"] == seed) & (table["method"] != MODEL)]
    result.per_user = pd.concat([per_user, result.per_user], ignore_index=True)
    result.table = pd.concat([table.drop(columns=["dataset", "seed"]), result.table], ignore_index=True)
    if earlier.joinpath("tuning.json").is_file():
        tuned = json.loads((earlier / "tuning.json").read_text()).get(f"{name} seed {seed}", {})
        result.fitted.update({m: _Tuned(t) for m, t in tuned.items() if m != MODEL})


class _Tuned:
    """An earlier run's record of what a baseline chose (for the tuning table)."""

    def __init__(self, tuning):
        self.tuning_ = tuning


def summary_table(cmp: pd.DataFrame) -> str:
    """Wins / ties / losses of the model against the best baseline, per dataset and metric (k >= 1)."""
    c = cmp[cmp["k"] >= 1]
    lines = ["| dataset | metric | win | tie | loss | mean (model - best) |", "|---|---|---:|---:|---:|---:|"]
    for (name, metric), g in c.groupby(["dataset", "metric"], sort=False):
        v = g["verdict"].value_counts()
        lines.append(f"| {name} | {metric} | {v.get('win', 0)} | {v.get('tie', 0)} | {v.get('loss', 0)} | "
                     f"{g['diff'].mean():+.4f} |")
    return "\n".join(lines)


def targets_table(cmp: pd.DataFrame) -> str:
    """Every cell (run, k = 0..20) per metric against the targets: significant losses, the share of
    cells whose point estimate is at least the best baseline's (a difference under ``LEVEL``, the
    model reproducing that baseline, counts as level), and for nDCG@10 the cells at ``AHEAD_AT``
    at least ``AHEAD_BY`` above the best baseline, with the ones that are not."""
    lines = ["| metric | cells | significant losses | point estimate >= best baseline | "
             f"nDCG@10 >= {AHEAD_BY:.0%} above it at k = {', '.join(map(str, AHEAD_AT))} |", "|---|---:|---:|---:|---|"]
    for metric in ("mae", "ndcg@10"):
        c = cmp[cmp["metric"] == metric]
        if c.empty:
            continue
        level = (c["better_by"] > -LEVEL).sum()
        ahead = ""
        if metric == "ndcg@10":
            at = c[c["k"].isin(AHEAD_AT)]
            share = at["diff"] / at["baseline"]
            misses = at[share < AHEAD_BY]
            ahead = f"{len(at) - len(misses)} of {len(at)}" + "".join(
                f"; {r.dataset} (seed {r.seed}) k = {r.k}: {100 * r.diff / r.baseline:+.1f}%" for r in misses.itertuples())
        lines.append(f"| {metric} | {len(c)} | {(c['verdict'] == 'loss').sum()} | {level} ({level / len(c):.0%}) | "
                     f"{ahead} |")
    return "\n".join(lines)


def by_k_table(cmp: pd.DataFrame, metric: str) -> str:
    """(model - best baseline) for one metric, a row per run and a column per k; the verdict
    (the paired 95% interval excludes 0) in bold for a win, in italics for a loss."""
    c = cmp[cmp["metric"] == metric]
    shots = sorted(c["k"].unique())
    lines = [f"| {metric}: model - best baseline | " + " | ".join(f"k = {k}" for k in shots) + " |",
             "|---|" + "---:|" * len(shots)]
    for (name, seed), g in c.groupby(["dataset", "seed"], sort=False):
        g = g.set_index("k")
        cells = []
        for k in shots:
            if k not in g.index:
                cells.append("")
                continue
            r = g.loc[k]
            text = f"{r['diff']:+.4f}"
            cells.append(f"**{text}**" if r["verdict"] == "win" else f"*{text} loss*" if r["verdict"] == "loss" else text)
        lines.append(f"| {name} (seed {seed}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(cmp: pd.DataFrame) -> str:
    lines = ["| dataset | seed | k | metric | hyper | best baseline | (hyper - best) [95% CI] | |",
             "|---|---:|---:|---|---:|---|---|---|"]
    for r in cmp.itertuples():
        lines.append(f"| {r.dataset} | {r.seed} | {r.k} | {r.metric} | {r.model:.4f} | {r.best_baseline} "
                     f"{r.baseline:.4f} | {r.diff:+.4f} [{r.lo:+.4f}, {r.hi:+.4f}] | {r.verdict} |")
    return "\n".join(lines)


def tuning_table(tuning: dict) -> str:
    lines = ["| run | method | chosen on validation users | grid |", "|---|---|---|---|"]
    for run, methods in tuning.items():
        for m, t in methods.items():
            if t:
                grid = "; ".join(f"{k}: {', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}"
                                 for k, v in t["grid"].items())
                lines.append(f"| {run} | {m} | {t['chosen']} ({t['metric']} {t['score']:.4f}) | {grid} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
