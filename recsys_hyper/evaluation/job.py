"""The cold-start evaluation as a job: run the protocol, write the outputs, log to MLflow."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..atomic import atomic_directory
from ..data.dataset import Dataset
from .protocol import Protocol
from .report import k_curve_figure, markdown_table, summary
from .runner import DEFAULT_METHODS, EvalResult, evaluate

log = logging.getLogger(__name__)


def hypernetwork_views(result: EvalResult, ds: Dataset, k: int = 5) -> dict:
    """For analysis: the heads the hypernetwork emits for the evaluated users from their ``k``
    earliest events (with their features), and one user's top 10 as 1, 3, 5 events arrive."""
    import numpy as np
    import pandas as pd

    from ..data import schema as S
    from ..data.episodes import chronological_split

    rec, h = result.fitted.get("hyper"), result.test_histories
    if rec is None or h is None or len(h) == 0:
        return {}
    sup, _ = chronological_split(h, k, min_query=1)
    heads = rec.adapt_histories(sup, ds.users)
    frame = pd.DataFrame({S.USER_ID: heads.user_ids, "k": k, "rank_head": list(heads.w + heads.v)})
    if ds.users is not None:
        frame = frame.merge(ds.users, on=S.USER_ID, how="left")
    rows = []
    user = h.user_ids[:1]
    for n in (1, 3, 5):
        s1, _ = chronological_split(h.select(np.array([0])), n, min_query=1)
        events = pd.DataFrame({S.USER_ID: np.repeat(user, n), S.ITEM_ID: rec.item_map_.ids(s1.items),
                               S.RATING: s1.ratings, S.TIMESTAMP: s1.timestamps})
        recs = rec.recommend(events, k=10, users=ds.users, user_ids=user)
        rows.append(recs.assign(known=n, support=[list(events[S.ITEM_ID])] * len(recs)))
    example = pd.concat(rows, ignore_index=True)
    if ds.items is not None:
        example = example.merge(ds.items, on=S.ITEM_ID, how="left")
    return {"heads.parquet": frame, "example_user.parquet": example}


def write_outputs(result: EvalResult, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """results.md, results.json, split.parquet, per_user.parquet, k_curve.png and ``extra``
    tables (name -> frame), atomically."""
    import matplotlib.pyplot as plt

    with atomic_directory(out, overwrite=True) as tmp:
        for name, frame in (extra or {}).items():
            frame.to_parquet(tmp / name, index=False)
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
    write_outputs(result, out, extra=hypernetwork_views(result, ds))
    run_id = None
    if track:
        from ..tracking import EVALUATION_EXPERIMENT, log_evaluation

        run_id = log_evaluation(result, out, data_source=str(ds.source), experiment=experiment or EVALUATION_EXPERIMENT,
                                tags=tags, nested=nested)
    return result, run_id


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "cold_start_analysis.ipynb"


def render_notebook(run_id: str, out: str | os.PathLike, tracking_uri: str | None = None,
                    notebook: str | os.PathLike = NOTEBOOK) -> Path:
    """Execute the cold-start analysis notebook against ``run_id`` (papermill), render it to HTML
    (nbconvert) in ``out`` and log the HTML to the run."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from ..errors import RecsysHyperError
    from ..tracking import configure, log_artifact_to_run

    notebook = Path(notebook)
    if not notebook.is_file():
        raise RecsysHyperError(f"{notebook}: the analysis notebook is not there (it lives in the repository's "
                               f"notebooks/ folder)")
    uri = tracking_uri or configure()
    out = Path(out)
    executed = out / "cold_start_analysis.ipynb"
    papermill.execute_notebook(str(notebook), str(executed), parameters={"tracking_uri": uri, "run_id": run_id},
                               progress_bar=False, cwd=str(out))
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = out / "cold_start_analysis.html"
    target.write_text(html)
    log_artifact_to_run(run_id, target)
    return target
