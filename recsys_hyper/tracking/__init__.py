"""MLflow tracking: the only package that imports MLflow (plus the pyfunc file MLflow loads).

* :mod:`.store`: where runs go (``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``), the
  fail-fast reachability check, and reading runs back (the notebook's helpers);
* :mod:`.runs`: training runs, cold-start evaluation runs, the nightly parent and step runs;
* :mod:`.registry`: the model as a models-from-code pyfunc, registered as ``recsys-hyper`` with
  aliases, and ``models:/...`` URIs resolved to local model directories.

It receives frames, figures and files to log; it imports neither evaluation nor scoring.
"""

from .registry import (MODEL_ARTIFACT, REGISTERED_MODEL, alias_uri, alias_version, find_version, is_model_uri, load_pyfunc,
                       log_pyfunc_model, promote, resolve_model, rollback, set_alias, version_tags, version_uri)
from .runs import (EVALUATION_EXPERIMENT, TRAINING_EXPERIMENT, TrainingRun, log_artifact_to_run, log_choices, log_epoch,
                   log_evaluation, log_metrics, log_onboarding, log_table, log_step, log_dataset, log_training_inputs, night_run, step_run, tag_night,
                   tag_run)
from .store import (DEFAULT_TRACKING_URI, check_sqlite_store, child_runs, configure, describe_store_error,
                    download_artifact, ensure_reachable, find_runs, metric_name, open_store)

__all__ = ["MODEL_ARTIFACT", "REGISTERED_MODEL", "alias_uri", "alias_version", "find_version", "is_model_uri", "load_pyfunc",
           "log_pyfunc_model", "promote", "resolve_model", "rollback", "set_alias", "version_tags", "version_uri", "EVALUATION_EXPERIMENT", "TRAINING_EXPERIMENT",
           "TrainingRun", "log_artifact_to_run", "log_choices", "log_epoch", "log_evaluation", "log_metrics", "log_onboarding", "log_table", "log_step", "log_dataset", "log_training_inputs", "night_run", "step_run",
           "tag_night", "tag_run", "DEFAULT_TRACKING_URI", "check_sqlite_store", "child_runs", "configure",
           "describe_store_error", "download_artifact", "ensure_reachable",
           "find_runs", "metric_name", "open_store"]
