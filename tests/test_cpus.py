"""Thread pools sized to the CPUs the process may use (affinity, a container's CPU quota), not the host's."""

from __future__ import annotations

import os
from pathlib import Path

from recsys_hyper.cpus import cgroup_cpu_quota, size_thread_pools, usable_cpus


def _proc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cgroup"
    p.write_text(text)
    return p


def test_a_v2_quota_of_the_group_or_an_ancestor_caps_the_cpus(tmp_path, monkeypatch):
    root = tmp_path / "fs"
    group = root / "kubepods" / "pod1" / "c1"
    group.mkdir(parents=True)
    proc = _proc(tmp_path, "0::/kubepods/pod1/c1\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert cgroup_cpu_quota(root, proc) is None and usable_cpus(root, proc) == 64       # no limit anywhere
    (group / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")             # the pod: 1.5 CPUs
    assert cgroup_cpu_quota(root, proc) == 1.5 and usable_cpus(root, proc) == 2
    (group / "cpu.max").write_text("50000 100000\n")                                   # the container: half a CPU
    assert usable_cpus(root, proc) == 1


def test_a_v1_quota_and_the_affinity_mask_cap_the_cpus(tmp_path, monkeypatch):
    root = tmp_path / "fs"
    mount = root / "cpu,cpuacct"
    mount.mkdir(parents=True)
    (mount / "cpu.cfs_quota_us").write_text("400000\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/\n")        # a container sees its group as the root
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert usable_cpus(root, proc) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # taskset -c 0,1
    assert usable_cpus(root, proc) == 2
    (mount / "cpu.cfs_quota_us").write_text("-1\n")                   # no quota
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert usable_cpus(root, proc) == 8


def test_the_command_line_sizes_torchs_pools_before_it_loads_and_keeps_what_the_user_set(monkeypatch):
    from recsys_hyper import cli, cpus

    assert size_thread_pools(env := {}) == usable_cpus() and env["OMP_NUM_THREADS"] == str(usable_cpus())
    assert size_thread_pools(env := {"OMP_NUM_THREADS": "3"}) and env["OMP_NUM_THREADS"] == "3"
    seen = {}

    def command(args):
        seen.update({name: os.environ.get(name) for name in cpus.THREAD_VARIABLES})
        return 0

    monkeypatch.setattr(cpus, "usable_cpus", lambda *a, **k: 3)           # e.g. a container limited to 3 CPUs
    monkeypatch.setattr(cli, "cmd_validate", command)
    for name in cpus.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "5")
    assert cli.main(["data", "validate", "anything"]) == 0
    assert seen == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "5", "OPENBLAS_NUM_THREADS": "3"}
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "5"    # as it was after
