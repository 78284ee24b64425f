"""Batch scoring job (see `recsys-hyper score --help`): every user, top K, user heads.

    python pipelines/batch_score.py --model models:/recsys-hyper@champion --data DIR --out DIR --date D
"""

import sys

from recsys_hyper.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
