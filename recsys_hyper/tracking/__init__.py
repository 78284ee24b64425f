"""MLflow tracking: the only place that talks to MLflow (plus the pyfunc file it loads).

* Store: ``MLFLOW_TRACKING_URI`` when set (e.g. a team server: ``http://127.0.0.1:5000``), else
  MLflow's embedded SQLite store ``sqlite:///mlflow.db`` in the working directory.
* A training run logs the config as params, per-epoch metrics, the dataset (with its digest),
  system metrics, and the model as a *models-from-code* pyfunc registered as ``recsys-hyper``
  with the alias ``challenger``.
* :func:`resolve_model` turns ``models:/recsys-hyper@champion`` (or ``runs:/...``) into a local
  model directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ..errors import RecsysHyperError

log = logging.getLogger(__name__)

REGISTERED_MODEL = "recsys-hyper"
TRAINING_EXPERIMENT = "recsys-hyper-training"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_ARTIFACT = "model_dir"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # a relative SQLite path means "here": pin it, so that code running elsewhere (a notebook
        # executed in its output folder) still finds the same store
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    mlflow.set_tracking_uri(uri)
    return uri


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


class TrainingRun:
    """A tracked meta-training run. Use as a context manager; pass :meth:`log_epoch` as the
    training callback; call :meth:`log_model` once the model is saved.

    >>> with TrainingRun(config, dataset) as run:                          # doctest: +SKIP
    ...     rec.fit(dataset, callback=run.log_epoch)
    ...     rec.save(out)
    ...     run.log_model(out, example_histories)
    """

    def __init__(self, config_dict: dict, dataset, experiment: str = TRAINING_EXPERIMENT,
                 run_name: str | None = None, tags: dict | None = None, system_metrics: bool = True,
                 tracking_uri: str | None = None, nested: bool = False):
        self.config_dict, self.dataset = config_dict, dataset
        self.experiment, self.run_name, self.tags = experiment, run_name, tags or {}
        self.system_metrics, self.tracking_uri, self.nested = system_metrics, tracking_uri, nested
        self.run = None
        self.model_version: str | None = None

    def __enter__(self) -> "TrainingRun":
        configure(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        if self.system_metrics:
            mlflow.set_system_metrics_sampling_interval(1)
            mlflow.set_system_metrics_samples_before_logging(1)
        self.run = mlflow.start_run(run_name=self.run_name, tags=self.tags, nested=self.nested,
                                    log_system_metrics=self.system_metrics)
        mlflow.log_params(_flatten(self.config_dict))
        ds = self.dataset
        with warnings.catch_warnings():  # MLflow guesses among equivalent local source types
            warnings.simplefilter("ignore", UserWarning)
            inputs = mlflow.data.from_pandas(ds.interactions, source=str(ds.source), targets="rating",
                                             name=Path(str(ds.source)).name or "interactions")
            mlflow.log_input(inputs, context="training")
        mlflow.log_params({"data.interactions": ds.n_interactions, "data.users": len(ds.user_ids()),
                           "data.items": len(ds.item_ids()), "data.digest": inputs.digest})
        return self

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        log_epoch(epoch, metrics)

    def log_metrics(self, metrics: dict) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def log_model(self, model_dir: str | os.PathLike, example_histories: pd.DataFrame, register: bool = True,
                  alias: str | None = "challenger", k: int = 10) -> str | None:
        """Log the saved model on this run (see :func:`log_pyfunc_model`)."""
        self.model_version = log_pyfunc_model(model_dir, example_histories, register, alias, k)
        return self.model_version

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.system_metrics:
            _await_system_metrics(self.run.info.run_id)
        mlflow.end_run(status="FAILED" if exc_type is not None else "FINISHED")


def _await_system_metrics(run_id: str, timeout_s: float = 5.0) -> None:
    """MLflow's monitor drops its pending sample when the run ends first, so a short run would
    end with no system metrics at all; wait (briefly) until one sample is in."""
    import time

    client, deadline = MlflowClient(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(k.startswith("system/") for k in client.get_run(run_id).data.metrics):
            return
        time.sleep(0.2)
    log.warning("no system metrics were recorded for run %s", run_id)


def log_pyfunc_model(model_dir: str | os.PathLike, example_histories: pd.DataFrame, register: bool = True,
                     alias: str | None = "challenger", k: int = 10) -> str | None:
    """Log a saved model directory on the active run as a models-from-code pyfunc (signature and
    input example on grouped histories); register it as ``recsys-hyper`` and set ``alias``.
    Returns the registered version (``None`` when not registering)."""
    from mlflow.models import infer_signature

    from ..model import HyperRecommender
    from ..scoring.frames import group_histories, recommend_grouped

    example = group_histories(example_histories)
    example_out = recommend_grouped(HyperRecommender.load(model_dir), example, k=k)
    with warnings.catch_warnings():  # MLflow's hint about integer columns and missing values
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(example, example_out, params={"k": k, "exclude_seen": True})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=REGISTERED_MODEL if register else None,
        )
    if not register:
        return None
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, version)
    mlflow.set_tag("registered_version", version)
    return version


def _requirements() -> list[str]:
    """Pinned to what is installed, so that a serving environment matches training."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "pandas", "pyarrow", "numpy", "mlflow")]


def is_model_uri(text: str) -> bool:
    return text.startswith(("models:/", "runs:/"))


