"""The sandbox where no container engine is available: bubblewrap (../shared/RECIPES.md).

The same guarantees as the docker runner: no network (its own network namespace), its own PID,
IPC and UTS namespaces, the test data and the submission read-only, nothing of the host's file
system but what Python needs (the system's /usr, the kit's interpreter and virtual environment,
the kit's own package folders), /proc/sys and the CPU topology (/sys/devices/system/cpu)
read-only, a writable /output and a size-capped /tmp,
and the submission's processes run as an unprivileged host user without capabilities:

- harness run as root (the CI machines): no user namespace -- bwrap can map only the caller's
  own uid into one, which would make the sandbox's user host root (able to write
  /proc/sys/kernel/core_pattern, read root's 0700 folders). bwrap runs as root and the
  command's first step, `setpriv`, drops to a fresh unprivileged uid of its own for this run
  (SANDBOX_UIDS: no file on the host belongs to it, no other run shares it), with no
  supplementary groups, no capabilities (bounding set emptied) and no_new_privs. /output is
  chowned to that uid;
- harness run as another user: a user namespace (`--unshare-all --unshare-user`) whose user is
  the caller's own, already unprivileged, uid.

A seccomp filter (seccomp.py) forbids new user namespaces and pins the CPU set.

Limits: a run's own cgroup v2 group where the host delegates one, else cgroup v1 groups where
the host lets us make them (cgroups.py; memory: the kernel's OOM killer ends a process at the
limit, as Docker does, and the harness then stops the whole run; pids; cpu quota; a whole-group
kill). Without them (not root, and no cgroup v2 delegation): `prlimit` (address space, per
process: Python raises MemoryError; RLIMIT_NPROC on the run's uid: a fork past --pids fails) and
the CPU affinity cut to ceil(--cpus) cores; `memory_cap` says so. On a timeout every process is
killed: the cgroup's members, then bwrap itself, whose death tears down the sandbox's PID
namespace; then every process left with the run's uid or its marker, until none is (or
STRAY_PATIENCE runs out: those are the leftovers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from scorer.errors import HostError
from scorer.harness import cgroups, seccomp
from scorer.harness.sandbox import (
    DATA_MOUNT,
    ENVIRONMENT,
    INPUT_CSV,
    OUTPUT_CSV,
    OUTPUT_MOUNT,
    SUBMISSION_MOUNT,
    Limits,
    LogCapture,
    MemoryCap,
    RunOutcome,
    Watch,
    kill_until_gone,
    shell_exit_code,
    sigkill,
    stop_flags,
    wait_for_end,
)

# The kit's top-level packages: a submission's predict.py may import them (the reference model
# does), and an editable install keeps them outside the virtual environment.
KIT_PACKAGES = ("mura", "scorer", "reference_model")
NOBODY = 65534  # the user inside a user namespace (non-root harness), as the kernel's overflow uid
# Root harness: each run's processes get an unused uid from this range (no passwd entry, above
# the ranges distributions, systemd and subuid files hand out).
SANDBOX_UIDS = range(0x60000000, 0x61000000)
SYSTEM_FILES = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime")
CPU_TOPOLOGY = "/sys/devices/system/cpu"
# sh puts itself into the run's cgroups, then becomes prlimit, which becomes bwrap.
ENTER_CGROUPS = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)
SETUP_FAILED = 125  # the wrapper could not join the cgroups
STRAY_PATIENCE = 5.0  # seconds killed processes get to disappear before they count as leftovers


def install_hint() -> str:
    return "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


def as_root() -> bool:
    return os.geteuid() == 0


def namespace_arguments(root: bool) -> list[str]:
    if root:
        # No user namespace (see the module's docstring): setpriv drops the user instead.
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    return [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--disable-userns",
        "--cap-drop",
        "ALL",
    ]


def drop_privileges(uid: int) -> list[str]:
    """util-linux's setpriv: the command that becomes the submission as `uid`, unprivileged."""
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
    ]


