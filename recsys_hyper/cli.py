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
