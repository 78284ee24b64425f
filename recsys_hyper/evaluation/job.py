"""The cold-start evaluation as a job: run the protocol, write the outputs, log to MLflow."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .._atomic import atomic_directory
from ..data.dataset import Dataset
from .protocol import Protocol
from .report import k_curve_figure, markdown_table, summary
from .runner import DEFAULT_METHODS, EvalResult, evaluate

log = logging.getLogger(__name__)


def write_outputs(result: EvalResult, out: str | os.PathLike) -> Path:
    """results.md, results.json, split.parquet, per_user.parquet and k_curve.png, atomically."""
    import matplotlib.pyplot as plt

    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "results.md").write_text(markdown_table(result) + "\n")
        (tmp / "results.json").write_text(json.dumps(summary(result), indent=2, default=float))
        result.split.table.to_parquet(tmp / "split.parquet", index=False)
        result.per_user.to_parquet(tmp / "per_user.parquet", index=False)
        fig = k_curve_figure(result)
        fig.savefig(tmp / "k_curve.png", dpi=110)
        plt.close(fig)
    return Path(out)


def run_cold_start_evaluation(ds: Dataset, out: str | os.PathLike, protocol: Protocol = Protocol(),
                              methods=DEFAULT_METHODS, model_config=None, track: bool = True,
                              experiment: str | None = None, progress: bool = True,
                              tags: dict | None = None, nested: bool = False) -> tuple[EvalResult, str | None]:
    """Evaluate, write the outputs to ``out``, and (``track``) log the MLflow run layout.
    Returns the result and the MLflow parent run id."""
    result = evaluate(ds, protocol, methods=methods, model_config=model_config, progress=progress)
    write_outputs(result, out)
    run_id = None
    if track:
        from ..tracking import EVALUATION_EXPERIMENT, log_evaluation

        run_id = log_evaluation(result, out, data_source=str(ds.source), experiment=experiment or EVALUATION_EXPERIMENT,
                                tags=tags, nested=nested)
    return result, run_id
