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
        saved = json.loads(path.read_text()) if path.exists() else {}
        return cls(date, path, saved.get("done", {}), saved.get("started", {}))

    def is_done(self, step: str) -> bool:
        return step in self.done

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
                if owner and owner.get("host") == me["host"] and not pid_alive(int(owner.get("pid", -1))):
                    self.path.unlink(missing_ok=True)          # stale: its process is gone
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
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

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
