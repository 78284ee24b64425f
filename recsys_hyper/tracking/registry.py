"""The model registry: the model logged as a models-from-code pyfunc, registered as
``recsys-hyper`` with aliases (``challenger``, ``champion``), and resolved back to a local model
directory from ``models:/...`` / ``runs:/...`` URIs."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ..config import REGISTERED_MODEL
from ..errors import RecsysHyperError
from ..interrupts import whole
from . import is_model_uri, model_folder
from .store import configure

MODEL_ARTIFACT = "model_dir"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def find_version(tags: dict, name: str = REGISTERED_MODEL, run_id: str | None = None) -> str | None:
    """The newest registered version of ``name`` carrying every one of ``tags`` (and, with
    ``run_id``, logged by that run, where a tag not set yet also matches: a registration killed
    before its tags were written), if any."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    unset = (None,) if run_id is not None else ()
    found = [v for v in versions if all(v.tags.get(k) in (str(t), *unset) for k, t in tags.items())
             and (run_id is None or v.run_id == run_id)]
    return str(max(int(v.version) for v in found)) if found else None


def knows_work_folder(work_id: str, name: str = REGISTERED_MODEL, experiment: str | None = None) -> bool:
    """Whether the store holds anything of the work folder ``work_id``: a version of ``name``
    tagged with it, or a run of ``experiment`` (its nights) tagged with it. A store that was lost
    and replaced holds neither; one a person tidied (versions deleted) still holds the nights' runs."""
    if find_version({"work_id": work_id}, name) is not None:
        return True
    if experiment is None:
        return False
    found = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.work_id = '{work_id}'",
                               max_results=1, output_format="list")
    return bool(found)


def version_exists(version: str, name: str = REGISTERED_MODEL) -> bool:
    """Whether ``name`` still has ``version`` (a person can delete one in the MLflow UI). Only "no
    such version or model" reads as ``False``; any other failure (timeout, server error) is raised."""
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version(name, str(version))
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def version_tags(version: str, name: str = REGISTERED_MODEL) -> dict:
    """The tags of a registered version (its lineage: night, work folder, data digest ...)."""
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


@whole
def log_pyfunc_model(model_dir: str | os.PathLike, example: pd.DataFrame, example_out: pd.DataFrame,
                     register: bool = True, alias: str | None = "challenger", k: int = 10,
                     version_tags: dict | None = None, description: str | None = None,
                     reuse_tags: tuple[str, ...] = (), name: str = REGISTERED_MODEL) -> str | None:
    """Log a saved model directory on the active run as a models-from-code pyfunc, its signature
    inferred from ``example`` (grouped histories) and ``example_out`` (what the model returns for
    them); register it as ``name`` with ``version_tags`` and ``description``, and set ``alias``.
    Returns the registered version (``None`` when not registering).

    ``reuse_tags``: registration is idempotent within a run: a version that this same run already
    registered with the same values of these tags (a night resumed after a kill between the
    registration and the record of it) is returned instead of a new one. A version of another
    run (another night, another work folder, another pipeline on the same store) is never reused."""
    from mlflow.models import infer_signature

    version_tags = {k_: str(v) for k_, v in (version_tags or {}).items()}
    active = mlflow.active_run()
    if register and reuse_tags and active is not None:
        existing = find_version({t: version_tags[t] for t in reuse_tags}, name, run_id=active.info.run_id)
        if existing is not None:
            _describe_version(name, existing, version_tags, description, alias)
            return existing
    # MLflow's hint about integer columns and missing values, and the "Registered model ... already
    # exists" / "Successfully registered" / "Created version" lines it prints to stderr (the caller
    # reports the version); anything else it prints is passed on
    printed = io.StringIO()
    with _pass_on(printed), warnings.catch_warnings(), contextlib.redirect_stderr(printed):
        warnings.simplefilter("ignore", UserWarning)
        signature = _ids_as_sent(infer_signature(example, example_out, params={
            "k": k, "exclude_seen": True, "explain": 0, "ask": 0, "interval": 0.0}))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=name if register else None,
        )
    if not register:
        return None
    version = str(info.registered_model_version)
    _describe_version(name, version, version_tags, description, alias)
    return version


