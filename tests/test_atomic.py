"""Atomic outputs: failures and kill -9 leave the old output or nothing, never half of one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from recsys_hyper.atomic import atomic_directory, atomic_file


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_directory_replaces_whole(tmp_path):
    target = tmp_path / "d"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["a"]
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_kill_9_during_synth_leaves_nothing_and_next_run_cleans_up(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "recsys_hyper.cli", "data", "synth", "--preset", "scale", "--users", "400000",
           "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    # wait until the interactions file is being written inside the temporary sibling
    while time.time() < deadline and not any(tmp_path.glob(".ds.tmp-*/interactions.parquet")):
        time.sleep(0.05)
    assert proc.poll() is None, "the generator finished before it could be killed; give it more users"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()                                   # nothing visible under the real name
    assert any(tmp_path.glob(".ds.tmp-*"))                    # only the hidden temporary
    subprocess.run([sys.executable, "-m", "recsys_hyper.cli", "data", "synth", "--preset", "tiny",
                    "--out", str(out), "--no-progress"], check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]   # the dead writer's temporary is gone