def python_binds() -> list[str]:
    """The folders the kit's interpreter needs: its prefixes and the kit's package folders."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    for name in KIT_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths.update(Path(p) for p in spec.submodule_search_locations)
    usr = Path("/usr")
    kept = sorted(str(p.resolve()) for p in paths if p.exists() and not p.resolve().is_relative_to(usr))
    # A folder inside another bound folder is bound with it.
    return [p for p in kept if not any(p != q and Path(p).is_relative_to(q) for q in kept)]


def system_mounts(limits: Limits) -> list[str]:
    """/usr, the interpreter, /proc (its sys read-only), /dev, and the size-capped /tmp."""
    args = ["--ro-bind", "/usr", "/usr"]
    made = {"/", "/usr", "/proc", "/dev", "/tmp"}

    def parents(path: str) -> list[str]:
        # bwrap makes a bind's missing parents 0700 when run as root: the dropped user could not
        # pass them. Made explicitly, they are 0755.
        found = []
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                found += ["--perms", "0755", "--dir", str(parent)]
        return found

    for name in ("bin", "sbin", "lib", "lib64", "lib32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for path in SYSTEM_FILES:
        if Path(path).exists():
            args += [*parents(path), "--ro-bind", path, path]
    # The CPU topology, read-only, as Docker shows it: without it OpenVINO (predict's default
    # engine) maps the CPUs by pinning a thread to each, which the filter's no-op
    # sched_setaffinity defeats, and it crashes (SIGSEGV) compiling the model.
    if Path(CPU_TOPOLOGY).is_dir():
        args += [*parents(CPU_TOPOLOGY), "--ro-bind", CPU_TOPOLOGY, CPU_TOPOLOGY]
    args += [
        "--proc",
        "/proc",
        # Sysctls are the reader's namespaces' (hostname, net); read-only whoever the user is.
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
        "--dev",
        "/dev",
        "--size",
        str(limits.tmp),
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--size",
        str(limits.tmp),
        "--perms",
        "1777",
        "--tmpfs",
        "/dev/shm",
    ]
    # After the tmpfs: a virtual environment under /tmp must stay visible.
    for path in python_binds():
        args += [*parents(path), "--ro-bind", path, path]
    return args


def unavailable_reason() -> str | None:
    """Why this runner cannot run here, or None. The probe is a real sandbox with the real
    mounts and user: the interpreter must start in it."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed; {install_hint()}"
    root = as_root()
    for tool in ("prlimit", "taskset", *(("setpriv",) if root else ())):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    probe = [
        "bwrap",
        *namespace_arguments(root),
        "--die-with-parent",
        "--clearenv",
        "--setenv",
        "PATH",
        ENVIRONMENT["PATH"],
        *system_mounts(Limits()),
        "--chdir",
        "/",
        *(drop_privileges(SANDBOX_UIDS.start) if root else ()),
        sys.executable,
        "-c",
        "pass",
    ]
    done = subprocess.run(probe, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"bubblewrap cannot make a sandbox here: {lines[-1] if lines else f'exit {done.returncode}'}"
    return None


def sandbox_arguments(
    submission: Path,
    data: Path,
    output: Path,
    limits: Limits,
    run_id: str,
    uid: int | None,
    seccomp_fd: int | None,
) -> list[str]:
    """bwrap's command line. `uid`: the host uid to drop to (root harness), or None for the
    user-namespace sandbox (non-root harness)."""
    args = [
        "bwrap",
        *namespace_arguments(uid is not None),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    # `python3` in the sandbox is the kit's interpreter, as in the evaluation image.
    environment = {**ENVIRONMENT, "PATH": f"{Path(sys.executable).parent}:{ENVIRONMENT['PATH']}"}
    for name, value in environment.items():
        args += ["--setenv", name, value]
    args += ["--setenv", "MURA_RUN", run_id]  # lets the leftover check find strays
    args += system_mounts(limits)
    args += [
        "--ro-bind",
        str(submission),
        SUBMISSION_MOUNT,
        "--ro-bind",
        str(data),
        DATA_MOUNT,
        "--bind",
        str(output),
        OUTPUT_MOUNT,
        "--chdir",
        SUBMISSION_MOUNT,
    ]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if uid is not None:
        args += drop_privileges(uid)
    return args + [sys.executable, "predict.py", INPUT_CSV, OUTPUT_CSV]


class BwrapRunner:
    name = "bwrap"

    def __init__(self, use_cgroups: bool | None = None) -> None:
        """`use_cgroups`: None to use the cgroups this host allows (cgroups.locate), False for none."""
        if use_cgroups is False:
            self.place, self.no_cgroups = None, "cgroups are turned off for this runner"
        else:
            self.place, self.no_cgroups = cgroups.locate()

    @property
    def use_cgroups(self) -> bool:
        return self.place is not None

    def memory_cap(self) -> MemoryCap:
        if self.place is not None:
            return MemoryCap(True, self.place.describe())
        return MemoryCap(
            False,
            f"per process only (prlimit --as): {self.no_cgroups}; each of the run's processes may "
            "use the whole limit",
        )

    def check(self, limits: Limits) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostError(f"the bubblewrap sandbox is unavailable: {reason}")
        if limits.gpus:
            raise HostError("--gpus needs the docker runner; the bubblewrap sandbox has no GPU devices")

    def visible(self, submission: Path) -> list[Path]:
        return [submission, Path("/usr"), *map(Path, SYSTEM_FILES), *map(Path, python_binds())]

    def run(
        self, submission: Path, data: Path, output: Path, limits: Limits, watch: Watch | None = None
    ) -> RunOutcome:
        self.check(limits)
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        marker = f"MURA_RUN={run_id}".encode()
        uid = fresh_uid() if as_root() else None
        if uid is not None:  # /output is the run's user's alone
            os.chown(output, uid, uid)
        groups = None
        if self.place is not None:
            groups = self.place.create(run_id, limits.memory, limits.pids, limits.cpus)
        read_end = seccomp_pipe()
        command = self.limits_wrapper(limits, groups, uid)
        command += sandbox_arguments(submission, data, output, limits, run_id, uid, read_end)

        start = time.monotonic()
        proc = None
        finished = False

        def stop() -> None:
            if groups is not None:
                groups.kill_all()
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=() if read_end is None else (read_end,),
            )
            if read_end is not None:
                os.close(read_end)
                read_end = None
            capture = LogCapture(proc.stdout, limits.log_cap, limits.output_limit)
            if watch is not None:
                watch(capture)
            killed = None if groups is None else (lambda: groups.oom_kills() > 0)
            stopped = wait_for_end(proc, limits, capture.flood, stop, output, killed)
            # bwrap has exited; its sandbox's PID namespace goes with it. Make sure.
            leftovers = groups.kill_all() if groups is not None else set()
            leftovers |= stop_strays(marker, uid)
            log = capture.finish()
            code = proc.returncode
            if groups is not None and code == SETUP_FAILED and not log:
                raise HostError("could not put the sandbox into its cgroups")
            out_of_memory, hit_process_limit = limits_hit(groups, stopped, code, log)
            outcome = RunOutcome(
                self.name,
                None if stopped or capture.flooded else shell_exit_code(code),
                time.monotonic() - start,
                out_of_memory=out_of_memory,
                hit_process_limit=hit_process_limit,
                **stop_flags(stopped, capture.flooded),
                log=log,
                log_bytes=capture.total,
                leftovers=[f"process {pid}" for pid in sorted(leftovers)],
                sandbox=run_id,
            )
            finished = True
            return outcome
        finally:
            if read_end is not None:
                os.close(read_end)
            if not finished:  # an exception (a signal to the harness): end the run first
                stop()
                if proc is not None:
                    proc.wait()
                stop_strays(marker, uid)
            if groups is not None:
                groups.remove()

    def limits_wrapper(
        self, limits: Limits, groups: cgroups.RunGroups | cgroups.RunGroupV2 | None, uid: int | None
    ) -> list[str]:
        """The command bwrap runs under: sh puts itself into the run's cgroups, then becomes
        prlimit (the file size, and without cgroups the address space and processes), which
        becomes taskset where no cpu quota holds the CPUs, which becomes bwrap."""
        prlimit = ["prlimit", f"--fsize={limits.file_size}", "--nofile=4096", "--core=0"]
        pin: list[str] = []
        if groups is None:  # no cgroups: address space and processes instead
            # RLIMIT_NPROC counts the real uid's processes host-wide: the run's own uid has none
            # yet; the caller's (non-root) has its own already.
            nproc = limits.pids if uid is not None else limits.pids + _count_processes(os.getuid())
            prlimit += [f"--as={limits.memory}", f"--nproc={nproc}"]
        if groups is None or not self.place.cpu:  # no cpu quota: the CPUs instead
            pin = ["taskset", "--cpu-list", cpu_list(limits.cpus)]
        procs = groups.procs_files() if groups else []
        return ["/bin/sh", "-c", ENTER_CGROUPS, "sh", str(len(procs)), *procs, *prlimit, "--", *pin]


def seccomp_pipe() -> int | None:
    """The read end of a pipe that holds the seccomp filter (bwrap reads it until EOF), or None
    where there is no filter."""
    program = seccomp.program()
    if program is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, program)
    os.close(write_end)
    return read_end


