"""Cold-start evaluation job: the protocol, every method, one MLflow parent run.

    python pipelines/cold_start_eval.py --data DIR [--methods ...] [--shots ...] [--seed N] [--out DIR]

The same as ``recsys-hyper evaluate --notebook --onboarding`` (see its --help): onboarding and
the explanations are measured on the fitted hypernetwork, and the executed cold-start analysis
notebook is rendered to HTML and logged to the evaluation run. Reproduce the README
table with:

    recsys-hyper data import-movielens ../shared/data/ml-100k --out /tmp/ml-100k
    python pipelines/cold_start_eval.py --data /tmp/ml-100k --seed 0
"""

import sys

from recsys_hyper.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    extra = [] if "--notebook" in args or "--no-track" in args else ["--notebook"]
    if "--onboarding" not in args and ("--methods" not in args or "hyper" in args):
        extra.append("--onboarding")
    sys.exit(main(["evaluate", *args, *extra]))
