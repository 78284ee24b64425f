"""The CPUs this process may use, for sizing its thread pools: the scheduler's affinity mask
(``taskset``, a cpuset), capped by the CPU quota of its control group (a container's CPU limit:
Kubernetes ``limits.cpu``, ``docker --cpus``), never the host's core count.

PyTorch, OpenMP and BLAS size their pools from the host's count; in a container limited to 2 of
64 cores that is 64 threads sharing 2 cores' time, each stalled by the quota: a command that
should take minutes takes an hour. The command line sets ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` from :func:`usable_cpus` before anything imports torch (a value the user set
is kept).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask's size, capped by the control group's
    CPU quota rounded up (a quota of 1.5 CPUs: 2 threads, as the JVM sizes its pools); at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota (in CPUs) of this process's control group and its ancestors, the smallest,
    or ``None`` when there is none (or it cannot be read): cgroup v2's ``cpu.max``, v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. A container sees its own group as the mount's
    root, so the mount's root is read too."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":                                  # v2: the unified hierarchy
            found += [_v2_quota(folder) for folder in _folders(root, path)]
        elif "cpu" in controllers.split(","):                  # v1: the cpu controller's hierarchy
            mount = root / controllers
            if not mount.is_dir():
                mount = next((m for m in (root / "cpu,cpuacct", root / "cpu") if m.is_dir()), mount)
            found += [_v1_quota(folder) for folder in _folders(mount, path)]
    quotas = [q for q in found if q is not None]
    return min(quotas) if quotas else None


def _folders(mount: Path, path: str) -> list[Path]:
    """The group's folder under ``mount`` and every ancestor's, up to the mount itself."""
    folder = mount / path.lstrip("/")
    out = [folder, *folder.parents]
    return [f for f in out if f == mount or mount in f.parents]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
    except ValueError:
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def size_thread_pools(environ=os.environ) -> int:
    """Set the thread-pool variables torch, OpenMP and BLAS read when they load to
    :func:`usable_cpus`, keeping any the user set; returns the count. Call before torch is imported."""
    n = usable_cpus()
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(n))
    return n
