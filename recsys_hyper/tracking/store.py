"""The tracking store: where MLflow writes, checked before any work, and read back for analysis.

* ``MLFLOW_TRACKING_URI`` when set (e.g. a team server: ``http://127.0.0.1:5000``), else MLflow's
  embedded SQLite store ``sqlite:///mlflow.db`` (a relative path is pinned to an absolute one).
* :func:`open_store` is what a notebook calls: it also finds the repository's ``mlflow.db`` when
  the notebook is opened from a sub-folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ..errors import RecsysHyperError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORE_FILE = "mlflow.db"


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store."""
    # MLflow's "Downloading artifacts" bars would flood a nightly's output; our own bars stay
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # a relative SQLite path means "here": pin it, so that code running elsewhere (a notebook
        # executed in its output folder) still finds the same store
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    mlflow.set_tracking_uri(uri)
    return uri


def open_store(tracking_uri: str | None = None, search_from: str | os.PathLike | None = None) -> str:
    """:func:`configure` for interactive use: with no URI and no ``$MLFLOW_TRACKING_URI``, the
    nearest ``mlflow.db`` in ``search_from`` (default: the working directory) or its parents."""
    if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return configure(tracking_uri)
    here = Path(search_from or Path.cwd()).resolve()
    found = next((d / DEFAULT_STORE_FILE for d in (here, *here.parents) if (d / DEFAULT_STORE_FILE).is_file()),
                 here / DEFAULT_STORE_FILE)
    return configure(f"sqlite:///{found}")


def ensure_reachable(timeout_s: int = 5) -> None:
    """Fail fast, with the URI in the message, when the tracking store cannot be reached."""
    uri = configure()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    try:
        MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # connection refused, DNS, HTTP errors ...
        raise RecsysHyperError(f"the MLflow tracking store at {uri} cannot be reached ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]}); start it (mlflow server ...) or point "
                               f"MLFLOW_TRACKING_URI at a running one. Nothing was done.") from None
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def metric_name(name: str) -> str:
    """MLflow metric names allow no '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


# ---------------------------------------------------------------------------- reading runs back

def find_runs(kind: str, experiment: str | None = None) -> pd.DataFrame:
    """Runs tagged ``kind`` (newest first), in one experiment or in all of them; one row per run
    (``run_id``, ``experiment_id``, ``params.*``, ``metrics.*``, ``tags.*``)."""
    exps = [mlflow.get_experiment_by_name(experiment)] if experiment else mlflow.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    if not ids:
        return pd.DataFrame()
    return mlflow.search_runs(ids, filter_string=f"tags.kind = '{kind}'", order_by=["start_time DESC"])


def child_runs(run_id: str, experiment_id: str, kind: str | None = None) -> pd.DataFrame:
    """The runs nested under ``run_id`` (only those tagged ``kind``, when given)."""
    where = f"tags.mlflow.parentRunId = '{run_id}'" + (f" and tags.kind = '{kind}'" if kind else "")
    return mlflow.search_runs([experiment_id], filter_string=where)


def download_artifact(run_id: str, name: str, dst: str | os.PathLike | None = None) -> Path | None:
    """A logged artifact of a run, as a local file, or ``None`` when the run has no such artifact."""
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name,
                                                        dst_path=str(dst or tempfile.mkdtemp())))
    except Exception:  # MlflowException for a missing artifact, OSError ...
        return None
