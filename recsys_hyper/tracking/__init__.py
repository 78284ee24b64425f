"""MLflow tracking: the only package that imports MLflow (plus the pyfunc file MLflow loads).

* :mod:`.store`: where runs go (``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``), the
  fail-fast reachability check, and reading runs back (the notebook's helpers);
* :mod:`.runs`: training runs, cold-start evaluation runs, the nightly parent and step runs;
* :mod:`.registry`: the model as a models-from-code pyfunc, registered as ``recsys-hyper`` with
  aliases, and ``models:/...`` URIs resolved to local model directories.

It receives frames, figures and files to log; it imports neither evaluation nor scoring.
"""

from pathlib import Path

from ..config import EVALUATION_EXPERIMENT, REGISTERED_MODEL, TRAINING_EXPERIMENT
from ..lazy import lazy_exports

#: the submodules' names, imported on first use: MLflow (a second to import) is loaded only by a
#: command that tracks or reads the store, not by one that scores a model directory
_EXPORTS = {
    "registry": ("MODEL_ARTIFACT", "alias_uri", "alias_version", "find_version", "knows_work_folder", "load_pyfunc", "log_pyfunc_model",
                 "promote", "resolve_model", "rollback", "set_alias", "version_exists", "version_tags",
                 "version_uri"),
    "runs": ("TrainingRun", "log_artifact_to_run", "log_choices", "log_epoch", "log_evaluation", "log_metrics",
             "log_onboarding", "log_table", "log_step", "log_dataset", "log_training_inputs", "night_run", "step_run",
             "tag_night", "tag_run"),
    "store": ("DEFAULT_TRACKING_URI", "check_sqlite_store", "child_runs", "configure", "describe_store_error",
              "download_artifact", "ensure_reachable", "find_runs", "metric_name", "open_store"),
}
_NAMES, __getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = ["EVALUATION_EXPERIMENT", "REGISTERED_MODEL", "TRAINING_EXPERIMENT", "is_model_uri", "model_folder", *_NAMES]


def is_model_uri(text: str) -> bool:
    """Whether ``text`` names an MLflow model (``models:/...``, ``runs:/...``) rather than a folder."""
    return str(text).startswith(("models:/", "runs:/"))


def model_folder(model) -> Path:
    """``model`` as a local model directory (no MLflow involved), or the error that says what to pass."""
    from ..errors import RecsysHyperError

    path = Path(str(model))
    if not path.is_dir():
        raise RecsysHyperError(f"{path}: model not found; pass a model directory (the --out of "
                               f"`recsys-hyper train`) or an MLflow URI such as models:/{REGISTERED_MODEL}@champion")
    return path


def __dir__():
    return sorted(__all__)
