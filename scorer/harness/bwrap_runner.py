"""The sandbox where no container engine is available: bubblewrap (../shared/RECIPES.md).

The same guarantees as the docker runner: no network (all namespaces unshared), the test data
and the submission read-only, nothing of the host's file system but what Python needs (the
system's /usr, the kit's interpreter and virtual environment, the kit's own package folders),
no capabilities, an unprivileged user, a writable /output and a size-capped /tmp.

Limits: a run's own cgroup v1 groups where the host lets us make them (memory: the kernel's OOM
killer ends the run at the limit, as Docker does; pids; cpu quota; freezer to kill a fork bomb
whole), else `prlimit` (address space, processes). On a timeout every process is killed: the
cgroup's members, then bwrap itself, whose death tears down the sandbox's PID namespace.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from scorer.errors import HostError
from scorer.harness import cgroups
from scorer.harness.sandbox import (
    DATA_MOUNT,
    ENVIRONMENT,
    INPUT_CSV,
    OUTPUT_CSV,
    OUTPUT_MOUNT,
    SUBMISSION_MOUNT,
    Limits,
    LogCapture,
    RunOutcome,
    wait_for_end,
)

# The kit's top-level packages: a submission's predict.py may import them (the reference model
# does), and an editable install keeps them outside the virtual environment.
KIT_PACKAGES = ("mura", "scorer", "reference_model")
SANDBOX_UID = 65534  # nobody
# sh puts itself into the run's cgroups, then becomes prlimit, which becomes bwrap.
ENTER_CGROUPS = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)
SETUP_FAILED = 125  # the wrapper could not join the cgroups


def install_hint() -> str:
    return "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


def unavailable_reason() -> str | None:
    """Why this runner cannot run here, or None."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed; {install_hint()}"
    if shutil.which("prlimit") is None:
        return "prlimit (util-linux) is not installed"
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot make a sandbox here: {probe.stderr.strip() or probe.returncode}"
    return None


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


def sandbox_arguments(submission: Path, data: Path, output: Path, limits: Limits, run_id: str) -> list[str]:
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--disable-userns",
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--new-session",
        "--hostname", "sandbox",
        "--clearenv",
    ]  # fmt: skip
    # `python3` in the sandbox is the kit's interpreter, as in the evaluation image.
    environment = {**ENVIRONMENT, "PATH": f"{Path(sys.executable).parent}:{ENVIRONMENT['PATH']}"}
    for name, value in environment.items():
        args += ["--setenv", name, value]
    args += ["--setenv", "MURA_RUN", run_id]  # lets the leftover check find strays
    args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for path in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"):
        if Path(path).exists():
            args += ["--ro-bind", path, path]
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(limits.tmp), "--perms", "1777", "--tmpfs", "/tmp",
        "--size", str(limits.tmp), "--perms", "1777", "--tmpfs", "/dev/shm",
    ]  # fmt: skip
    # After the tmpfs: a virtual environment under /tmp must stay visible.
    for path in python_binds():
        args += ["--ro-bind", path, path]
    args += [
        "--ro-bind", str(submission), SUBMISSION_MOUNT,
        "--ro-bind", str(data), DATA_MOUNT,
        "--bind", str(output), OUTPUT_MOUNT,
        "--chdir", SUBMISSION_MOUNT,
        sys.executable, "predict.py", INPUT_CSV, OUTPUT_CSV,
    ]  # fmt: skip
    return args


class BwrapRunner:
    name = "bwrap"

    def __init__(self, use_cgroups: bool | None = None) -> None:
        self.use_cgroups = cgroups.available() if use_cgroups is None else use_cgroups

    def run(self, submission: Path, data: Path, output: Path, limits: Limits) -> RunOutcome:
        reason = unavailable_reason()
        if reason is not None:
            raise HostError(f"the bubblewrap sandbox is unavailable: {reason}")
        if limits.gpus:
            raise HostError("--gpus needs the docker runner; the bubblewrap sandbox has no GPU devices")
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        os.chmod(output, 0o777)  # the sandbox's user is not the organiser
        groups = None
        if self.use_cgroups:
            groups = cgroups.RunGroups.create(run_id, limits.memory, limits.pids, limits.cpus)
        prlimit = ["prlimit", f"--fsize={limits.file_size}", "--nofile=4096", "--core=0"]
        if groups is None:  # no cgroups: cap the address space and the processes instead
            prlimit += [f"--as={limits.memory}", f"--nproc={limits.pids + _processes_of_this_user()}"]
        procs = groups.procs_files() if groups else []
        command = ["/bin/sh", "-c", ENTER_CGROUPS, "sh", str(len(procs)), *procs, *prlimit, "--"]
        command += sandbox_arguments(submission, data, output, limits, run_id)

        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def stop() -> None:
            if groups is not None:
                groups.kill_all()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        capture = LogCapture(proc.stdout, limits.log_cap, limits.output_limit)
        timed_out = wait_for_end(proc, limits.timeout, capture.flood, stop)
        # bwrap has exited; its sandbox's PID namespace goes with it. Make sure.
        leftovers: set[int] = set()
        if groups is not None:
            leftovers = groups.kill_all()
        leftovers |= _strays(run_id)
        log = capture.finish()
        seconds = time.monotonic() - start
        code = proc.returncode
        if groups is not None and code == SETUP_FAILED and not log:
            raise HostError("could not put the sandbox into its cgroups")
        outcome = RunOutcome(
            self.name,
            None if timed_out or capture.flooded else _exit_code(code),
            seconds,
            timed_out=timed_out and not capture.flooded,
            flooded=capture.flooded,
            log=log,
            log_bytes=capture.total,
            leftovers=[f"process {pid}" for pid in sorted(leftovers)],
            sandbox=run_id,
        )
        if groups is not None:
            outcome.out_of_memory = groups.oom_kills() > 0
            outcome.hit_process_limit = groups.pids_refused() > 0
            groups.remove()
        else:  # prlimit --as makes Python raise MemoryError instead of being killed
            outcome.out_of_memory = code not in (0, None) and b"MemoryError" in log[-4096:]
        return outcome


def _exit_code(code: int) -> int:
    """bwrap reports a child killed by signal N as 128 + N, as a shell does; Popen as -N."""
    return 128 - code if code < 0 else code


def _processes_of_this_user() -> int:
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError):
                count += entry.stat().st_uid == uid
    return count


def _strays(run_id: str) -> set[int]:
    """Processes still carrying the run's marker in their environment (normally none)."""
    marker = f"MURA_RUN={run_id}".encode()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found
