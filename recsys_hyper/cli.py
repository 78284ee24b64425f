"""The ``recsys-hyper`` command line.

Every command validates its input before any work, prints progress on long work, and on bad
input prints one clear error (file, column, rows, examples, fix) and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .config import (EVALUATION_EXPERIMENT, REGISTERED_MODEL, TRAINING_EXPERIMENT, NightlyConfig, default)
from .errors import RecsysHyperError
from .interrupts import stop_on_signals

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; an option's default shown when it says something (not for flags,
    options without a default, or help that already names its default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (any(action.default is v for v in (None, False, True, argparse.SUPPRESS)) or not action.option_strings
                or "default" in text or isinstance(action, argparse._VersionAction)):
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def _whole(lo: int, hi: int | None = None):
    """An argparse type: a whole number in [lo, hi]."""
    what = (f"a whole number in [{lo}, {hi}]" if hi is not None else "a positive whole number" if lo == 1
            else f"a whole number >= {lo}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _whole(1)
_count = _whole(0)                     # a support size k
_seed = _whole(0, 2**32 - 1)


def _finite(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _level(text: str) -> float:
    value = _finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1) such as 0.9, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsys-hyper",
        description="Personalised recommendation with a hypernetwork: each user's scoring head is emitted "
                    "from their interaction history in one forward pass.",
        epilog=EPILOG, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log debug messages too, among them every training epoch's losses")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _data_commands(sub)
    _model_commands(sub)
    _pipeline_commands(sub)
    _evaluate_command(sub)
    _everywhere(p)
    return p


def _everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` after any command too (``recsys-hyper train ... -v``), as before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                if not any(a.dest == "verbose" for a in command._actions):
                    command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                         help="log debug messages too")
                _everywhere(command)



def _data_commands(sub) -> None:
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
    s.add_argument("--seed", type=_seed, default=0, help="random seed; the output is a function of it")
    s.add_argument("--implicit", action="store_true", help="implicit feedback: no rating column")
    s.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    s.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
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


SCORE_STD_HELP = ("add score_std: each recommendation's score standard deviation under the user's head posterior "
                  "(how sure the model is of this user's score of this item; it shrinks as the user's events "
                  "arrive). Explicit-rating models only")
MISMATCH_HELP = ("accept histories whose feedback differs from the model's (implicit events into an explicit model, "
                 "or the reverse) or whose ratings fall outside its training scale; refused by default, because "
                 "every prediction would silently be wrong")
EXCLUDE_HELP = ("items never to recommend: a Parquet file with an item_id column, or a text file with one id per "
                "line (items.parquet's boolean 'retired' column is always honoured too)")


EXPLAIN_HELP = ("add why each item is recommended: score_prior (what a user with no history and no features gets), "
                "score_features (what the user's features add), score_history (what their events add; the three "
                "sum to score) and because: the EVENTS history events (default 5) that moved the score most, as "
                "{item_id, rating, contribution}. The fold-in and item-item parts of a contribution are exact; "
                "the part through the hypernetwork is a leave-one-out estimate")


def _model_commands(sub) -> None:
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
    t.add_argument("--out", required=True, metavar="MODEL_DIR",
                   help="where to write the model (an existing model there is replaced atomically; never the data "
                        "directory or a folder inside it)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace --out even when it is a non-empty folder that holds no model")
    t.add_argument("--config", metavar="FILE", help="TOML / YAML / JSON with [model] and [train] sections")
    t.add_argument("--seed", type=_seed, help="random seed (overrides the config; default 0)")
    t.add_argument("--epochs", type=_positive_int, help="maximum epochs (overrides the config; default 40)")
    t.add_argument("--max-steps", type=_positive_int, metavar="N",
                   help="optimisation steps in all, spread over the epochs (each epoch samples its users afresh), "
                        "so the cost does not grow with the number of users; without it every epoch passes over every user")
    t.add_argument("--max-minutes", type=_positive, metavar="M",
                   help="stop training after this long; the epoch under way is validated and the best one kept")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    t.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    t.add_argument("--no-register", action="store_true", help="log to MLflow but do not register the model")
    t.add_argument("--experiment", default=TRAINING_EXPERIMENT, help="MLflow experiment name")
    t.add_argument("--registered-model", default=REGISTERED_MODEL, metavar="NAME",
                   help="the MLflow registered model the version is registered under (alias challenger)")
    t.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
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
    r.add_argument("--top-k", type=_positive_int, default=10, metavar="K",
                   help="items per user (10: what a page shows; `score` keeps 100 per user for the re-ranking "
                        "and filtering that batch outputs go through)")
    r.add_argument("--out", required=True, metavar="RECS.parquet", help="output Parquet file")
    r.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    r.add_argument("--exclude-items", metavar="FILE", help=EXCLUDE_HELP)
    r.add_argument("--allow-rating-mismatch", action="store_true", help=MISMATCH_HELP)
    r.add_argument("--explain", nargs="?", type=_positive_int, const=5, default=None, metavar="EVENTS",
                   help=EXPLAIN_HELP)
    r.add_argument("--score-std", action="store_true", help=SCORE_STD_HELP)
    r.add_argument("--explore", choices=("ucb", "thompson"), default=None,
                   help="rank with exploration from each user's head posterior (explicit-rating models): ucb adds "
                        "--explore-weight standard deviations to each score; thompson ranks by one draw of the "
                        "head (seeded by --seed). Off by default; see the README's measurement before turning it on")
    r.add_argument("--explore-weight", type=_non_negative, default=1.0, metavar="W",
                   help="ucb: standard deviations added; thompson: the draw's scale")
    r.add_argument("--seed", type=_seed, default=0, help="thompson's draw")
    r.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
    r.set_defaults(func=cmd_recommend)

    o = sub.add_parser("onboard", formatter_class=_Formatter, help="the items to ask each user about next",
                       description="For every user of DIR (their events so far, possibly none: users listed only in "
                                   "users.parquet are brand-new), the N items to ask them about next: the questions "
                                   "whose answers would most reduce the uncertainty of the user's head about their "
                                   "top-ranked items, weighted by the chance the user can answer (the model's own "
                                   "ranking score). Items in the history and those of --asked are never asked. "
                                   "Output: user_id, item_id, rank (1 = ask first), value (the expected reduction "
                                   "times the chance of an answer), written atomically. Ask, add the answers to the "
                                   "history, and run it again.")
    o.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    o.add_argument("--data", required=True, metavar="DIR", help="dataset directory holding the users' events so far")
    o.add_argument("--n", type=_positive_int, default=5, metavar="N",
                   help="questions per user (at most the catalogue's size)")
    o.add_argument("--out", required=True, metavar="QUESTIONS.parquet", help="output Parquet file")
    o.add_argument("--asked", metavar="ASKED.parquet",
                   help="questions already put (user_id, item_id), answered or not: never asked again")
    o.add_argument("--allow-rating-mismatch", action="store_true", help=MISMATCH_HELP)
    o.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
    o.set_defaults(func=cmd_onboard)

    pr = sub.add_parser("predict", formatter_class=_Formatter, help="predicted ratings for (user, item) pairs",
                        description="Predict ratings (explicit data, on the training rating scale) or relevance "
                                    "scores (implicit data) for the (user_id, item_id) rows of PAIRS, each user's head "
                                    "built from their history in DIR (possibly empty). Output: PAIRS' columns plus "
                                    "'prediction'; items the model cannot score get NaN and a warning.")
    pr.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    pr.add_argument("--data", required=True, metavar="DIR", help="dataset directory holding the histories")
    pr.add_argument("--pairs", required=True, metavar="PAIRS.parquet", help="Parquet file with user_id, item_id")
    pr.add_argument("--out", required=True, metavar="PRED.parquet", help="output Parquet file")
    pr.add_argument("--allow-rating-mismatch", action="store_true", help=MISMATCH_HELP)
    pr.add_argument("--interval", type=_level, metavar="P",
                    help="add lower / upper (a prediction interval covering the rating with probability P for "
                         "a new user with as many events, calibrated on the model's validation users) and std")
    pr.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
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
    sc.add_argument("--top-k", type=_positive_int, default=100, metavar="K",
                    help="items per user (100: a batch output is re-ranked and filtered downstream; `recommend` "
                         "gives 10, what a page shows)")
    sc.add_argument("--out", required=True, metavar="DIR", help="output root (tables partitioned by date)")
    sc.add_argument("--date", default=None, metavar="YYYY-MM-DD", help="run date (default: today, UTC)")
    sc.add_argument("--chunk-users", type=_positive_int, default=4096, metavar="N", help="users per scoring chunk")
    sc.add_argument("--candidates", metavar="FILE.parquet", help="score only these items (an item_id column)")
    sc.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    sc.add_argument("--exclude-items", metavar="FILE", help=EXCLUDE_HELP)
    sc.add_argument("--allow-rating-mismatch", action="store_true", help=MISMATCH_HELP)
    sc.add_argument("--explain", nargs="?", type=_positive_int, const=5, default=None, metavar="EVENTS",
                    help=EXPLAIN_HELP)
    sc.add_argument("--score-std", action="store_true", help=SCORE_STD_HELP)
    sc.add_argument("--engine", choices=("local", "spark"), default="local",
                    help="where to score: this machine (streaming, bounded memory) or Spark (the [spark] extra; "
                         "the same checks, rows, tables and manifest; DIR and OUT may be s3a:// or hdfs:// URIs); "
                         "spark-submit runs the file of recsys_hyper.spark_submit with these options")
    sc.add_argument("--spark-master", metavar="URL", default=None,
                    help="Spark master for --engine spark (default: $SPARK_MASTER, spark-submit's, else local[*])")
    sc.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
    sc.set_defaults(func=cmd_score)

    mg = sub.add_parser("model", help="promote or roll back the registered model's champion",
                        formatter_class=_Formatter,
                        description="Move the registered model's @champion alias (what "
                                    "models:/recsys-hyper@champion serves): `train` registers each version as "
                                    "@challenger; `promote` makes one the champion, `rollback` returns to the "
                                    "version it replaced. The nightly's gate promotes the same way, so a "
                                    "rollback also undoes a nightly promotion. Store: $MLFLOW_TRACKING_URI "
                                    "(default sqlite:///mlflow.db).")
    msub = mg.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pm = msub.add_parser("promote", formatter_class=_Formatter, help="make a version the champion",
                         description="Set @champion to --version (default: the @challenger's version), recording "
                                     "the version it replaces for `rollback`.")
    pm.add_argument("--version", metavar="N", help="the registered version (default: the @challenger's)")
    rb = msub.add_parser("rollback", formatter_class=_Formatter, help="return @champion to the version it replaced",
                         description="Set @champion back to the version the current champion replaced.")
    for p_ in (pm, rb):
        p_.add_argument("--registered-model", default=REGISTERED_MODEL, metavar="NAME",
                        help="the MLflow registered model")
    pm.set_defaults(func=cmd_promote)
    rb.set_defaults(func=cmd_rollback)


def nightly(name: str):
    """A default of the nightly pipeline's options: :class:`~recsys_hyper.config.NightlyConfig`'s."""
    return default(NightlyConfig, name)



def _pipeline_commands(sub) -> None:
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
    n.add_argument("--landing", default=str(nightly("landing")), metavar="DIR",
                   help="landing folder (events/date=D/...)")
    n.add_argument("--work", default=str(nightly("work")), metavar="DIR", help="snapshot, state, models, scores")
    n.add_argument("--config", metavar="FILE", help="the hypernetwork's config (as for train)")
    n.add_argument("--full", action="store_true", help="retrain from scratch instead of warm-starting")
    n.add_argument("--warm-max-steps", type=_positive_int, default=nightly("warm_max_steps"), metavar="N",
                   help="the step budget of a warm-started training")
    n.add_argument("--first-max-steps", type=_positive_int, default=nightly("first_max_steps"), metavar="N",
                   help="the step budget of a first (or --full) training; without it every epoch passes over every "
                        "user, which at millions of users takes longer than a night")
    n.add_argument("--max-eval-users", type=_positive_int, default=nightly("max_eval_users"), metavar="N",
                   help="the gate compares champion and challenger on at most N validation and N test users, and "
                        "the cold-start step evaluates at most N test users (seeded samples)")
    n.add_argument("--tolerance-mae", type=_finite, default=nightly("tolerance_mae"),
                   help="how much worse the challenger's MAE may be")
    n.add_argument("--tolerance-ndcg", type=_finite, default=nightly("tolerance_ndcg"),
                   help="how much worse its nDCG@10 may be")
    n.add_argument("--top-k", type=_positive_int, default=nightly("top_k"), help="items per user in the batch scores")
    n.add_argument("--registered-model", default=nightly("registered_model"), metavar="NAME",
                   help="the MLflow registered model this pipeline's versions and aliases live under; two pipelines "
                        "that share a tracking store need different names")
    n.add_argument("--allow-out-of-order", action="store_true",
                   help="run a night older than one already merged (refused by default: it would train on the "
                        "later nights' events and could replace their champion)")
    n.add_argument("--allow-rating-mismatch", action="store_true",
                   help="merge landing files whose ratings fall outside the scale of the snapshot's ratings so far "
                        "(quarantined by default: one mistyped rating would change the scale every model of the "
                        "pipeline predicts on); the night's steps then serve ratings outside the champion's scale")
    n.add_argument("--adopt-store", action="store_true",
                   help="the tracking store does not know the champion the work folder records (WORK/champion.json: "
                        "a store lost, replaced or pointed elsewhere), and that is intended: gate the challenger "
                        "against the recorded champion's model files and register the winner in this store "
                        "(refused by default: the night would promote without a gate)")
    n.add_argument("--engine", choices=("local", "spark"), default=nightly("engine"),
                   help="where the night's data steps run: this process, or Spark (the [spark] extra): validate, "
                        "merge, split and the selection of the users each step needs as Spark jobs, scoring on "
                        "Spark; training and evaluation on this machine from the users selected (see --train-users); "
                        "the same state, gate and outputs")
    n.add_argument("--spark-master", metavar="URL", default=None,
                   help="Spark master for --engine spark (default: $SPARK_MASTER, spark-submit's, else local[*])")
    n.add_argument("--train-users", type=_positive_int, default=nightly("train_users"), metavar="N",
                   help="train on a seeded sample of at most N of the training users (default: all; the cold-start "
                        "step's baselines learn from the same sample); with --engine spark only their events are "
                        "collected to this machine")
    n.add_argument("--train-processes", type=_positive_int, default=nightly("train_processes"), metavar="N",
                   help="with --engine spark: train across N Spark tasks with PyTorch DDP (TorchDistributor; each "
                        "task on spark.task.cpus threads, the work folder a path every executor reads) instead of "
                        "on this machine (default: 1)")
    n.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
    n.set_defaults(func=cmd_nightly)
    fg = psub.add_parser("forget", formatter_class=_Formatter, help="erase users from a nightly's work folder and store",
                         description="Carry out an erasure request: remove every row of the listed users from every "
                                     "Parquet file under the work folder (the snapshot's partitions and users table, "
                                     "scores and heads, cohorts, splits, evaluation tables, quarantined files), scrub "
                                     "their ids from the quarantine's reasons and the state, rewrite the evaluation "
                                     "tables the nights logged to the tracking store ($MLFLOW_TRACKING_URI) without "
                                     "them, and record them (as salted digests, never the ids) so that no later "
                                     "night merges their events again, even if the landing still holds them. The next "
                                     "night trains without warm start; until its gate, the current champion, which "
                                     "saw them, keeps serving. Takes the nightly's lock; a re-run finishes an "
                                     "interrupted one.")
    fg.add_argument("--work", default=str(nightly("work")), metavar="DIR", help="the nightly's work folder")
    fg.add_argument("--users", required=True, metavar="FILE",
                    help="the users to forget: a Parquet file with a user_id column, or a text file with one id per line")
    fg.set_defaults(func=cmd_forget)
    sl = psub.add_parser("synth-landing", formatter_class=_Formatter, help="a synthetic landing folder of daily partitions",
                         description="Generate a landing folder from a synthetic dataset: its events cut by time into "
                                     "daily partitions ending at --end-date (the first day carries the backlog), with "
                                     "users and items snapshots.")
    sl.add_argument("--out", default="data/landing", metavar="DIR", help="landing folder")
    sl.add_argument("--days", type=_positive_int, default=3, help="number of daily partitions")
    sl.add_argument("--end-date", default="2026-11-22", metavar="YYYY-MM-DD", help="the last day")
    sl.add_argument("--preset", default="default", help="synthetic preset (see data synth)")
    sl.add_argument("--users", type=_positive_int, metavar="N", help="number of users (overrides the preset)")
    sl.add_argument("--items", type=_positive_int, metavar="M", help="number of items (overrides the preset)")
    sl.add_argument("--seed", type=_seed, default=0)
    sl.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    sl.set_defaults(func=cmd_synth_landing)


def _evaluate_command(sub) -> None:
    from .config import DEFAULT_EVALUATION_METHODS, PROTOCOL_MIN_QUERY, PROTOCOL_SEED, PROTOCOL_SHOTS
    from .config import EVALUATION_METHODS as METHODS

    e = sub.add_parser("evaluate", formatter_class=_Formatter,
                       help="cold-start evaluation: every method, every k, one split",
                       description="Run the cold-start protocol on a dataset. Users are split by --seed into train / "
                                   "validation / cold-test; every method fits on the training users (validation users "
                                   "decide its early stopping and hyper-parameters; test users decide nothing). Each "
                                   f"test user with at least max(shots) + {PROTOCOL_MIN_QUERY} "
                                   "interactions is adapted from their k "
                                   "earliest interactions and scored on the rest: MAE, RMSE, nDCG@3 among the query "
                                   "items, full-catalogue Recall@10 / nDCG@10 (relevant = query items rated >= 4, "
                                   "support items excluded), the share of the catalogue in some user's top 10, the "
                                   "prediction intervals' coverage, and adaptation latency per user. Writes "
                                   "results.md, results.json, split.parquet, per_user.parquet and k_curve.png to "
                                   "--out, and logs an MLflow parent run with a nested run per (method, k). Methods: "
                                   + ", ".join(METHODS) + " (hyper-ucb and hyper-thompson: the hypernetwork ranking "
                                   "with recommend --explore; only when named).")
    e.add_argument("--data", required=True, metavar="DIR", help="dataset directory")
    e.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_EVALUATION_METHODS),
                   metavar="METHOD",
                   help="methods to compare")
    e.add_argument("--shots", nargs="+", type=_count, default=list(PROTOCOL_SHOTS), metavar="K",
                   help="support sizes k")
    e.add_argument("--seed", type=_seed, default=PROTOCOL_SEED, help="seed of the user split")
    e.add_argument("--out", default="artifacts/evaluation", metavar="DIR",
                   help="where to write the results (replaced at the end: an earlier evaluation's folder, or any "
                        "folder with --overwrite; never one that holds the data)")
    e.add_argument("--overwrite", action="store_true", help="replace --out even when it is not an evaluation's folder")
    e.add_argument("--config", metavar="FILE", help="the hypernetwork's config (as for train)")
    e.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    e.add_argument("--experiment", default=EVALUATION_EXPERIMENT, help="MLflow experiment name")
    e.add_argument("--notebook", action="store_true",
                   help="also execute the cold-start analysis notebook on this run, render it to HTML in --out "
                        "and log it to the run")
    e.add_argument("--notebook-code", action="store_true",
                   help="show the notebook's code in its HTML report too (by default the report shows figures, "
                        "tables and text; the executed .ipynb beside it keeps the code)")
    e.add_argument("--onboarding", action="store_true",
                   help="also measure onboarding (which items to ask new users about: the model's questions "
                        "against random, popularity, log-popularity x entropy and chronological events) and the "
                        "explanations' faithfulness, on the fitted hypernetwork and the same test users; logged "
                        "as a run nested in the evaluation's")
    e.add_argument("--no-progress", action="store_true", help="hide progress (bars, periodic log lines)")
    e.set_defaults(func=cmd_evaluate)


# --------------------------------------------------------------------------------------------
# commands: each calls one job and prints what it returns

def cmd_validate(args: argparse.Namespace) -> int:
    from .jobs import datasets

    print(datasets.validation_summary(datasets.validate(args.dir, args.out, args.overwrite), as_json=args.json))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .jobs import datasets

    print(datasets.describe(args.dir, as_json=args.json))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .jobs import datasets

    print(datasets.synth(args.out, args.preset, args.users, args.items, args.seed, args.implicit, args.overwrite,
                         progress=not args.no_progress))
    return 0


def cmd_import_movielens(args: argparse.Namespace) -> int:
    from .jobs import datasets

    print(datasets.import_movielens(args.src, args.out, overwrite=args.overwrite,
                                    variant=None if args.variant == "auto" else args.variant))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .jobs.train import train_command

    cfg = load_config(args.config).replace(seed=args.seed, epochs=args.epochs, max_steps=args.max_steps,
                                           max_minutes=args.max_minutes)
    summary = train_command(args.data, args.out, cfg, resume=args.resume, track=not args.no_track,
                            register=not args.no_register, experiment=args.experiment, progress=not args.no_progress,
                            overwrite=args.overwrite, registered_model=args.registered_model)
    if summary:
        print(summary)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from .jobs import serve

    print(serve.recommend(args.model, args.data, args.top_k, args.out, include_seen=args.include_seen,
                          allow_rating_mismatch=args.allow_rating_mismatch, explain=args.explain,
                          score_std=args.score_std, explore=args.explore, explore_weight=args.explore_weight,
                          seed=args.seed, exclude_items=args.exclude_items))
    return 0


def cmd_onboard(args: argparse.Namespace) -> int:
    from .jobs import serve

    print(serve.onboard(args.model, args.data, args.n, args.out, asked=args.asked,
                        allow_rating_mismatch=args.allow_rating_mismatch))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .jobs import serve

    print(serve.predict(args.model, args.data, args.pairs, args.out, allow_rating_mismatch=args.allow_rating_mismatch,
                        interval=args.interval))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from .jobs.models import promote_command

    print(promote_command(args.version, args.registered_model))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .jobs.models import rollback_command

    print(rollback_command(args.registered_model))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .jobs import score

    report = score.score(args.model, args.data, args.out, args.date, top_k=args.top_k, chunk_users=args.chunk_users,
                         candidates=args.candidates, include_seen=args.include_seen, progress=not args.no_progress,
                         allow_rating_mismatch=args.allow_rating_mismatch, explain=args.explain,
                         engine=args.engine, spark_master=args.spark_master, score_std=args.score_std,
                         exclude_items=args.exclude_items)
    print(score.summary(report, args.out))
    return 0


def cmd_synth_landing(args: argparse.Namespace) -> int:
    from .jobs.landing import make_synthetic_landing

    dates = make_synthetic_landing(args.out, days=args.days, end_date=args.end_date, preset_name=args.preset,
                                   n_users=args.users, n_items=args.items,
                                   seed=args.seed, overwrite=args.overwrite)
    print(f"wrote landing partitions {', '.join(dates)} -> {args.out}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from .config import load_config
    from .jobs.nightly import OutOfOrderError, mlflow_ui_command, nights_to_run, run_nightly

    dates = nights_to_run(args.landing, args.date, args.all)
    cfg = NightlyConfig(landing=Path(args.landing), work=Path(args.work), model_config=load_config(args.config),
                        full_retrain=args.full, warm_max_steps=args.warm_max_steps,
                        first_max_steps=args.first_max_steps, max_eval_users=args.max_eval_users,
                        tolerance_mae=args.tolerance_mae, tolerance_ndcg=args.tolerance_ndcg,
                        top_k=args.top_k, progress=not args.no_progress, registered_model=args.registered_model,
                        allow_out_of_order=args.allow_out_of_order, allow_rating_mismatch=args.allow_rating_mismatch,
                        adopt_store=args.adopt_store, engine=args.engine, spark_master=args.spark_master,
                        train_users=args.train_users, train_processes=args.train_processes)
    refused = []
    for date in dates:
        try:
            print(run_nightly(date, cfg).summary(cfg.work))
        except OutOfOrderError as exc:
            if not args.all:
                raise
            refused.append(str(exc))          # --all goes on with the other nights, and says so at the end
        except RecsysHyperError as exc:       # every message names the next command to run
            text = str(exc)
            if "recsys-hyper pipeline" not in text:
                text += (f"\nnext: once that is fixed, run the night again (what is done is kept): recsys-hyper "
                         f"pipeline nightly --date {date} --landing {cfg.landing} --work {cfg.work}")
            print(f"error: {text}", file=sys.stderr)
            return 2
    print(f"MLflow UI: {mlflow_ui_command()}")
    for text in refused:
        print(f"error: {text}", file=sys.stderr)
    return 2 if refused else 0


def cmd_forget(args: argparse.Namespace) -> int:
    from .config import NIGHTLY_EXPERIMENT
    from .jobs.forget import forget

    print(forget(Path(args.work), args.users, NIGHTLY_EXPERIMENT).summary(Path(args.work)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .jobs.evaluate import evaluate_command

    print(evaluate_command(args.data, args.out, args.methods, args.shots, args.seed,
                           model_config=load_config(args.config), track=not args.no_track,
                           experiment=args.experiment, notebook=args.notebook, notebook_code=args.notebook_code,
                           progress=not args.no_progress,
                           onboarding=args.onboarding, overwrite=args.overwrite))
    return 0


# --------------------------------------------------------------------------------------------

def entry() -> None:
    """The ``recsys-hyper`` program: :func:`main`, then the exit. A torchrun worker (``train`` under
    torchrun) ends through :func:`~recsys_hyper.training.distributed.exit_distributed`."""
    code = main()
    if "torch.distributed" in sys.modules:
        from .training.distributed import exit_distributed

        exit_distributed(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import progress
    from .cpus import THREAD_VARIABLES, size_thread_pools

    threads = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    size_thread_pools()                  # torch's pools sized to the CPUs this process may use, before it loads
    shown, mlflow_level = progress.enabled(), os.environ.get("MLFLOW_LOGGING_LEVEL")
    loggers = {name: logging.getLogger(name).level for name in ("mlflow", "recsys_hyper")}
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    logging.getLogger("recsys_hyper").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    progress.set_enabled(not getattr(args, "no_progress", False))
    try:
        return _run(args)
    finally:                                         # main() called again in one process starts as it was
        progress.set_enabled(shown)
        for name, level in loggers.items():
            logging.getLogger(name).setLevel(level)
        for name, value in [("MLFLOW_LOGGING_LEVEL", mlflow_level), *threads.items()]:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(args: argparse.Namespace) -> int:
    # MLflow's own progress notes ("Creating initial MLflow database tables", "Created version")
    # would drown the command's output; --verbose shows them. MLflow sets its logger's level from
    # MLFLOW_LOGGING_LEVEL when it is first imported (later, lazily), so both are set; a level the
    # user chose in the environment is kept
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if args.verbose else "WARNING")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    with stop_on_signals():   # SIGTERM and Ctrl-C stop a command the same way, at a safe point
        try:
            return int(args.func(args) or 0)
        except (RecsysHyperError, FileExistsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            print(f"interrupted ({signal.Signals(signum).name}): stopped; nothing half-written was left behind, "
                  f"tracked runs were ended as KILLED; run the command again to redo or resume the work",
                  file=sys.stderr)
            return 128 + int(signum)
        except Exception as exc:  # the one boundary for what the system says no to (disk, memory, store)
            from .jobs.failures import describe_failure

            text = describe_failure(exc)
            if text is None:
                raise                                             # a bug: its traceback is what helps
            print(f"error: {text}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    entry()
