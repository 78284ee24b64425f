"""The ``recsys-hyper`` command line.

Every command validates its input before any work, prints progress on long work, and on bad
input prints one clear error (file, column, rows, examples, fix) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .errors import RecsysHyperError

log = logging.getLogger("recsys_hyper")

EPILOG = """\
examples:
  recsys-hyper data synth --preset default --out data/default
  recsys-hyper data import-movielens ../shared/data/ml-100k --out data/ml-100k
  recsys-hyper data validate data/ml-100k
  recsys-hyper data describe data/ml-100k
  recsys-hyper train --data data/ml-100k --out models/ml-100k
  recsys-hyper recommend --model models/ml-100k --data new_users/ --top-k 10 --out recs.parquet
  recsys-hyper recommend --model models:/recsys-hyper@champion --data new_users/ --top-k 10 --out recs.parquet

A dataset directory holds interactions.parquet (user_id, item_id, rating, timestamp) and
optionally users.parquet and items.parquet; see the README's data contract.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsys-hyper",
        description="Personalised recommendation with a hypernetwork: each user's scoring head is emitted "
                    "from their interaction history in one forward pass.",
        epilog=EPILOG, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="create, import, validate and describe datasets",
                          description="Create, import, validate and describe dataset directories.",
                          formatter_class=_Formatter)
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    v = dsub.add_parser("validate", formatter_class=_Formatter,
                        help="check a dataset directory against the data contract",
                        description="Check a dataset directory against the data contract. Prints every problem "
                                    "(file, column, rows, examples, fix) and exits 2 if there is any; repairs that "
                                    "validation makes on load (duplicate events dropped, latest kept) are reported.")
    v.add_argument("dir", metavar="DIR", help="dataset directory")
    v.add_argument("--out", metavar="CLEAN_DIR",
                   help="also write the validated dataset here (types normalised, duplicates dropped); "
                        "nothing is written if validation fails")
    v.add_argument("--overwrite", action="store_true", help="replace CLEAN_DIR if it exists")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=cmd_validate)

    d = dsub.add_parser("describe", formatter_class=_Formatter,
                        help="summarise a dataset: counts, history lengths, ratings, features",
                        description="Validate a dataset directory and print its summary: counts, density, "
                                    "history-length and item-popularity quantiles, rating distribution, time range "
                                    "and side features.")
    d.add_argument("dir", metavar="DIR", help="dataset directory")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.set_defaults(func=cmd_describe)

    from .data.synthetic import PRESETS

    s = dsub.add_parser("synth", formatter_class=_Formatter,
                        help="generate a synthetic dataset with known taste clusters",
                        description="Generate a synthetic dataset with known latent structure: taste clusters, "
                                    "long-tailed item popularity, item features that carry signal, user features "
                                    "that partly do, long-tailed history lengths, timestamps and 1..5 ratings (or "
                                    "implicit events). Each user's and item's cluster is written beside it "
                                    "(ground_truth_*.parquet). Streams to Parquet in row groups, so memory stays "
                                    "bounded at any number of users. Presets: "
                                    + ", ".join(f"{k} ({c.n_users:,} users x {c.n_items:,} items)"
                                                for k, c in PRESETS.items()) + ".")
    s.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    s.add_argument("--preset", choices=sorted(PRESETS), default="default", help="base configuration")
    s.add_argument("--users", type=_positive_int, metavar="N", help="number of users (overrides the preset)")
    s.add_argument("--items", type=_positive_int, metavar="M", help="number of items (overrides the preset)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the output is a function of it")
    s.add_argument("--implicit", action="store_true", help="implicit feedback: no rating column")
    s.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=cmd_synth)

    m = dsub.add_parser("import-movielens", formatter_class=_Formatter,
                        help="convert MovieLens 100K / 1M / latest into a dataset directory",
                        description="Convert a MovieLens folder into a dataset directory. The variant is "
                                    "detected from its files: 100K (u.data, u.user, u.item), 1M (ratings.dat, "
                                    "users.dat, movies.dat) or latest (ratings.csv, movies.csv). Users get age, "
                                    "gender, occupation and zip prefix where present; items get title, genres "
                                    "(list of strings) and year. The result is validated before anything is "
                                    "written, and written atomically.")
    m.add_argument("src", metavar="SRC", help="folder holding the MovieLens files")
    m.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    m.add_argument("--variant", choices=["auto", "100k", "1m", "latest"], default="auto",
                   help="force a variant instead of detecting it")
    m.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    m.set_defaults(func=cmd_import_movielens)

    model_help = ("a model directory (the --out of `train`) or an MLflow model URI such as "
                  "models:/recsys-hyper@champion (store: $MLFLOW_TRACKING_URI, default sqlite:///mlflow.db)")
    t = sub.add_parser("train", formatter_class=_Formatter, help="meta-train the hypernetwork on a dataset",
                       description="Meta-train the hypernetwork recommender on a dataset directory: every user is a "
                                   "task, with support sets of every size 0..k_max taken the way new users arrive "
                                   "(their earliest events). A seeded share of the users is held out to decide early "
                                   "stopping and to calibrate the prior strength. A checkpoint is written after every "
                                   "epoch (in a hidden sibling of --out) so that --resume continues a killed run to the "
                                   "same weights. The run is tracked in MLflow (params, per-epoch metrics, dataset "
                                   "digest, system metrics) and the model is registered as 'recsys-hyper' with the "
                                   "alias 'challenger'.")
    t.add_argument("--data", required=True, metavar="DIR", help="training dataset directory")
    t.add_argument("--out", required=True, metavar="MODEL_DIR", help="where to write the model (replaced atomically)")
    t.add_argument("--config", metavar="FILE", help="TOML / YAML / JSON with [model] and [train] sections")
    t.add_argument("--seed", type=int, help="random seed (overrides the config; default 0)")
    t.add_argument("--epochs", type=_positive_int, help="maximum epochs (overrides the config; default 40)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    t.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    t.add_argument("--no-register", action="store_true", help="log to MLflow but do not register the model")
    t.add_argument("--experiment", default="recsys-hyper-training", help="MLflow experiment name")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("recommend", formatter_class=_Formatter, help="top-K items for every user of a dataset",
                       description="Recommend the top K items to every user of DIR: the users of interactions.parquet "
                                   "(their histories; users never seen in training included) and those listed only in "
                                   "users.parquet (no history: they get the population head's items). Items in a "
                                   "user's history are excluded. Items the model has never seen are scored from "
                                   "items.parquet features when DIR has them. Output: user_id, item_id, score, rank "
                                   "(1 = best), written atomically.")
    r.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    r.add_argument("--data", required=True, metavar="DIR", help="dataset directory holding the histories")
    r.add_argument("--top-k", type=_positive_int, default=10, metavar="K", help="items per user")
    r.add_argument("--out", required=True, metavar="RECS.parquet", help="output Parquet file")
    r.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    r.set_defaults(func=cmd_recommend)

    pr = sub.add_parser("predict", formatter_class=_Formatter, help="predicted ratings for (user, item) pairs",
                        description="Predict ratings (explicit data, on the training rating scale) or relevance "
                                    "scores (implicit data) for the (user_id, item_id) rows of PAIRS, each user's head "
                                    "built from their history in DIR (possibly empty). Output: PAIRS' columns plus "
                                    "'prediction'; items the model cannot score get NaN and a warning.")
    pr.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    pr.add_argument("--data", required=True, metavar="DIR", help="dataset directory holding the histories")
    pr.add_argument("--pairs", required=True, metavar="PAIRS.parquet", help="Parquet file with user_id, item_id")
    pr.add_argument("--out", required=True, metavar="PRED.parquet", help="output Parquet file")
    pr.set_defaults(func=cmd_predict)

    sc = sub.add_parser("score", formatter_class=_Formatter, help="batch-score every user: top K and user heads",
                        description="Score every user of DIR in bounded memory: histories (interactions.parquet, "
                                    "one file or a folder of many) are hash-partitioned by user on disk, then "
                                    "scored chunk by chunk: heads emitted, the whole catalogue (or --candidates) "
                                    "scored with one GEMM per chunk, seen items excluded, top K kept. Users listed "
                                    "only in users.parquet get the population head's items. Writes "
                                    "OUT/recommendations/date=D (user_id, item_id, score, rank), "
                                    "OUT/user_heads/date=D (rank_head, rating_head per user) and "
                                    "OUT/item_vectors/date=D (phi, rank_bias, rating_bias per item), committed "
                                    "atomically at the end; a re-run of a date replaces it. The manifest in the "
                                    "recommendations folder gives the dot-product formula.")
    sc.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    sc.add_argument("--data", required=True, metavar="DIR", help="dataset directory holding the histories")
    sc.add_argument("--top-k", type=_positive_int, default=100, metavar="K", help="items per user")
    sc.add_argument("--out", required=True, metavar="DIR", help="output root (tables partitioned by date)")
    sc.add_argument("--date", default=None, metavar="YYYY-MM-DD", help="run date (default: today, UTC)")
    sc.add_argument("--chunk-users", type=_positive_int, default=4096, metavar="N", help="users per scoring chunk")
    sc.add_argument("--candidates", metavar="FILE.parquet", help="score only these items (an item_id column)")
    sc.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    sc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sc.set_defaults(func=cmd_score)

    pl = sub.add_parser("pipeline", help="the nightly training pipeline", formatter_class=_Formatter,
                        description="The jobs the team runs: the nightly pipeline and a synthetic landing folder.")
    psub = pl.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND", required=True)
    n = psub.add_parser("nightly", formatter_class=_Formatter, help="run (or resume) the nightly pipeline for a date",
                        description="Validate the day's landing partition (bad files quarantined with a reason), merge "
                                    "it into the training snapshot, split users by a stable hash, meta-train a "
                                    "challenger (warm-started from the champion), evaluate challenger and champion on "
                                    "the same users, promote the challenger to 'champion' only if it is not worse "
                                    "beyond the tolerance, score every user with the champion, and run the "
                                    "cold-start evaluation. Every step is recorded in WORK/state/date=D.json: a "
                                    "re-run skips what is done and a killed run resumes. One MLflow parent run per "
                                    "night; a lock stops two runs at once.")
    n.add_argument("--date", metavar="YYYY-MM-DD", help="the night to run (default: with --all, every landing date)")
    n.add_argument("--all", action="store_true", help="run every landing date, oldest first (done ones are skipped)")
    n.add_argument("--landing", default="data/landing", metavar="DIR", help="landing folder (events/date=D/...)")
    n.add_argument("--work", default="artifacts/nightly", metavar="DIR", help="snapshot, state, models, scores")
    n.add_argument("--config", metavar="FILE", help="the hypernetwork's config (as for train)")
    n.add_argument("--full", action="store_true", help="retrain from scratch instead of warm-starting")
    n.add_argument("--tolerance-mae", type=float, default=0.005, help="how much worse the challenger's MAE may be")
    n.add_argument("--tolerance-ndcg", type=float, default=0.005, help="how much worse its nDCG@10 may be")
    n.add_argument("--top-k", type=_positive_int, default=100, help="items per user in the batch scores")
    n.add_argument("--no-progress", action="store_true", help="hide progress bars")
    n.set_defaults(func=cmd_nightly)
    sl = psub.add_parser("synth-landing", formatter_class=_Formatter, help="a synthetic landing folder of daily partitions",
                         description="Generate a landing folder from a synthetic dataset: its events cut by time into "
                                     "daily partitions ending at --end-date (the first day carries the backlog), with "
                                     "users and items snapshots.")
    sl.add_argument("--out", default="data/landing", metavar="DIR", help="landing folder")
    sl.add_argument("--days", type=_positive_int, default=3, help="number of daily partitions")
    sl.add_argument("--end-date", default="2026-11-22", metavar="YYYY-MM-DD", help="the last day")
    sl.add_argument("--preset", default="default", help="synthetic preset (see data synth)")
    sl.add_argument("--seed", type=int, default=0)
    sl.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    sl.set_defaults(func=cmd_synth_landing)

    from .evaluation.runner import METHODS

    e = sub.add_parser("evaluate", formatter_class=_Formatter,
                       help="cold-start evaluation: every method, every k, one split",
                       description="Run the cold-start protocol on a dataset. Users are split by --seed into train / "
                                   "validation / cold-test; every method fits on the training users (validation users "
                                   "decide its early stopping and hyper-parameters; test users decide nothing). Each "
                                   "test user with at least max(shots) + 10 interactions is adapted from their k "
                                   "earliest interactions and scored on the rest: MAE, RMSE, nDCG@3 among the query "
                                   "items, full-catalogue Recall@10 / nDCG@10 (relevant = query items rated >= 4, "
                                   "support items excluded), and adaptation latency per user. Writes results.md, "
                                   "results.json, split.parquet, per_user.parquet and k_curve.png to --out, and logs "
                                   "an MLflow parent run with a nested run per (method, k). Methods: "
                                   + ", ".join(METHODS) + ".")
    e.add_argument("--data", required=True, metavar="DIR", help="dataset directory")
    e.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
                   help="methods to compare")
    e.add_argument("--shots", nargs="+", type=int, default=[0, 1, 3, 5, 10, 20], metavar="K",
                   help="support sizes k")
    e.add_argument("--seed", type=int, default=0, help="seed of the user split")
    e.add_argument("--out", default="artifacts/evaluation", metavar="DIR", help="where to write the results")
    e.add_argument("--config", metavar="FILE", help="the hypernetwork's config (as for train)")
    e.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    e.add_argument("--experiment", default="recsys-hyper-cold-start", help="MLflow experiment name")
    e.add_argument("--notebook", action="store_true",
                   help="also execute the cold-start analysis notebook on this run, render it to HTML in --out "
                        "and log it to the run")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=cmd_evaluate)
    return p


