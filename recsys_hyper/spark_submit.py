"""The ``spark-submit`` entry point of batch scoring: ``recsys-hyper score --engine spark`` with the
same options (the master is spark-submit's unless ``--spark-master`` names one)::

    spark-submit --master yarn "$(python -c 'import recsys_hyper.spark_submit as m; print(m.__file__)')" \\
        --model models:/recsys-hyper@champion --data s3a://bucket/histories --out s3a://bucket/scores

``python -m recsys_hyper.spark_submit ...`` runs the same. The imports are absolute: spark-submit
runs this file as a script.
"""

from __future__ import annotations

import sys

from recsys_hyper.cli import main


def run(argv: list[str] | None = None) -> int:
    return main(["score", "--engine", "spark", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(run())