def _ids_as_sent(signature):
    """The signature with the input ``user_id`` of any type: the scoring server casts a JSON column
    to the signature's type with ``astype`` before the model sees it, which would answer a user id
    of 1.5 as user 1; passed as sent, the model's own check refuses what is no id (400)."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = [ColSpec(AnyType(), c.name, required=c.required) if c.name == "user_id" else c
              for c in signature.inputs.inputs]
    signature.inputs = Schema(inputs)
    return signature


def _describe_version(name: str, version: str, tags: dict, description: str | None, alias: str | None) -> None:
    """A registered version's tags, description and alias, and its number on the active run (idempotent)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if description:
        client.update_model_version(name, version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    mlflow.set_tag("registered_version", version)


@contextlib.contextmanager
def _pass_on(printed: io.StringIO):
    """On leaving (normally or not), write to stderr what was printed except MLflow's notes."""
    try:
        yield
    finally:
        kept = [line for line in printed.getvalue().splitlines(keepends=True)
                if not line.startswith(("Successfully registered model", "Registered model", "Created version"))]
        sys.stderr.write("".join(kept))


def _requirements() -> list[str]:
    """What the served model imports, pinned to what is installed, so that a serving environment
    matches training; without a local build tag (``2.13.0+cpu`` -> ``2.13.0``), which no package
    index serves."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in ("torch", "pandas", "pyarrow", "numpy", "tqdm", "mlflow")]





def cache_root() -> Path:
    """Where resolved models are kept: ``$RECSYS_HYPER_CACHE``, else ``~/.cache/recsys-hyper/models``."""
    return Path(os.environ.get("RECSYS_HYPER_CACHE") or Path.home() / ".cache" / "recsys-hyper" / "models")


def _cache_key(uri: str) -> str:
    """A key that names the model's content: the store, the run that logged it and the artifact
    path (a registered version never changes; an alias is resolved to its version first)."""
    import hashlib
    import re

    client = MlflowClient()
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))(/.*)?", uri)
    if m:
        name, alias, number, rest = m.groups()
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        content = f"{mv.run_id}|{mv.source}|{rest or ''}"
    else:
        content = uri                                             # runs:/<run id>/<path>: already content-named
    return hashlib.sha256(f"{mlflow.get_tracking_uri()}|{content}".encode()).hexdigest()[:20]


def resolve_model(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local model directory for ``model``: a directory as is, or an MLflow model URI, downloaded
    once into a cache keyed by what it names (so repeated calls, nights and Spark tasks reuse one
    copy; the download is atomic, so a killed one leaves nothing that looks complete)."""
    from ..atomic import atomic_directory

    text = str(model)
    if not is_model_uri(text):
        return model_folder(text)
    configure()
    try:
        target = Path(cache_dir or cache_root()) / _cache_key(text)
        if not (target / "MLmodel").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_directory(target, overwrite=True) as tmp:
                mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(tmp))
                _flatten_download(tmp)
    except RecsysHyperError:
        raise
    except Exception as exc:  # MlflowException, connection errors, ...
        raise RecsysHyperError(f"{text}: cannot be loaded from the MLflow store at {mlflow.get_tracking_uri()} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0]}); check the name / alias "
                               f"and MLFLOW_TRACKING_URI") from None
    return _model_dir_in(target, text)


def _flatten_download(root: Path) -> None:
    """``download_artifacts`` nests a run's artifact under its path; keep the folder holding MLmodel at ``root``."""
    if (root / "MLmodel").is_file():
        return
    found = next(iter(root.rglob("MLmodel")), None)
    if found is not None:
        for child in found.parent.iterdir():
            child.rename(root / child.name)