def resolve_model(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local model directory for ``model``: a directory as is, or an MLflow model URI downloaded."""
    text = str(model)
    if not is_model_uri(text):
        path = Path(text)
        if not path.is_dir():
            raise RecsysHyperError(f"{path}: model not found; pass a model directory (the --out of "
                                   f"`recsys-hyper train`) or an MLflow URI such as models:/{REGISTERED_MODEL}@champion")
        return path
    configure()
    dst = Path(cache_dir or tempfile.mkdtemp(prefix="recsys-hyper-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dst)))
    except Exception as exc:  # MlflowException, connection errors, ...
        raise RecsysHyperError(f"{text}: cannot be loaded from the MLflow store at {mlflow.get_tracking_uri()} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0]}); check the name / alias "
                               f"and MLFLOW_TRACKING_URI") from None
    return _model_dir_in(local, text)


def _model_dir_in(local: Path, uri: str) -> Path:
    """The ``model_dir`` artifact inside a downloaded pyfunc, as its MLmodel file records it."""
    import yaml

    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text())
        rel = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get(MODEL_ARTIFACT, {})
        if rel.get("path") and (local / rel["path"] / "model.json").is_file():
            return local / rel["path"]
    raise RecsysHyperError(f"{uri}: not a recsys-hyper model (its MLmodel has no '{MODEL_ARTIFACT}' artifact); "
                           f"was it logged by `recsys-hyper train`?")


def load_pyfunc(uri: str):
    """The logged pyfunc (for checks and Spark UDFs)."""
    configure()
    return mlflow.pyfunc.load_model(uri)


EVALUATION_EXPERIMENT = "recsys-hyper-cold-start"


def metric_name(name: str) -> str:
    """MLflow metric names allow no '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def log_evaluation(result, out_dir: str | os.PathLike, data_source: str, experiment: str = EVALUATION_EXPERIMENT,
                   run_name: str | None = None, tags: dict | None = None, tracking_uri: str | None = None,
                   nested: bool = False) -> str:
    """Log a cold-start evaluation: a parent run (params, the results table, the k-curve figure,
    the split and per-user results as artifacts) with a nested child run per (method, k).
    Returns the parent run id."""
    from ..evaluation.report import k_curve_figure

    configure(tracking_uri)
    mlflow.set_experiment(experiment)
    p = result.protocol
    out = Path(out_dir)
    with mlflow.start_run(run_name=run_name or "cold-start evaluation", tags={"kind": "cold-start-evaluation",
                                                                             **(tags or {})},
                          nested=nested) as parent:
        mlflow.log_params({
            "data": data_source, "seed": p.seed, "shots": ",".join(map(str, p.shots)),
            "methods": ",".join(result.table["method"].unique()), "val_fraction": p.val_fraction,
            "test_fraction": p.test_fraction, "min_query": p.min_query, "relevance_threshold": p.relevance_threshold,
            "split_digest": result.split.digest, "test_users": result.n_test_users,
            "evaluated_users": result.n_eligible,
        })
        mlflow.set_tag("data_dir", str(Path(data_source).resolve()) if Path(data_source).exists() else data_source)
        for row in result.table.to_dict(orient="records"):
            method, k = row["method"], int(row["k"])
            with mlflow.start_run(run_name=f"{method} k={k}", nested=True,
                                  tags={"method": method, "k": str(k), "kind": "cold-start-result"}):
                mlflow.log_params({"method": method, "k": k})
                mlflow.log_metrics({metric_name(key): float(v) for key, v in row.items()
                                    if key not in ("method", "k") and v == v})  # v == v drops NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.log_table(data=result.table.rename(columns=metric_name), artifact_file="cold_start_results.json")
        fig = k_curve_figure(result)
        mlflow.log_figure(fig, "k_curve.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        for name in ("results.md", "results.json", "split.parquet", "per_user.parquet", "heads.parquet",
                     "example_user.parquet"):
            if (out / name).is_file():
                mlflow.log_artifact(str(out / name))
        mlflow.log_metric("seconds", result.seconds)
        return parent.info.run_id


# ---------------------------------------------------------------------------- the nightly pipeline

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



@contextlib.contextmanager
def night_run(date: str, experiment: str, run_id: str | None = None, tags: dict | None = None):
    """The parent run of one night, resumed when ``run_id`` names an earlier attempt's run."""
    configure()
    mlflow.set_experiment(experiment)
    if run_id is not None:
        try:
            MlflowClient().get_run(run_id)
        except Exception:
            run_id = None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"nightly {date}",
                          tags=None if run_id else {"kind": "nightly", "date": date, **(tags or {})}) as run:
        yield run.info.run_id


@contextlib.contextmanager
def step_run(name: str):
    with mlflow.start_run(run_name=name, nested=True, tags={"kind": "nightly-step", "step": name}) as run:
        yield run.info.run_id


def log_step(outputs: dict) -> None:
    """A step's numeric outputs as metrics, the rest as params (long values are cut)."""
    metrics = {metric_name(k): float(v) for k, v in outputs.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
    params = {k: (json.dumps(v, default=str) if not isinstance(v, str) else v)[:500]
              for k, v in outputs.items() if metric_name(k) not in metrics}
    if metrics:
        mlflow.log_metrics(metrics)
    if params:
        mlflow.log_params(params)


def log_epoch(epoch: int, metrics: dict) -> None:
    """Per-epoch training metrics on the active run (a training callback)."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)


def tag_night(**tags) -> None:
    """Tags on the night's parent run (called outside any step run)."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact_to_run(run_id: str, path: str | os.PathLike) -> None:
    configure()
    MlflowClient().log_artifact(run_id, str(path))


def alias_version(alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except Exception:
        return None


def set_alias(alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, str(version))


def load_alias(alias: str):
    """The model behind ``recsys-hyper@alias``, or ``None`` when the alias is not set yet."""
    if alias_version(alias) is None:
        return None
    from ..model import HyperRecommender

    return HyperRecommender.load(resolve_model(f"models:/{REGISTERED_MODEL}@{alias}"))
