"""Tracked runs: meta-training runs, cold-start evaluations (a parent run with a nested run per
(method, k)), and the nightly pipeline's parent and step runs.

This package is the only code that imports MLflow. It receives frames, figures and files from
the jobs and logs them; it does not compute them (it imports neither evaluation nor scoring).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ..config import EVALUATION_EXPERIMENT, TRAINING_EXPERIMENT
from ..interrupts import deferred, whole
from .registry import log_pyfunc_model
from .store import configure, metric_name

log = logging.getLogger(__name__)



def end_status(exc_type) -> str:
    """How a run ends: FINISHED, KILLED after an interrupt (Ctrl-C, SIGTERM), FAILED after an error."""
    if exc_type is None:
        return "FINISHED"
    return "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"


@contextlib.contextmanager
def tracked_run(**start_kwargs):
    """``mlflow.start_run(**start_kwargs)`` as a context that ends the run as FINISHED, FAILED or
    KILLED (MLflow's own context says FAILED for an interrupt too). Starting and ending are never
    cut by a signal (see :mod:`recsys_hyper.interrupts`)."""
    with deferred():
        run = mlflow.start_run(**start_kwargs)
    try:
        yield run
    except BaseException as exc:
        with deferred(), contextlib.suppress(Exception):   # the store may be what failed: the error says so
            mlflow.end_run(status=end_status(type(exc)))
        raise
    with deferred():
        mlflow.end_run(status="FINISHED")


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
    ...     run.log_model(out, example, recommend_grouped(rec, example))
    """

    def __init__(self, config_dict: dict, dataset, experiment: str = TRAINING_EXPERIMENT,
                 run_name: str | None = None, tags: dict | None = None, system_metrics: bool = True,
                 tracking_uri: str | None = None, nested: bool = False):
        self.config_dict, self.dataset = config_dict, dataset
        self.experiment, self.run_name, self.tags = experiment, run_name, tags or {}
        self.system_metrics, self.tracking_uri, self.nested = system_metrics, tracking_uri, nested
        self.run = None
        self.model_version: str | None = None

    @whole
    def __enter__(self) -> "TrainingRun":
        configure(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        if self.system_metrics:
            mlflow.set_system_metrics_sampling_interval(1)
            mlflow.set_system_metrics_samples_before_logging(1)
        self.run = mlflow.start_run(run_name=self.run_name, tags=self.tags, nested=self.nested,
                                    log_system_metrics=self.system_metrics)
        try:
            self._log_inputs()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def _log_inputs(self) -> None:
        log_training_inputs(self.config_dict, self.dataset, self.tags.get("data_digest"))

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        log_epoch(epoch, metrics)

    def log_metrics(self, metrics: dict) -> None:
        log_metrics(metrics)

    def log_model(self, model_dir: str | os.PathLike, example: pd.DataFrame, example_out: pd.DataFrame,
                  register: bool = True, alias: str | None = "challenger", k: int = 10) -> str | None:
        """Log the saved model on this run (see :func:`~recsys_hyper.tracking.registry.log_pyfunc_model`)."""
        self.model_version = log_pyfunc_model(model_dir, example, example_out, register, alias, k)
        return self.model_version

    @whole
    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.system_metrics:
                _await_system_metrics(self.run.info.run_id)
            mlflow.end_run(status="FINISHED")
            return
        with contextlib.suppress(Exception):          # the store may be what failed: the error says so
            mlflow.end_run(status=end_status(exc_type))


@whole
def log_training_inputs(config_dict: dict, dataset, digest: str | None = None) -> None:
    """What a model was trained from, on the active run: every hyper-parameter (``model.*``,
    ``train.*``), the training data as an MLflow input dataset (context ``training``) and its size;
    ``digest``: the data's content digest (the run's and the registered version's ``data_digest``
    tag), used as the dataset's digest and the ``data.digest`` param, so that one value traces
    the data everywhere."""
    mlflow.log_params(_flatten(config_dict))
    ds = dataset
    inputs = log_dataset(ds, "training", digest)
    mlflow.log_params({"data.interactions": ds.n_interactions, "data.users": len(ds.user_ids()),
                       "data.items": len(ds.item_ids()), "data.digest": inputs.digest})


def log_dataset(dataset, context: str, digest: str | None = None):
    """``dataset``'s interactions as an MLflow input dataset of the active run (``context``:
    ``training``, ``evaluation``), with the data's content digest; returns MLflow's dataset."""
    with warnings.catch_warnings():  # MLflow guesses among equivalent local source types
        warnings.simplefilter("ignore", UserWarning)
        inputs = mlflow.data.from_pandas(dataset.interactions, source=str(dataset.source), targets="rating",
                                         name=Path(str(dataset.source)).name or "interactions", digest=digest)
        mlflow.log_input(inputs, context=context)
    return inputs


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


@whole
def log_evaluation(table: pd.DataFrame, params: dict, figure, artifacts, data_dir: str, seconds: float,
                   experiment: str = EVALUATION_EXPERIMENT, run_name: str | None = None, tags: dict | None = None,
                   tracking_uri: str | None = None, nested: bool = False, dataset=None,
                   data_digest: str | None = None) -> str:
    """Log a cold-start evaluation: a parent run (``params``, the results ``table``, the k-curve
    ``figure``, the ``artifacts`` files that exist) with a nested child run per (method, k) row of
    ``table``; ``dataset``: logged as the run's input (context ``evaluation``) with ``data_digest``
    (also its tag). Returns the parent run id."""
    configure(tracking_uri)
    mlflow.set_experiment(experiment)
    with tracked_run(run_name=run_name or "cold-start evaluation", tags={"kind": "cold-start-evaluation",
                                                                        **(tags or {})},
                     nested=nested) as parent:
        mlflow.log_params(params)
        mlflow.set_tag("data_dir", str(Path(data_dir).resolve()) if Path(data_dir).exists() else data_dir)
        if dataset is not None:
            log_dataset(dataset, "evaluation", data_digest)
            if data_digest:
                mlflow.set_tag("data_digest", data_digest)
        for row in table.to_dict(orient="records"):
            method, k = row["method"], int(row["k"])
            with tracked_run(run_name=f"{method} k={k}", nested=True,
                             tags={"method": method, "k": str(k), "kind": "cold-start-result"}):
                mlflow.log_params({"method": method, "k": k})
                mlflow.log_metrics({metric_name(key): float(v) for key, v in row.items()
                                    if key not in ("method", "k") and v == v})  # v == v drops NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.log_table(data=table.rename(columns=metric_name), artifact_file="cold_start_results.json")
        mlflow.log_figure(figure, "k_curve.png")
        for path in artifacts:
            if Path(path).is_file():
                mlflow.log_artifact(str(path))
        mlflow.log_metric("seconds", seconds)
        return parent.info.run_id


@whole
def log_onboarding(curve: pd.DataFrame, to_reach: pd.DataFrame, params: dict, metrics: dict, figure,
                   experiment: str = EVALUATION_EXPERIMENT, parent_run_id: str | None = None,
                   tags: dict | None = None) -> str:
    """Log an onboarding evaluation (the elicitation protocol, and the explanations' faithfulness):
    ``params``, ``metrics``, one metric per (strategy, measure) with the number of questions as
    its step, the ``curve`` and ``to_reach`` tables and the ``figure``; nested under
    ``parent_run_id`` when given (a cold-start evaluation's run). Returns the run id."""
    configure()
    mlflow.set_experiment(experiment)
    with tracked_run(run_name="onboarding", parent_run_id=parent_run_id,
                     tags={"kind": "onboarding-evaluation", **(tags or {})}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items() if v == v})
        for row in curve.to_dict(orient="records"):
            for key, value in row.items():
                if key not in ("strategy", "questions") and value == value:
                    mlflow.log_metric(metric_name(f"{row['strategy']}/{key}"), float(value),
                                      step=int(row["questions"]))
        log_table(curve, "onboarding_curve.json")
        log_table(to_reach, "onboarding_to_reach.json")
        mlflow.log_figure(figure, "onboarding_curve.png")
        with tempfile.TemporaryDirectory() as tmp:               # the curve as data, for the notebook
            curve.to_parquet(Path(tmp) / "onboarding_curve.parquet", index=False)
            mlflow.log_artifact(str(Path(tmp) / "onboarding_curve.parquet"))
        return run.info.run_id


# ---------------------------------------------------------------------------- the nightly pipeline

@contextlib.contextmanager
def night_run(date: str, experiment: str, run_id: str | None = None, tags: dict | None = None):
    """The parent run of one night, resumed when ``run_id`` names an earlier attempt's run (a new
    one only when that run no longer exists; any other error reading it is raised). Nested runs a
    dead attempt left RUNNING are ended as KILLED."""
    from mlflow.exceptions import MlflowException

    configure()
    mlflow.set_experiment(experiment)
    client = MlflowClient()
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            run_id = None
    with tracked_run(run_id=run_id, run_name=None if run_id else f"nightly {date}",
                     tags=None if run_id else {"kind": "nightly", "date": date, **(tags or {})}) as run:
        for stale in client.search_runs([run.info.experiment_id],
                                        f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'"):
            client.set_terminated(stale.info.run_id, status="KILLED")
        yield run.info.run_id


@contextlib.contextmanager
def step_run(name: str, run_id: str | None = None, system_metrics: bool = False):
    """A nested run for one step of the night; ``run_id``: resume the run of an attempt that died.
    ``system_metrics``: sample CPU and memory into the run (as ``train`` does)."""
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(1)
        mlflow.set_system_metrics_samples_before_logging(1)
    started = (dict(run_id=run_id) if run_id is not None
               else dict(run_name=name, tags={"kind": "nightly-step", "step": name}))
    with tracked_run(nested=True, log_system_metrics=system_metrics, **started) as run:
        yield run.info.run_id
        if system_metrics:
            _await_system_metrics(run.info.run_id)


@whole
def log_step(outputs: dict) -> None:
    """A step's numeric outputs as metrics, the rest as params (long values are cut), every name
    by :func:`metric_name`. A figure that could not be measured (NaN or infinite: a cohort with no
    relevant return has no recall) is left out; the night's state keeps it."""
    numbers = {k for k, v in outputs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics = {metric_name(k): float(outputs[k]) for k in numbers if math.isfinite(outputs[k])}
    params = {metric_name(k): (json.dumps(v, default=str) if not isinstance(v, str) else v)[:500]
              for k, v in outputs.items() if k not in numbers}
    if metrics:
        mlflow.log_metrics(metrics)
    if params:
        mlflow.log_params(params)


@whole
def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """A table on the active run (replaced if logged again)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.log_table(data=frame.rename(columns=metric_name), artifact_file=artifact_file)


@whole
def log_metrics(metrics: dict) -> None:
    """Metrics on the active run."""
    mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items()})


@whole
def log_choices(tuning: dict | None) -> None:
    """What a fit chose on its validation users (``model.json``'s ``tuning``), on the active run:
    the whole record as ``tuning.json`` and every chosen number as a ``chosen.*`` metric (e.g.
    ``chosen.rating_blend.5.mf``), so that runs can be compared on them."""
    if not tuning:
        return
    mlflow.log_dict({k: v for k, v in tuning.items() if k != "scores"}, "tuning.json")
    numbers = {f"chosen.{k}": float(v) for k, v in _flatten(tuning.get("chosen", {})).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        mlflow.log_metrics(numbers)


@whole
def log_epoch(epoch: int, metrics: dict) -> None:
    """Per-epoch training metrics on the active run (a training callback)."""
    mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)


@whole
def tag_run(**tags) -> None:
    """Tags on the active run."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


@whole
def tag_night(**tags) -> None:
    """Tags on the night's parent run (called outside any step run)."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


@whole
def log_artifact_to_run(run_id: str, path: str | os.PathLike) -> None:
    configure()
    MlflowClient().log_artifact(run_id, str(path))