def _model_dir_in(local: Path, uri: str) -> Path:
    """The ``model_dir`` artifact inside a downloaded pyfunc, as its MLmodel file records it; one
    that points outside the model's own folder is refused."""
    import yaml

    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        rel = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get(MODEL_ARTIFACT, {})
        if rel.get("path"):
            inside = (local / rel["path"]).resolve()
            if local.resolve() not in inside.parents:
                raise RecsysHyperError(f"{uri}: its MLmodel points the '{MODEL_ARTIFACT}' artifact outside the "
                                       f"model's folder ({rel['path']}); refused")
            if (inside / "model.json").is_file():
                return inside
    raise RecsysHyperError(f"{uri}: not a recsys-hyper model (its MLmodel has no '{MODEL_ARTIFACT}' artifact); "
                           f"was it logged by `recsys-hyper train`?")


def load_pyfunc(uri: str):
    """The logged pyfunc (for checks and Spark UDFs)."""
    configure()
    return mlflow.pyfunc.load_model(uri)



def alias_version(alias: str, name: str = REGISTERED_MODEL) -> str | None:
    """The version behind ``name@alias``; ``None`` only when the alias (or the registered model)
    does not exist. Any other failure (timeout, server error, no permission) is raised: it must
    never pass for "no champion yet"."""
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        code, text = getattr(exc, "error_code", ""), str(exc)
        if code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                 and "not found" in text):
            return None
        raise RecsysHyperError(f"cannot read the alias {name}@{alias} from the MLflow store at "
                               f"{mlflow.get_tracking_uri()} ({code}: {text.splitlines()[0][:200]}); nothing was "
                               f"decided: fix the store and run again") from None
    except Exception as exc:  # connection errors, timeouts
        raise RecsysHyperError(f"cannot read the alias {name}@{alias} from the MLflow store at "
                               f"{mlflow.get_tracking_uri()} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                               f"nothing was decided: fix the store and run again") from None


@whole
def set_alias(alias: str, version: str, name: str = REGISTERED_MODEL) -> None:
    MlflowClient().set_registered_model_alias(name, alias, str(version))


#: the version tag that records which version was champion before this one (for a rollback)
PREVIOUS_CHAMPION_TAG = "previous_champion"


def promote(version: str, name: str = REGISTERED_MODEL, alias: str = "champion") -> str | None:
    """Move ``name@alias`` to ``version``, recording on it the version it replaces (its
    ``previous_champion`` tag) so that :func:`rollback` can undo the move. Returns the replaced
    version (``None``: the alias was not set). Promoting the current champion changes nothing."""
    client = MlflowClient()
    version = str(version)
    if not version_exists(version, name):
        raise RecsysHyperError(f"{name} has no version {version} in the MLflow store at {mlflow.get_tracking_uri()}; "
                               f"list its versions in the MLflow UI (Models) and pass one of them")
    previous = alias_version(alias, name)
    if previous == version:
        return previous
    if previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
    set_alias(alias, version, name)
    return previous


def rollback(name: str = REGISTERED_MODEL, alias: str = "champion") -> tuple[str, str]:
    """Move ``name@alias`` back to the version it replaced last (the ``previous_champion`` tag of
    the current one). Returns (from, to)."""
    current = alias_version(alias, name)
    if current is None:
        raise RecsysHyperError(f"{name}@{alias} is not set in the MLflow store at {mlflow.get_tracking_uri()}: "
                               f"nothing to roll back")
    previous = MlflowClient().get_model_version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RecsysHyperError(f"{name}@{alias} (version {current}) replaced no earlier version: nothing to roll "
                               f"back to; promote a version by number instead (recsys-hyper model promote --version N)")
    set_alias(alias, previous, name)
    return current, previous


def alias_uri(alias: str, name: str = REGISTERED_MODEL) -> str:
    """``models:/recsys-hyper@alias``."""
    return f"models:/{name}@{alias}"


def version_uri(version: str, name: str = REGISTERED_MODEL) -> str:
    """``models:/recsys-hyper/<version>``: one registered version, whatever the aliases say later."""
    return f"models:/{name}/{version}"
