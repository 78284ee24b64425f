"""Forget users: an erasure request carried out on a nightly's work folder and its tracking store.

``recsys-hyper pipeline forget --work W --users FILE`` removes every row of the listed users from
every Parquet file under the work folder (the snapshot's partitions and users table, scores and
user heads, cohorts, splits, evaluation tables, quarantined files), scrubs their ids from the
text the night keeps (quarantine reasons, the state's strings), rewrites the evaluation tables the
nights logged to the tracking store without their rows, and records them so that no later night
merges their events again, even if the landing still holds them. Each file is rewritten
atomically (a crash leaves it as it was or without the rows, never half of it; run the command
again to finish).

The record (``WORK/forgotten.json``) keeps salted SHA-256 digests of the ids, never the ids, and
asks the next night to train without warm start (the champion that saw them keeps serving until
the next night's gate replaces it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import atomic_file
from ..data import schema as S
from ..errors import RecsysHyperError

log = logging.getLogger(__name__)

RECORD = "forgotten.json"
#: what replaces a forgotten id in the text a night keeps
SCRUBBED = "<forgotten>"


def id_digest(work_id: str, value) -> str:
    """A forgotten id as the record keeps it: SHA-256 of the work folder's id and the id's text."""
    kind = "int" if isinstance(value, (int, np.integer)) else "str"
    return hashlib.sha256(f"{work_id}\0{kind}\0{value}".encode()).hexdigest()


def read_record(work: Path) -> dict:
    path = Path(work) / RECORD
    if not path.is_file():
        return {"digests": [], "retrain_pending": False, "requests": []}
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("digests"), list):
            raise ValueError("no digests")
    except (OSError, ValueError, AttributeError) as exc:
        raise RecsysHyperError(f"{path}: the record of forgotten users cannot be read ({exc}); restore it from a "
                               f"backup: without it a night would merge forgotten users' events again") from None
    return record


def _write_record(work: Path, record: dict) -> None:
    with atomic_file(Path(work) / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def forgotten_mask(ids, work: Path, work_id: str) -> np.ndarray:
    """Which of ``ids`` (an array of user ids) belong to forgotten users."""
    return mask_of(ids, set(read_record(work)["digests"]), work_id)


def forgotten_digests(work: Path) -> set[str]:
    """The digests of the work folder's forgotten users (what :func:`mask_of` compares with)."""
    return set(read_record(work)["digests"])


def mask_of(ids, digests: set[str], work_id: str) -> np.ndarray:
    """Which of ``ids`` have their :func:`id_digest` in ``digests``."""
    ids = np.asarray(ids)
    if not digests or not len(ids):
        return np.zeros(len(ids), dtype=bool)
    uniques, inverse = np.unique(ids, return_inverse=True)
    hit = np.array([id_digest(work_id, u.item() if hasattr(u, "item") else u) in digests for u in uniques])
    return hit[inverse]


def retrain_pending(work: Path) -> bool:
    return bool(read_record(work).get("retrain_pending"))


def requests(work: Path) -> int:
    """How many erasure requests the work folder has carried out (a model trained after the n-th
    never saw the users of the first n)."""
    return len(read_record(work).get("requests", []))


def retrained(work: Path, upto: int) -> None:
    """A model trained without warm start after the first ``upto`` requests was gated: no later
    model starts from one that saw their users (a request made since keeps the retraining due)."""
    record = read_record(work)
    if record.get("retrain_pending") and len(record.get("requests", [])) == upto:
        record["retrain_pending"] = False
        _write_record(work, record)


@dataclass
class ForgetReport:
    users: int = 0
    rows: dict = field(default_factory=dict)          # area -> rows removed
    files: int = 0
    text_files: int = 0
    artifacts: int = 0
    runs: int = 0
    left: list = field(default_factory=list)          # files that could not be read (named for a person)

    def summary(self, work: Path) -> str:
        rows = ", ".join(f"{n:,} from {area}" for area, n in sorted(self.rows.items())) or "none found"
        lines = [f"forgot {self.users:,} users in {work}: rows removed: {rows} ({self.files} files rewritten, "
                 f"{self.text_files} text files scrubbed); tracking store: {self.artifacts} artifacts of {self.runs} "
                 f"runs rewritten",
                 "  their later events are refused by every night; the next night trains without warm start "
                 "(until its gate, the current champion, which saw them, keeps serving)"]
        if self.left:
            lines.append(f"  could not be read, so not checked (remove or fix them by hand): {', '.join(self.left[:5])}")
        return "\n".join(lines)