# --------------------------------------------------------------------------------------------
# commands

def cmd_validate(args: argparse.Namespace) -> int:
    from .data import load_dataset, write_dataset

    ds = load_dataset(args.dir)
    if args.out:
        write_dataset(ds, args.out, overwrite=args.overwrite)
    r = ds.report
    summary = {
        "valid": True, "dir": args.dir, "interactions": ds.n_interactions,
        "users": len(ds.user_ids()), "items": len(ds.item_ids()),
        "feedback": "implicit" if ds.implicit else "explicit",
        "duplicates_dropped": r.n_duplicates_dropped, "notes": r.notes,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.dir}: valid ({ds.n_interactions:,} interactions, {summary['users']:,} users, "
              f"{summary['items']:,} items, {summary['feedback']} feedback"
              + (f"; {r.n_duplicates_dropped:,} duplicate events will be dropped, latest kept" if r.n_duplicates_dropped else "")
              + ")")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .data.describe import describe, format_description

    d = describe(load_dataset(args.dir))
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate, preset

    cfg = preset(args.preset, n_users=args.users, n_items=args.items, seed=args.seed,
                 implicit=True if args.implicit else None)
    t0 = time.perf_counter()
    generate(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {cfg.n_users:,} users x {cfg.n_items:,} items to {args.out} in {time.perf_counter() - t0:.1f}s "
          f"(seed {cfg.seed}, {'implicit' if cfg.implicit else 'explicit'} feedback)")
    return 0


