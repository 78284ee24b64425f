"""What a nightly run leaves behind to be idempotent and crash-safe: a per-date state file, a
lock, and a stable user split."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..errors import RecsysHyperError

log = logging.getLogger(__name__)

STEPS = ("validate", "merge", "split", "train", "evaluate", "gate", "score", "cohort", "cold_start_eval")


@dataclass
class NightState:
    """Completed steps of one date and what each produced; rewritten atomically after each step."""

    date: str
    path: Path
    done: dict = field(default_factory=dict)
    started: dict = field(default_factory=dict)      # step -> the tracking run it runs in

    @classmethod
    def load(cls, root: Path, date: str) -> "NightState":
        """The night's state; a state that cannot be read (damaged, edited) is moved aside to
        ``date=D.json.damaged`` with a warning, and the night runs from its first step (its outputs
        are replaced, nothing is duplicated): no state file can make every later run fail."""
        path = root / "state" / f"date={date}.json"
        try:
            saved = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(saved, dict) or not isinstance(saved.get("done", {}), dict) \
                    or not isinstance(saved.get("started", {}), dict) \
                    or not all(isinstance(v, dict) for v in saved.get("done", {}).values()):
                raise ValueError("not a night's state")
        except (ValueError, UnicodeDecodeError) as exc:
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            log.warning("%s: the night's state is damaged (%s); kept as %s, and the night %s runs from its first "
                        "step (its outputs are replaced, nothing is duplicated)", path, exc, aside.name, date)
            saved = {}
        return cls(date, path, saved.get("done", {}), saved.get("started", {}))

    def is_done(self, step: str) -> bool:
        return step in self.done

    @property
    def complete_night(self) -> bool:
        return all(step in self.done for step in STEPS)

    @property
    def started_any(self) -> bool:
        return any(step in self.done for step in STEPS)

    def gone(self, files: list[Path], root: Path) -> list[str]:
        """The files the night's validation read that are no longer among ``files`` (moved away,
        deleted): a change like a new file, after which the night runs again for what is there."""
        validated = self.done.get("validate")
        if validated is None:
            return []
        present = {str(f.relative_to(root)) for f in files}
        seen = validated.get("seen")
        if seen is None:                                    # a state of an earlier version: absolute names
            return sorted(str(Path(f).relative_to(root)) for f in validated.get("valid_files", [])
                          if Path(f).is_relative_to(root) and str(Path(f).relative_to(root)) not in present)
        return sorted(rel for rel in seen if rel not in present)

    def redo_from(self, step: str) -> None:
        """Forget ``step`` and every step after it (they run again); earlier steps stay done."""
        later = STEPS[STEPS.index(step):]
        self.done = {k: v for k, v in self.done.items() if k not in later}
        self.started = {k: v for k, v in self.started.items() if k not in later}
        self._write()

    def unseen(self, files: list[Path], root: Path) -> list[str]:
        """The files of ``files`` (below ``root``) that the night's validation did not see as they
        are now: new names, or files changed since (size or modification time). Files it
        quarantined were moved away: put back, they are unseen."""
        validated = self.done.get("validate")
        if validated is None:
            return []
        seen = validated.get("seen")
        if seen is None:                                    # a state of an earlier version: names only
            names = {str(Path(f)) for f in validated.get("valid_files", [])}
            return [str(f.relative_to(root)) for f in files if str(f) not in names]
        return [rel for rel, fp in ((str(f.relative_to(root)), fingerprint(f)) for f in files) if seen.get(rel) != fp]

    def reset(self) -> None:
        """Forget every step (the night runs again from validation); the parent run is kept."""
        self.done = {k: v for k, v in self.done.items() if k == "_run"}
        self.started = {}
        self._write()

    def complete(self, step: str, **outputs) -> None:
        self.done[step] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **outputs}
        self._write()

    def start(self, step: str, run_id: str) -> None:
        """Record the tracking run a step runs in, so that a re-run after a crash resumes it."""
        self.started[step] = run_id
        self._write()

    def _write(self) -> None:
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps({"date": self.date, "done": self.done, "started": self.started}, indent=2,
                                      default=str))


def fingerprint(path: Path) -> list[int]:
    """What tells a landing file apart from a changed one: its size and modification time (ns);
    a link's own when the file it points to is gone."""
    st = path.stat() if path.exists() else path.lstat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def work_identity(work: Path) -> str:
    """The work folder's id (``WORK/work.json``, created once): every model version a nightly
    registers is tagged with it, so that a version is never taken for another folder's."""
    import uuid

    path = Path(work) / "work.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text()).get("work_id")
        except (OSError, ValueError, AttributeError):
            found = None
        if isinstance(found, str) and found:
            return found
        raise RecsysHyperError(f"{path}: cannot be read as the work folder's identity (damaged or edited); restore "
                               f"it, or remove it if no model of this folder was registered yet")
    ident = uuid.uuid4().hex
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"work_id": ident, "work_dir": str(Path(work).resolve()),
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    return ident


class RunLock:
    """An exclusive lock on a file, held by the kernel (``flock``): released when its process ends,
    however it ends, so a lock left by a dead process is free at once and two processes that find
    it free can never both take it. The file names the holder (pid, host, since) for the message
    that refuses a second run; it is removed on release.

    A lock file on a network file system that does not support ``flock`` is refused with an error
    that says so: choose a local work folder."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                who = (f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}" if owner
                       else "a run that is starting")
                raise RecsysHyperError(f"another nightly run holds {self.path} ({who}); wait for it to finish") from None
            except OSError as exc:
                os.close(fd)
                raise RecsysHyperError(f"cannot lock {self.path} ({exc.strerror}): the file system of the work "
                                       f"folder does not support file locks; choose a local work folder") from exc
            try:                                   # still the file at the path (not one a holder removed)?
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)      # while still held: a waiting process then retries on a new file
            os.close(self._fd)
            self._fd = None


def stable_split(user_ids, val_fraction: float = 0.15, test_fraction: float = 0.15) -> pd.Series:
    """train / validation / test by a hash of the user id: a user stays in the same split every
    night, whatever else arrives."""
    def unit(u) -> float:
        digest = hashlib.sha256(f"recsys-hyper:{u}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    u = np.array([unit(x) for x in user_ids])
    label = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "validation", "train"))
    return pd.Series(label, index=pd.Index(user_ids, name="user_id"), name="split")
