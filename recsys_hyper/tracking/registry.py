"""The model registry: the model logged as a models-from-code pyfunc, registered as
``recsys-hyper`` with aliases (``challenger``, ``champion``), and resolved back to a local model
directory from ``models:/...`` / ``runs:/...`` URIs."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ..errors import RecsysHyperError
from .store import configure

REGISTERED_MODEL = "recsys-hyper"
MODEL_ARTIFACT = "model_dir"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def log_pyfunc_model(model_dir: str | os.PathLike, example: pd.DataFrame, example_out: pd.DataFrame,
                     register: bool = True, alias: str | None = "challenger", k: int = 10) -> str | None:
    """Log a saved model directory on the active run as a models-from-code pyfunc, its signature
    inferred from ``example`` (grouped histories) and ``example_out`` (what the model returns for
    them); register it as ``recsys-hyper`` and set ``alias``. Returns the registered version
    (``None`` when not registering)."""
    from mlflow.models import infer_signature

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



def alias_version(alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except Exception:
        return None


def set_alias(alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, str(version))


def alias_uri(alias: str) -> str:
    """``models:/recsys-hyper@alias``."""
    return f"models:/{REGISTERED_MODEL}@{alias}"