def cmd_import_movielens(args: argparse.Namespace) -> int:
    from .data.movielens import import_movielens

    ds = import_movielens(args.src, args.out, overwrite=args.overwrite,
                          variant=None if args.variant == "auto" else args.variant)
    print(f"imported {ds.source}: {ds.n_interactions:,} interactions, {len(ds.user_ids()):,} users, "
          f"{len(ds.item_ids()):,} items -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import contextlib
    import shutil

    from .data import load_dataset
    from .model import HyperRecommender, load_config
    from .model.training import init_distributed

    cfg = load_config(args.config).replace(seed=args.seed, epochs=args.epochs)
    ds = load_dataset(args.data)
    # under torchrun every rank trains its share of each batch; rank 0 tracks, saves and reports
    rank, world = init_distributed()
    if rank:
        logging.getLogger("recsys_hyper").setLevel(logging.WARNING)
    out = Path(args.out)
    ckpt = out.parent / f".{out.name}.checkpoints"
    if args.resume and not (ckpt / "checkpoint.pt").is_file():
        log.info("no checkpoint in %s: starting from scratch", ckpt)
    run = contextlib.nullcontext()
    if not args.no_track and rank == 0:
        from .tracking import TrainingRun

        run = TrainingRun(cfg.to_dict(), ds, experiment=args.experiment, run_name=f"train {Path(args.data).name}",
                          tags={"data": str(args.data), "processes": str(world)})
    with run as tracked:
        rec = HyperRecommender(cfg).fit(ds, checkpoint_dir=ckpt, resume=args.resume, progress=not args.no_progress,
                                        callback=tracked.log_epoch if tracked else None)
        if rank:
            return 0
        rec.save(out)
        best = rec.training_.history[rec.training_.best_epoch]
        summary = {k: best[f"val_{k}"] for k in ("loss", "mae", "ndcg10")}
        version = None
        if tracked:
            tracked.log_metrics({f"best_val_{k}": v for k, v in summary.items()}
                                | {"train_seconds": rec.training_.seconds,
                                   "prior_multiplier": rec.training_.prior_multiplier})
            first_users = ds.interactions["user_id"].drop_duplicates().head(3)
            example = ds.interactions[ds.interactions["user_id"].isin(first_users)].reset_index(drop=True)
            version = tracked.log_model(out, example, register=not args.no_register)
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"trained in {rec.training_.seconds:.1f}s on {world} process{'es' if world > 1 else ''}: best epoch "
          f"{rec.training_.best_epoch + 1} of {len(rec.training_.history)}, validation MAE {summary['mae']:.4f}, "
          f"nDCG@10 {summary['ndcg10']:.4f} ({rec.n_val_users_:,} validation users); model -> {out}"
          + (f"; registered recsys-hyper version {version} (alias challenger)" if version else ""))
    return 0


