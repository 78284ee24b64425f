"""Cold-start evaluation job: the protocol, every method, one MLflow parent run.

    python pipelines/cold_start_eval.py --data DIR [--methods ...] [--shots ...] [--seed N] [--out DIR]

The same as ``recsys-hyper evaluate`` (see its --help); kept as a job entry point for
schedulers. Reproduce the README table with:

    recsys-hyper data import-movielens ../shared/data/ml-100k --out /tmp/ml-100k
    python pipelines/cold_start_eval.py --data /tmp/ml-100k --seed 0
"""

import sys

from recsys_hyper.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
