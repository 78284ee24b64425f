"""What a nightly run leaves behind to be idempotent and crash-safe: a per-date state file, a
lock, and a stable user split."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import pid_alive, atomic_file
from ..errors import RecsysHyperError

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
        path = root / "state" / f"date={date}.json"
        try:
            saved = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(saved, dict) or not isinstance(saved.get("done", {}), dict) \
                    or not isinstance(saved.get("started", {}), dict):
                raise ValueError("not a night's state")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecsysHyperError(f"{path}: the night's state is damaged ({exc}); remove it to run the night "
                                   f"{date} from its first step (its outputs are replaced, nothing is duplicated)") from None
        return cls(date, path, saved.get("done", {}), saved.get("started", {}))

    def is_done(self, step: str) -> bool:
        return step in self.done

    @property
    def complete_night(self) -> bool:
        return all(step in self.done for step in STEPS)

    @property
    def started_any(self) -> bool:
        return any(step in self.done for step in STEPS)

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
    """What tells a landing file apart from a changed one: its size and modification time (ns)."""
    st = path.stat()
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


#: a lock file that holds no owner (its writer died between creating and writing it) is taken over
#: once it is this old
UNREADABLE_LOCK_S = 30.0


def _alive(pid) -> bool:
    try:
        return pid_alive(int(pid))
    except (TypeError, ValueError, OverflowError):
        return False


class RunLock:
    """An exclusive lock file holding the owner's pid and host. A lock left by a dead process (on
    this host) is detected and taken over; a live one refuses the second run."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    self.path.unlink(missing_ok=True)          # stale: its process is gone
                    continue
                if not owner and self._age() > UNREADABLE_LOCK_S:
                    self.path.unlink(missing_ok=True)          # unreadable and old: its writer died writing it
                    continue
                raise RecsysHyperError(
                    f"another nightly run holds {self.path} (pid {owner.get('pid')} on {owner.get('host')} since "
                    f"{owner.get('since')}); wait for it to finish, or remove the file if that process is gone")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise RecsysHyperError(f"could not take the lock {self.path}")

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def __exit__(self, *exc) -> None:
        if self._owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


def stable_split(user_ids, val_fraction: float = 0.15, test_fraction: float = 0.15) -> pd.Series:
    """train / validation / test by a hash of the user id: a user stays in the same split every
    night, whatever else arrives."""
    def unit(u) -> float:
        digest = hashlib.sha256(f"recsys-hyper:{u}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    u = np.array([unit(x) for x in user_ids])
    label = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "validation", "train"))
    return pd.Series(label, index=pd.Index(user_ids, name="user_id"), name="split")