def _load_model(spec: str):
    from .model import HyperRecommender
    from .tracking import resolve_model

    return HyperRecommender.load(resolve_model(spec))


def _write_parquet(df, path: str) -> None:
    from .atomic import atomic_file

    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def cmd_recommend(args: argparse.Namespace) -> int:
    from .data import load_dataset

    ds = load_dataset(args.data)
    rec = _load_model(args.model)
    rec.check_compatible(ds)
    t0 = time.perf_counter()
    recs = rec.recommend(ds.interactions, k=args.top_k, exclude_seen=not args.include_seen, users=ds.users,
                         item_features=ds.items)
    _write_parquet(recs, args.out)
    n_users = recs["user_id"].nunique()
    print(f"recommended {args.top_k} items to {n_users:,} users in {time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_dataset
    from .data.validation import Collector, coerce_id, read_parquet_checked

    c = Collector()
    table = read_parquet_checked(Path(args.pairs), c, required=True)
    if table is not None:
        missing = [col for col in ("user_id", "item_id") if col not in table.column_names]
        for col in missing:
            c.add(Path(args.pairs).name, col, f"is missing (columns present: {', '.join(table.column_names)})",
                  "PAIRS needs user_id and item_id columns")
        if not missing:
            for col in ("user_id", "item_id"):
                coerce_id(table.column(col), Path(args.pairs).name, col, c)
    c.raise_if_any()
    pairs = table.to_pandas()
    ds = load_dataset(args.data)
    rec = _load_model(args.model)
    rec.check_compatible(ds)
    pred = rec.predict(ds.interactions, pairs, users=ds.users, item_features=ds.items)
    out = pairs.assign(prediction=pred.astype(np.float32))
    _write_parquet(out, args.out)
    n_nan = int(np.isnan(pred).sum())
    print(f"predicted {len(out):,} pairs" + (f" ({n_nan:,} unscoreable: NaN)" if n_nan else "") + f" -> {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import datetime

    import pandas as pd

    from .scoring import score_dataset

    date = args.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    candidates = None
    if args.candidates:
        path = Path(args.candidates)
        if not path.is_file():
            raise RecsysHyperError(f"{path}: candidates file not found")
        frame = pd.read_parquet(path)
        if "item_id" not in frame.columns:
            raise RecsysHyperError(f"{path}: needs an item_id column (columns present: {list(frame.columns)})")
        candidates = frame["item_id"].to_numpy()
    rec = _load_model(args.model)
    report = score_dataset(rec, args.data, args.out, date, top_k=args.top_k, chunk_users=args.chunk_users,
                           candidates=candidates, exclude_seen=not args.include_seen, progress=not args.no_progress)
    print(f"scored {report.users:,} users ({report.users_without_history:,} without history) for {date} in "
          f"{report.seconds:.1f}s ({report.users_per_second:,.0f} users/s scoring)"
          + (f"; {report.unknown_item_events:,} events on {report.unknown_item_ids:,} unknown items skipped"
             if report.unknown_item_events else "")
          + f" -> {Path(args.out) / 'recommendations' / f'date={date}'}")
    return 0


def cmd_synth_landing(args: argparse.Namespace) -> int:
    from .pipeline.landing import make_synthetic_landing

    dates = make_synthetic_landing(args.out, days=args.days, end_date=args.end_date, preset_name=args.preset,
                                   seed=args.seed, overwrite=args.overwrite)
    print(f"wrote landing partitions {', '.join(dates)} -> {args.out}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from .model import load_config
    from .pipeline.landing import landing_dates
    from .pipeline.nightly import NightlyConfig, run_nightly

    if not args.date and not args.all:
        raise RecsysHyperError("pass --date YYYY-MM-DD, or --all for every landing date")
    cfg = NightlyConfig(landing=Path(args.landing), work=Path(args.work), model_config=load_config(args.config),
                        full_retrain=args.full, tolerance_mae=args.tolerance_mae, tolerance_ndcg=args.tolerance_ndcg,
                        top_k=args.top_k, progress=not args.no_progress)
    dates = [args.date] if args.date else landing_dates(args.landing)
    if not dates:
        raise RecsysHyperError(f"{args.landing}: no landing partitions (events/date=YYYY-MM-DD/*.parquet)")
    for date in dates:
        r = run_nightly(date, cfg)
        m = r.metrics
        done = f"ran {', '.join(r.steps_run)}" if r.steps_run else "already done"
        print(f"night {date}: {done}" + (f"; skipped {', '.join(r.steps_skipped)}" if r.steps_run and r.steps_skipped else ""))
        if r.quarantined:
            print(f"  quarantined: {', '.join(q['file'] for q in r.quarantined)} (see {cfg.work}/quarantine/date={date})")
        print(f"  champion: recsys-hyper version {r.champion_version} - challenger "
              f"{'promoted' if r.promoted else 'not promoted'}: {r.reason}")
        print(f"  cold-test users ({int(m.get('challenger_test_users', 0))}): challenger MAE "
              f"{m.get('challenger_test_mae', float('nan')):.4f}, nDCG@10 {m.get('challenger_test_ndcg@10', float('nan')):.4f}"
              + (f"; champion MAE {m['champion_test_mae']:.4f}, nDCG@10 {m['champion_test_ndcg@10']:.4f}"
                 if "champion_test_mae" in m else ""))
        print(f"  recommendations: {r.recommendations}")
        print(f"  cold-start evaluation: {r.evaluation}/results.md")
    from .tracking import configure

    print(f"MLflow UI: mlflow ui --backend-store-uri {configure()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .evaluation.job import run_cold_start_evaluation
    from .evaluation.protocol import Protocol
    from .evaluation.report import markdown_table
    from .model import load_config

    ds = load_dataset(args.data)
    try:
        protocol = Protocol(shots=tuple(sorted(set(args.shots))), seed=args.seed)
    except ValueError as exc:
        raise RecsysHyperError(str(exc)) from None
    result, run_id = run_cold_start_evaluation(
        ds, args.out, protocol, methods=tuple(dict.fromkeys(args.methods)), model_config=load_config(args.config),
        track=not args.no_track, experiment=args.experiment, progress=not args.no_progress)
    print(markdown_table(result))
    if args.notebook:
        if run_id is None:
            raise RecsysHyperError("--notebook reads the MLflow run: drop --no-track")
        from .evaluation.job import render_notebook

        print(f"analysis notebook -> {render_notebook(run_id, args.out)}")
    print(f"\n{result.n_eligible} of {result.n_test_users} test users evaluated (>= {max(protocol.shots) + protocol.min_query} "
          f"interactions); split {result.split.digest[:12]}; {result.seconds:.0f}s -> {args.out}"
          + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("recsys_hyper").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (RecsysHyperError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
