"""How many CPUs this process may really use: the one answer for synth's workers and
predict's threads.

`os.cpu_count()` reports the machine's CPUs; a container started with `docker --cpus 2` on a
64-core host may use two. Both limits count: the affinity mask (taskset, cpusets) and the
cgroup CPU quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (docker --cpus)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(count, quota) if quota else count)


def cgroup_quota() -> int | None:
    """The CPU quota in whole CPUs (rounded up) from cgroup v2 or v1, or None without one."""
    try:
        quota, period = CGROUP_V2.read_text().split()
    except (OSError, ValueError):
        try:
            quota = (CGROUP_V1 / "cpu.cfs_quota_us").read_text().strip()
            period = (CGROUP_V1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, -(-int(quota) // int(period)))
