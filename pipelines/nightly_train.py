"""The nightly training pipeline (see `recsys-hyper pipeline nightly --help`).

    python pipelines/nightly_train.py --date 2026-11-22 [--landing DIR] [--work DIR] [--full]
    python pipelines/nightly_train.py --all          # every landing date not done yet, oldest first

Point MLFLOW_TRACKING_URI at the team's tracking server; it is checked before any work.
"""

import sys

from recsys_hyper.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", "nightly", *sys.argv[1:]]))