def forget(work: Path, users_file: str | os.PathLike, experiment: str) -> ForgetReport:
    """Carry out the erasure of the users listed in ``users_file`` (see the module docstring)."""
    from .. import tracking
    from .catalogue import read_id_list
    from .nightly import _snapshot_kinds
    from .state import RunLock, work_identity

    work = Path(work).resolve()
    if not (work / "work.json").is_file():
        raise RecsysHyperError(f"--work {work} is no nightly work folder (no work.json): pass the folder the "
                               f"nightly runs with (--work of `recsys-hyper pipeline nightly`)")
    tracking.ensure_reachable()              # the store is scrubbed too: fail fast, before any file is touched
    report = ForgetReport()
    with RunLock(work / "nightly.lock"):                          # never beside a running night
        work_id = work_identity(work)
        kinds = _snapshot_kinds(work / "snapshot") or {S.USER_ID: "int64"}
        ids = read_id_list(users_file, S.USER_ID, kinds[S.USER_ID], "--users")
        report.users = len(ids)
        record = read_record(work)
        known = set(record["digests"])
        record["digests"] = sorted(known | {id_digest(work_id, v.item() if hasattr(v, "item") else v) for v in ids})
        record["retrain_pending"] = True
        record.setdefault("requests", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "users": len(ids)})
        _write_record(work, record)              # first: a crash from here on still keeps their events out
        values = pa.array(ids)
        for path in sorted(work.rglob("*.parquet")):
            if any(part.startswith(".") for part in path.relative_to(work).parts):
                continue
            removed = _without(path, values, report)
            if removed:
                area = path.relative_to(work).parts[0]
                report.rows[area] = report.rows.get(area, 0) + removed
                report.files += 1
                if path.parent.parent.name == S.INTERACTIONS_FILE and path.parent.parent.parent.name == "snapshot":
                    _redigest(path)
        pattern = _pattern(ids)
        for path in [*sorted((work / "quarantine").rglob("*.txt")), *sorted((work / "state").glob("*.json"))]:
            report.text_files += _scrub(path, pattern)
        tracking.configure()
        report.runs, report.artifacts = _scrub_store(work_id, experiment, values, report)
    return report


def _without(path: Path, ids: pa.Array, report: ForgetReport) -> int:
    """Rewrite one Parquet file without the rows of ``ids`` (its ``user_id`` column); rows removed."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError):
        report.left.append(str(path))
        return 0
    if S.USER_ID not in schema.names:
        return 0
    table = pq.read_table(path)
    column = table.column(S.USER_ID)
    try:
        hit = pc.is_in(column, value_set=ids.cast(column.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return 0                                       # ids of another type: none of them is here
    hit = pc.fill_null(hit, False)
    n = int(pc.sum(hit).as_py() or 0)
    if n:
        kept = table.filter(pc.invert(hit))
        with atomic_file(path) as tmp:
            pq.write_table(kept, tmp)
    return n


def _redigest(part: Path) -> None:
    """The digest of the night whose partition file ``part`` was rewritten, over all its files."""
    from .snapshot import DIGEST_FILE, partition_digest

    (part.parent / DIGEST_FILE).unlink(missing_ok=True)
    partition_digest(part.parent)


def _pattern(ids) -> re.Pattern:
    words = sorted({str(v) for v in ids}, key=len, reverse=True)
    return re.compile(r"(?<![\w.-])(?:'|\")?(" + "|".join(map(re.escape, words)) + r")(?:'|\")?(?![\w.-])")


def _scrub(path: Path, pattern: re.Pattern) -> int:
    """Replace forgotten ids in a text file the night keeps (quarantine reasons' examples; in a
    JSON state, its strings only, never its numbers). 1 when the file changed."""
    text = path.read_text(errors="replace")
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError:
            return 0
        new = json.dumps(_scrub_strings(doc, pattern), indent=2)
        changed = json.loads(new) != doc
    else:
        new = pattern.sub(SCRUBBED, text)
        changed = new != text
    if changed:
        with atomic_file(path) as tmp:
            tmp.write_text(new)
    return int(changed)


def _scrub_strings(doc, pattern):
    if isinstance(doc, str):
        return pattern.sub(SCRUBBED, doc)
    if isinstance(doc, list):
        return [_scrub_strings(v, pattern) for v in doc]
    if isinstance(doc, dict):
        return {k: _scrub_strings(v, pattern) for k, v in doc.items()}
    return doc


def _scrub_store(work_id: str, experiment: str, ids: pa.Array, report: ForgetReport) -> tuple[int, int]:
    """The work folder's nights in the tracking store (their runs, the steps' and the evaluations'
    nested runs): every Parquet artifact with a ``user_id`` column rewritten without their rows."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0, 0
    runs = client.search_runs([found.experiment_id], max_results=50_000)
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    ours = {r.info.run_id for r in runs if r.data.tags.get("work_id") == work_id}

    def belongs(run_id: str) -> bool:
        seen = set()
        while run_id is not None and run_id not in seen:
            if run_id in ours:
                return True
            seen.add(run_id)
            run_id = parent.get(run_id)
        return False

    n_runs = n_artifacts = 0
    for r in runs:
        if not belongs(r.info.run_id):
            continue
        changed = 0
        for path in _artifact_files(client, r.info.run_id):
            if not path.endswith(".parquet"):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path=path, dst_path=tmp))
                if _without(local, ids, report):
                    folder = os.path.dirname(path)
                    client.log_artifact(r.info.run_id, str(local), artifact_path=folder or None)
                    changed += 1
        n_runs += bool(changed)
        n_artifacts += changed
    return n_runs, n_artifacts


def _artifact_files(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out += _artifact_files(client, run_id, info.path)
        else:
            out.append(info.path)
    return out
