"""What CPUs this process runs on: how many it may really use (the one answer for synth's
workers and predict's threads) and which instructions they have (predict's choice of engine).

`os.cpu_count()` reports the machine's CPUs; a container started with `docker --cpus 2` on a
64-core host may use two. Both limits count: the affinity mask (taskset, cpusets) and the
cgroup CPU quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CPUINFO = Path("/proc/cpuinfo")
# The kernel's CPU topology. Some sandboxes hide /sys; OpenVINO then maps the CPUs by pinning a
# thread to each, and where a seccomp filter makes that pinning a no-op (the kit's bubblewrap
# sandbox did) it crashes with SIGSEGV while compiling, which no Python code can catch.
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


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


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (`avx2`, `avx512_bf16`, `amx_bf16`, ...);
    empty where there is no /proc/cpuinfo. Reading them costs well under a millisecond: the
    engine is chosen from them, not by timing at start-up."""
    try:
        with CPUINFO.open(encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively: AMX or AVX512-BF16 (not emulated)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_kind(flags: frozenset[str] | None = None) -> str:
    """The kind of CPU, as the benchmarks tell machines apart: `AMX`, `AVX512-BF16` (no AMX),
    `AVX-512` (no bf16), `AVX2` or `older`."""
    flags = cpu_flags() if flags is None else flags
    for kind, flag in (
        ("AMX", "amx_bf16"),
        ("AVX512-BF16", "avx512_bf16"),
        ("AVX-512", "avx512f"),
        ("AVX2", "avx2"),
    ):
        if flag in flags:
            return kind
    return "older"


def cpu_topology_visible() -> bool:
    """Whether the kernel's CPU topology can be read here (see CPU_TOPOLOGY)."""
    return os.access(CPU_TOPOLOGY / "online", os.R_OK)