def limits_hit(
    groups: cgroups.RunGroups | cgroups.RunGroupV2 | None, stopped: str | None, code: int | None, log: bytes
) -> tuple[bool, bool]:
    """(killed at the memory limit, a fork refused at the process limit), as the run's cgroups
    count them; without cgroups, prlimit --as makes Python raise MemoryError instead of being
    killed, and a refused fork leaves no count."""
    if groups is not None:
        return stopped == "memory" or groups.oom_kills() > 0, groups.pids_refused() > 0
    return code not in (0, None) and b"MemoryError" in log[-4096:], False


def cpu_list(cpus: float) -> str:
    """The first ceil(cpus) of the CPUs this process may use, for `taskset --cpu-list`."""
    allowed = sorted(os.sched_getaffinity(0))
    return ",".join(str(cpu) for cpu in allowed[: max(1, min(len(allowed), math.ceil(cpus)))])


def fresh_uid() -> int:
    """A uid from SANDBOX_UIDS that no process has."""
    while True:
        uid = SANDBOX_UIDS.start + secrets.randbelow(len(SANDBOX_UIDS))
        if not _processes(None, uid):
            return uid


def _count_processes(uid: int) -> int:
    return len(_processes(None, uid))


def _processes(marker: bytes | None, uid: int | None) -> set[int]:
    """Live processes (not zombies) whose real, effective or saved uid is `uid`, or whose
    environment holds `marker`. By /proc/PID/status, not the folder's owner: a process that
    makes itself undumpable turns its /proc folder root's."""
    found: set[int] = set()
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line
            )
            if status.get("State", "").strip()[:1] in ("Z", "X"):
                continue
            owned = uid is not None and str(uid) in status.get("Uid", "").split()[:3]
            if owned or (marker is not None and marker in (entry / "environ").read_bytes().split(b"\0")):
                found.add(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def stop_strays(marker: bytes, uid: int | None, patience: float = STRAY_PATIENCE) -> set[int]:
    """Kill the run's processes still there (normally none) until none is, or until `patience`
    seconds have passed: processes that are still dying do not count. Returns those left."""
    return kill_until_gone(lambda: _processes(marker, uid), sigkill, patience)
