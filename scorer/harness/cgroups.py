"""A run's own control groups: limits for the whole run that kill like Docker's.

Used by the bubblewrap runner, whichever the host offers (`locate`):

- cgroup v2 where this process may make groups with the memory and pids controllers: root on a
  cgroup v2 host, or an organiser whose systemd (or container) delegates a subtree to them. The
  groups live in `mura-kit/` under the highest group on this process's own path that it may
  write (the host's root group for root, the delegated group for a user). `memory.max` with
  `memory.swap.max` 0 and `memory.oom.group` (the OOM killer ends the whole group), `pids.max`,
  `cpu.max` where the cpu controller is delegated too, and `cgroup.kill` to end the run.
- cgroup v1 where /sys/fs/cgroup/<controller> is writable for memory, pids, cpu and freezer
  (root on a cgroup v1 or hybrid host, as the kit's CI); `kill_all` freezes the group before
  killing so a fork bomb cannot outrun it.

Without either, the runner has only per-process limits (prlimit), and says so. The docker runner
reads its container's pids.events with `counter` too.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from scorer.harness.sandbox import kill_until_gone, sigkill

ROOT = Path("/sys/fs/cgroup")
PARENT = "mura-kit"  # all runs' groups live under <controller>/mura-kit/ (v1), <delegated>/mura-kit/ (v2)
CONTROLLERS = ("memory", "pids", "cpu", "freezer")  # v1
NEEDED_V2 = ("memory", "pids")  # v2: without these no run-wide cap; cpu is used when delegated
CPU_PERIOD = 100_000  # microseconds
PROC_CGROUP = Path("/proc/self/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")


def available() -> bool:
    """Whether this process may make cgroup v1 groups for every controller the runner needs."""
    for controller in CONTROLLERS:
        base = ROOT / controller
        if not (base / "cgroup.procs").is_file() or not os.access(base, os.W_OK):
            return False
    return True


@dataclass(frozen=True)
class Place:
    """Where this process can make a run's groups: cgroup `version` 1 (under ROOT) or 2 (under
    `parent`, the delegated group that holds mura-kit/)."""

    version: int
    parent: Path = ROOT
    cpu: bool = True  # whether the group can cap CPU time (else the runner pins CPUs)

    def describe(self) -> str:
        if self.version == 1:
            return "a cgroup v1 memory group for the whole run"
        return f"a cgroup v2 group for the whole run (memory.max, under {self.parent})"

    def create(self, name: str, memory: int, pids: int, cpus: float) -> RunGroups | RunGroupV2:
        if self.version == 1:
            return RunGroups.create(name, memory, pids, cpus)
        return RunGroupV2.create(self.parent, name, memory, pids, cpus if self.cpu else None)


def locate(proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = MOUNTINFO) -> tuple[Place | None, str]:
    """Where a run's groups can be made here: cgroup v2 where delegated (see `delegated_v2`),
    else cgroup v1; or None and why not."""
    parent, why_not_v2 = delegated_v2(proc_cgroup, mountinfo)
    if parent is not None:
        return Place(2, parent, cpu="cpu" in _words(parent / "cgroup.controllers")), ""
    if available():
        return Place(1), ""
    v1 = "no writable cgroup v1 hierarchy for memory, pids, cpu and freezer"
    return None, f"{why_not_v2}, and {v1}"


def own_cgroup_v2(proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = MOUNTINFO) -> tuple[Path, Path] | None:
    """(the cgroup2 mount point, this process's cgroup v2 folder): its `0::PATH` line in
    /proc/self/cgroup, under the cgroup2 mount (of /proc/self/mountinfo) whose root holds PATH."""
    try:
        lines = proc_cgroup.read_text().splitlines()
        mounts = mountinfo.read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    for line in mounts:
        fields, _, rest = line.partition(" - ")
        fields, rest = fields.split(), rest.split()
        if len(fields) < 5 or not rest or rest[0] != "cgroup2":
            continue
        root, point = _unescape(fields[3]), Path(_unescape(fields[4]))
        relative = os.path.relpath(path, root)
        if relative == ".":
            return point, point
        if not relative.startswith(".."):
            return point, point / relative
    return None


def delegated_v2(proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = MOUNTINFO) -> tuple[Path | None, str]:
    """The highest group on this process's cgroup v2 path (its mount's root first, its own
    group last) where it may make groups that cap the whole run, or None and why not:

    - its cgroup.controllers has memory and pids (the parent lets it use them);
    - the folder, its cgroup.procs (moving the run in needs the common ancestor's) and its
      cgroup.subtree_control are writable;
    - the controllers are enabled for its children already, or can be: the host's root group,
      or a group without processes of its own ("no internal processes"). This process's own
      group (other than the root) never qualifies: it holds this process.
    """
    found = own_cgroup_v2(proc_cgroup, mountinfo)
    if found is None:
        return None, "no cgroup v2 hierarchy"
    mount, own = found
    chain = [mount, *(mount / part for part in _prefixes(own.relative_to(mount)))]
    missing = ""
    for folder in chain:
        controllers = _words(folder / "cgroup.controllers")
        if not set(NEEDED_V2) <= controllers:
            absent = " and ".join(c for c in NEEDED_V2 if c not in controllers)
            missing = f"cgroup v2 offers no {absent} controller"
            continue
        if not all(map(_writable, (folder, folder / "cgroup.procs", folder / "cgroup.subtree_control"))):
            continue
        host_root = not (folder / "cgroup.type").exists()  # only the host's root group has none
        if folder == own and not host_root:
            continue
        enabled = set(NEEDED_V2) <= _words(folder / "cgroup.subtree_control")
        if enabled or host_root or not _words(folder / "cgroup.procs"):
            return folder, ""
    if missing:
        return None, missing
    return None, f"no cgroup v2 group above this process's own ({own}) is delegated to uid {os.geteuid()}"


def _prefixes(relative: Path) -> list[Path]:
    """a/b/c -> a, a/b, a/b/c."""
    return [Path(*relative.parts[: i + 1]) for i in range(len(relative.parts))]


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    for code in ("040", "011", "012", "134"):
        field = field.replace(f"\\{code}", chr(int(code, 8)))
    return field


def counter(path: Path, key: str) -> int:
    """The value of `key` in a flat-keyed cgroup file (memory.events, pids.events, ...); 0 when
    the file or the key is not there."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


@dataclass
class RunGroupV2:
    """A run's cgroup v2 group, PARENT/mura-kit/NAME."""

    folder: Path

    @classmethod
    def create(cls, parent: Path, name: str, memory: int, pids: int, cpus: float | None) -> RunGroupV2:
        wanted = [*NEEDED_V2, *(("cpu",) if cpus is not None else ())]
        kit = parent / PARENT
        _enable(parent, wanted)
        kit.mkdir(exist_ok=True)
        _enable(kit, wanted)  # mura-kit/ never holds a process: the run groups below it do
        group = cls(kit / name)
        group.folder.mkdir()
        (group.folder / "memory.max").write_text(str(memory))
        for setting, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            if (group.folder / setting).exists():  # no swap accounting / an older kernel
                (group.folder / setting).write_text(value)
        (group.folder / "pids.max").write_text(str(pids))
        if cpus is not None:
            (group.folder / "cpu.max").write_text(f"{int(cpus * CPU_PERIOD)} {CPU_PERIOD}")
        return group

    @property
    def name(self) -> str:
        return self.folder.name

    def procs_files(self) -> list[str]:
        return [str(self.folder / "cgroup.procs")]

    def members(self) -> set[int]:
        return {int(pid) for pid in _words(self.folder / "cgroup.procs")}

    def oom_kills(self) -> int:
        return counter(self.folder / "memory.events", "oom_kill")

    def pids_refused(self) -> int:
        return counter(self.folder / "pids.events", "max")

    def kill_all(self, patience: float = 10.0) -> set[int]:
        """cgroup.kill (Linux 5.14) ends every member at once; else freeze, SIGKILL, thaw.
        Returns the members still there after `patience` seconds (normally none)."""
        kill = self.folder / "cgroup.kill"

        def end(members: set[int]) -> None:
            if kill.exists():
                kill.write_text("1")
            else:
                kill_frozen(self.folder / "cgroup.freeze", "1", "0", members)

        return kill_until_gone(self.members, end, patience)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def kill_frozen(state: Path, frozen: str, thawed: str, members: set[int]) -> None:
    """Freeze the group (`frozen` into its `state` file: a fork bomb cannot outrun the kill),
    SIGKILL its members, and thaw it (`thawed`): a frozen process cannot act on SIGKILL."""
    state.write_text(frozen)
    sigkill(members)
    state.write_text(thawed)


def _enable(group: Path, controllers: list[str]) -> None:
    """Let `group`'s children use `controllers` (cgroup.subtree_control)."""
    control = group / "cgroup.subtree_control"
    missing = [c for c in controllers if c not in _words(control)]
    if missing:
        control.write_text(" ".join(f"+{c}" for c in missing))


@dataclass
class RunGroups:
    """A run's cgroup v1 groups, <controller>/mura-kit/NAME for each of CONTROLLERS."""

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
            found.update(int(pid) for pid in _words(self.path(controller) / "cgroup.procs"))
        return found

    def oom_kills(self) -> int:
        """Processes the OOM killer ended in this group (0 when the kernel does not say)."""
        return counter(self.path("memory") / "memory.oom_control", "oom_kill")

    def pids_refused(self) -> int:
        """Forks refused at the pids limit."""
        return counter(self.path("pids") / "pids.events", "max")

    def kill_all(self, patience: float = 10.0) -> set[int]:
        """SIGKILL every member, frozen first; returns the members still there after
        `patience` seconds (normally none)."""
        state = self.path("freezer") / "freezer.state"
        return kill_until_gone(
            self.members, lambda members: kill_frozen(state, "FROZEN", "THAWED", members), patience
        )

    def remove(self) -> None:
        """Remove the groups (they must be empty); a leftover group is harmless but kept."""
        for controller in CONTROLLERS:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.path(controller).rmdir()
