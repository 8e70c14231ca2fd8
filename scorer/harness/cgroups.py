"""A run's own cgroup v1 groups (memory, pids, cpu, freezer): limits that kill like Docker's.

Used by the bubblewrap runner where /sys/fs/cgroup/<controller> is writable (root on a cgroup
v1 machine, as the kit's CI). The kernel's OOM killer ends a process at the memory limit, a
fork beyond the pids limit fails with EAGAIN, and `kill_all` freezes the group before killing
so a fork bomb cannot outrun it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "mura-kit"  # all runs' groups live under <controller>/mura-kit/
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
CPU_PERIOD = 100_000  # microseconds


def available() -> bool:
    """Whether this process may make cgroup v1 groups for every controller the runner needs."""
    for controller in CONTROLLERS:
        base = ROOT / controller
        if not (base / "cgroup.procs").is_file() or not os.access(base, os.W_OK):
            return False
    return True


@dataclass
class RunGroups:
    name: str

    def path(self, controller: str) -> Path:
        return ROOT / controller / PARENT / self.name

    @classmethod
    def create(cls, name: str, memory: int, pids: int, cpus: float) -> RunGroups:
        groups = cls(name)
        for controller in CONTROLLERS:
            groups.path(controller).mkdir(parents=True, exist_ok=False)
        memory_dir = groups.path("memory")
        (memory_dir / "memory.limit_in_bytes").write_text(str(memory))
        swap = memory_dir / "memory.memsw.limit_in_bytes"
        if swap.exists():  # only with swap accounting; memory + swap = memory: no swap
            swap.write_text(str(memory))
        (groups.path("pids") / "pids.max").write_text(str(pids))
        cpu_dir = groups.path("cpu")
        (cpu_dir / "cpu.cfs_period_us").write_text(str(CPU_PERIOD))
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(int(cpus * CPU_PERIOD)))
        return groups

    def procs_files(self) -> list[str]:
        return [str(self.path(c) / "cgroup.procs") for c in CONTROLLERS]

    def members(self) -> set[int]:
        found: set[int] = set()
        for controller in CONTROLLERS:
            try:
                text = (self.path(controller) / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            found.update(int(pid) for pid in text.split())
        return found

    def oom_kills(self) -> int:
        """Processes the OOM killer ended in this group (0 when the kernel does not say)."""
        try:
            text = (self.path("memory") / "memory.oom_control").read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids_refused(self) -> int:
        """Forks refused at the pids limit."""
        try:
            text = (self.path("pids") / "pids.events").read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def kill_all(self, patience: float = 10.0) -> set[int]:
        """SIGKILL every member, frozen first; returns the members still there after
        `patience` seconds (normally none)."""
        state = self.path("freezer") / "freezer.state"
        deadline = time.monotonic() + patience
        while True:
            members = self.members()
            if not members or time.monotonic() > deadline:
                break
            state.write_text("FROZEN")
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            state.write_text("THAWED")  # a frozen process cannot act on SIGKILL
            time.sleep(0.05)
        return self.members()

    def remove(self) -> None:
        """Remove the groups (they must be empty); a leftover group is harmless but kept."""
        for controller in CONTROLLERS:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.path(controller).rmdir()
