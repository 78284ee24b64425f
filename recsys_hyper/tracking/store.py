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
    # nor its "View run ... at: http://..." lines, one per run with a server (26 for one evaluate):
    # the commands say where their runs are (set the variable to false to have them back)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_store(uri: str, write: bool = True) -> None:
    """What MLflow would otherwise retry for minutes or report as a traceback: a ``sqlite:///``
    store that names a directory or a file that is no database, or (``write``) one that cannot be
    written (a read-only file, folder or file system)."""
    path = sqlite_path(uri)
    if path is None:
        return
    fix = "point MLFLOW_TRACKING_URI at a database file, e.g. sqlite:///mlflow.db"
    if path.is_dir():
        raise RecsysHyperError(f"the MLflow tracking store {uri} names a directory ({path}), not a database file; "
                               f"{fix}. Nothing was done.")
    if path.exists():
        if not path.is_file():
            raise RecsysHyperError(f"the MLflow tracking store {uri} is not a regular file; {fix}. Nothing was done.")
        try:
            with path.open("rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise RecsysHyperError(f"the MLflow tracking store {uri} cannot be read ({exc.strerror}); fix its "
                                   f"permissions or {fix}. Nothing was done.") from None
        if header and header != SQLITE_HEADER:
            raise RecsysHyperError(f"the MLflow tracking store {uri} is not an SQLite database (the file holds "
                                   f"something else); {fix}. Nothing was done.")
        if write and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            raise RecsysHyperError(f"the MLflow tracking store {uri} is read-only (the file or its folder cannot be "
                                   f"written: permissions, or a read-only file system); runs and models could not be "
                                   f"recorded: point MLFLOW_TRACKING_URI at a writable store, or pass --no-track where "
                                   f"the command has it. Nothing was done.")
        return
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RecsysHyperError(f"the MLflow tracking store {uri} does not exist and cannot be created under "
                               f"{existing} (not a writable folder); {fix}. Nothing was done.")


_OPENED: set[str] = set()


def open_sqlite_once(uri: str) -> None:
    """The first connection of this process to a ``sqlite:///`` store, under a file lock beside it:
    creating or migrating a store's tables from two processes at once fails in one of them (MLflow
    runs the migrations without a lock of its own)."""
    path = sqlite_path(uri)
    if path is None or uri in _OPENED:
        return
    from filelock import FileLock, Timeout

    lock_file = path.with_name(path.name + ".lock")
    try:
        lock = FileLock(str(lock_file), timeout=120)
        with lock:
            MlflowClient(uri).search_experiments(max_results=1)
    except Timeout:
        raise RecsysHyperError(f"the MLflow tracking store {uri} is being created or migrated by another process "
                               f"(the lock {lock_file} was held for 2 minutes); run again when it is done") from None
    except OSError:              # no lock beside a store we may not write: only reading, no migration to guard
        MlflowClient(uri).search_experiments(max_results=1)
    _OPENED.add(uri)


def ensure_reachable(timeout_s: int = 5, write: bool = True) -> None:
    """Fail fast, with the URI in the message, when the tracking store cannot be reached (or, with
    ``write``, not written: a read-only SQLite file)."""
    uri = configure()
    check_sqlite_store(uri, write=write)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    try:
        open_sqlite_once(uri)
        MlflowClient().search_experiments(max_results=1)
    except RecsysHyperError:
        raise
    except Exception as exc:  # connection refused, DNS, HTTP errors ...
        raise RecsysHyperError(f"the MLflow tracking store at {uri} cannot be reached ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]}); start it (mlflow server ...) or point "
                               f"MLFLOW_TRACKING_URI at a running one. Nothing was done.") from None
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def describe_store_error(exc: BaseException) -> str | None:
    """One line for a failure of the tracking store met in the middle of work (a store made
    read-only, a full disk under SQLite, SQLite's write lock held by another process, a server
    that stopped answering); ``None`` when ``exc`` is not one."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    modules = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3", "alembic")
    if not any(type(e).__module__.split(".")[0] in modules for e in chain):
        return None
    text = " ".join(str(e) for e in chain).lower()
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    uri = mlflow.get_tracking_uri()
    if "readonly database" in text or "read-only file system" in text:
        hint = "the store is read-only: point MLFLOW_TRACKING_URI at a writable store"
    elif "database or disk is full" in text or "no space left" in text:
        hint = "the store's disk is full: free some space, then run again"
    elif "database is locked" in text:
        hint = ("another process holds the SQLite store's write lock: run again, or use a tracking server "
                "(mlflow server) when several jobs write at once")
    else:
        hint = "check the store (MLFLOW_TRACKING_URI), then run again"
    return f"the MLflow tracking store at {uri} failed ({type(exc).__name__}: {first}); {hint}"


def metric_name(name: str) -> str:
    """One naming rule for every metric logged, in every experiment: ``<metric>_at_<k>`` (MLflow
    allows no '@'): ``ndcg@10`` and ``val_ndcg10`` -> ``ndcg_at_10`` and ``val_ndcg_at_10``."""
    import re

    return re.sub(r"(?<![a-z])(ndcg|recall)(\d+)", r"\1_at_\2", name.replace("@", "_at_"))


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
