"""What every sandbox runner shares: the limits, the outcome of a run, its capped log, the
runner interface and the kill-until-gone loop (which runner to use here: runners.py).

A runner starts the submission's `predict.py` as a separate process tree inside a sandbox,
drains its stdout and stderr into a LogCapture (which keeps the head and the tail within a
cap and stops a flood), enforces the wall-clock limit and the size of what it writes to
/output, and makes sure nothing of the run is left afterwards -- also when the harness itself
is stopped by a signal (the runners clean up in `finally`; `mura evaluate` turns SIGTERM and
SIGHUP into an exception for that).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from scorer.errors import HostError

MiB = 1 << 20
GiB = 1 << 30

# Where the submission sees things, in both runners.
SUBMISSION_MOUNT = "/submission"
DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/output"
INPUT_CSV = f"{DATA_MOUNT}/input.csv"
OUTPUT_CSV = f"{OUTPUT_MOUNT}/output.csv"
PROBABILITIES_CSV = f"{OUTPUT_MOUNT}/probabilities.csv"
# The contract (SPEC §3), run from the submission's root.
COMMAND = ("python3", "predict.py", INPUT_CSV, OUTPUT_CSV)
# The sandbox's environment: nothing of the organiser's. MURA_PROBABILITIES asks the kit's
# predict.py for its optional probabilities file (AUC); other submissions ignore it.
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "MURA_PROBABILITIES": PROBABILITIES_CSV,
}


@dataclass(frozen=True)
class Limits:
    """What a submission may use. CodaLab's default execution limit is 600 s (SPEC §6)."""

    timeout: float = 600.0  # wall clock, seconds
    memory: int = 8 * GiB  # bytes, RAM (+ tmpfs, which is RAM); no swap
    cpus: float = 2.0
    pids: int = 256  # processes and threads
    tmp: int = 1 * GiB  # size of the writable /tmp (and /dev/shm)
    file_size: int = 2 * GiB  # the largest file it may write
    output_size: int = 1 * GiB  # all it writes to /output together (disk usage) ...
    output_files: int = 10_000  # ... and how many files and folders
    log_cap: int = 1 * MiB  # log bytes kept: the first and the last half
    output_limit: int = 64 * MiB  # stdout+stderr beyond this stops the run (a flood)
    gpus: str | None = None  # docker's --gpus value ("all", "device=0"); None: no GPU

    def check(self) -> None:
        if self.timeout <= 0:
            raise HostError(f"--timeout must be a positive number of seconds, found {self.timeout}")
        if self.memory < 32 * MiB:
            raise HostError(f"--memory must be at least 32 MiB, found {self.memory} bytes")
        if self.cpus <= 0:
            raise HostError(f"--cpus must be positive, found {self.cpus}")
        if self.pids < 8:
            raise HostError(f"--pids must be at least 8, found {self.pids}")
        if self.log_cap < 1024 or self.output_limit < self.log_cap:
            raise HostError("the log cap must be at least 1 KiB and at most the output limit")
        if self.output_size < MiB or self.output_files < 2:
            raise HostError("the /output limits must allow at least 1 MiB and two files")


@dataclass(frozen=True)
class MemoryCap:
    """How a runner caps memory here: for the whole run (every process of the submission
    together, as docker's --memory), or only per process (then N processes may use N times the
    limit). Said before a run and recorded in outcome.json; --require-memory-cap refuses a run
    without a run-wide cap."""

    run_wide: bool
    how: str  # e.g. "cgroup v1 memory group", or why there is only a per-process cap


@dataclass
class RunOutcome:
    """How a run ended. `exit_code` is the submission's (None when it was stopped)."""

    runner: str
    exit_code: int | None
    seconds: float
    timed_out: bool = False
    out_of_memory: bool = False  # killed at the memory limit
    hit_process_limit: bool = False  # a fork or thread was refused at least once
    flooded: bool = False  # stopped for writing more than output_limit to stdout/stderr
    output_exceeded: bool = False  # wrote more than output_size / output_files to /output
    log: bytes = b""  # stdout and stderr, capped (head + tail)
    log_bytes: int = 0  # how many bytes it wrote in all
    leftovers: list[str] = field(default_factory=list)  # what could not be stopped (must be [])
    sandbox: str = ""  # the run's container name or cgroup name, for the organiser's records


def shell_exit_code(code: int) -> int:
    """A process's exit code as a shell (and bwrap, for its child) reports it: killed by signal N
    is 128 + N, where Popen says -N."""
    return 128 - code if code < 0 else code


def stop_flags(stopped: str | None, flooded: bool) -> dict[str, bool]:
    """RunOutcome's flags for how a run was stopped (wait_for_end's reason): a flood of output
    outranks the timeout or /output limit it may also have run into. (Out of memory is the
    runner's to say: the kernel may kill a process without the run being stopped.)"""
    return {
        "timed_out": stopped == "timeout" and not flooded,
        "flooded": flooded,
        "output_exceeded": stopped == "output" and not flooded,
    }


class Runner(Protocol):
    name: str

    def check(self, limits: Limits) -> None:
        """Raise HostError when this runner cannot run a submission here within `limits`
        (called before anything is staged)."""
        ...

    def memory_cap(self) -> MemoryCap:
        """Whether the memory limit holds for the whole run here (called after `check`)."""
        ...

    def visible(self, submission: Path) -> list[Path]:
        """The host's folders and files a submission in this sandbox can read: no organiser's
        file may lie inside one."""
        ...

    def run(
        self, submission: Path, data: Path, output: Path, limits: Limits, watch: Watch | None = None
    ) -> RunOutcome:
        """Run `COMMAND` from `submission` (read-only) with `data` read-only at DATA_MOUNT and
        `output` writable at OUTPUT_MOUNT, within `limits`; `watch` is handed the run's
        LogCapture once it starts (the live progress line). Returns when nothing of the run is
        left; an exception (a signal) ends the run before it propagates."""
        ...


class LogCapture:
    """Drains a pipe in a thread, keeping the first and the last `cap / 2` bytes.

    Draining never stops (a submission, or the docker client, blocked on a full pipe would
    only look hung); past `limit` bytes in all it sets `flood`, on which the runner stops the
    run (from its own thread: this one must keep draining). The last RECENT bytes are kept apart
    for `last_line` (the live progress line)."""

    CHUNK = 64 * 1024
    RECENT = 1024

    def __init__(self, stream, cap: int, limit: int) -> None:
        self._stream = stream
        self._half = cap // 2
        self._limit = limit
        self._head = bytearray()
        self._tail = bytearray()
        self._recent = b""
        self.total = 0
        self.flood = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="log-capture", daemon=True)
        self._thread.start()

    @property
    def flooded(self) -> bool:
        return self.flood.is_set()

    def _drain(self) -> None:
        fd = self._stream.fileno()
        while chunk := os.read(fd, self.CHUNK):
            self.total += len(chunk)
            # One assignment, so the live line's thread always reads whole bytes.
            self._recent = (self._recent + chunk[-self.RECENT :])[-self.RECENT :]
            room = self._half - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self._tail += chunk
                del self._tail[: max(0, len(self._tail) - self._half)]
            if self.total > self._limit:
                self.flood.set()

    def last_line(self) -> str:
        """The last non-blank line written so far (a progress bar's last state: `\r` ends a
        line too), with every character that is not printable (terminal escapes, controls)
        shown as `?`: safe to print on the organiser's terminal."""
        text = self._recent.decode("utf-8", errors="replace").replace("\r", "\n")
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        return printable(lines[-1]) if lines else ""

    def finish(self, timeout: float = 10.0) -> bytes:
        """The capped log, once the writers are gone (or after `timeout`)."""
        self._thread.join(timeout)
        dropped = self.total - len(self._head) - len(self._tail)
        if dropped <= 0:
            return bytes(self._head + self._tail)
        marker = (
            f"\n[... {dropped:,} bytes of output dropped: the log keeps the first and the last "
            f"{self._half:,} bytes ...]\n"
        )
        return bytes(self._head) + marker.encode() + bytes(self._tail)


Watch = Callable[[LogCapture], None]


def printable(text: str) -> str:
    """`text` with every character that is not printable (escapes, controls, bidi overrides)
    replaced by `?`: a participant's bytes, safe for the organiser's terminal and records."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


KILL_PAUSE = 0.05  # seconds the killed get to disappear before the next look


def sigkill(pids: Iterable[int]) -> None:
    """SIGKILL each of `pids`; one that is gone already (or not ours to signal) is passed over."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def kill_until_gone(
    find: Callable[[], set[int]],
    kill: Callable[[set[int]], None] = sigkill,
    patience: float = 10.0,
    pause: float = KILL_PAUSE,
) -> set[int]:
    """`kill` what `find` finds until it finds nothing, or until `patience` seconds have passed:
    processes that are still dying do not count before then. Returns those left (normally none)."""
    deadline = time.monotonic() + patience
    while (found := find()) and time.monotonic() <= deadline:
        kill(found)
        time.sleep(pause)
    return found


OUTPUT_CHECK_INTERVAL = 1.0  # seconds between two looks at the size of /output


def output_exceeds(folder: Path, limits: Limits) -> bool:
    """Whether `folder` holds more than `limits.output_size` bytes on disk or more than
    `limits.output_files` entries. Never follows a link; stops counting at the first excess, so
    a million tiny files cannot make the look itself slow."""
    size, entries = 0, 0
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as scan:
                for entry in scan:
                    entries += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:  # gone meanwhile: the others still count
                        continue
                    size += info.st_blocks * 512
                    if size > limits.output_size or entries > limits.output_files:
                        return True
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(Path(entry.path))
        except OSError:  # gone, or unreadable to the harness: nothing more to count there
            continue
    return False


def wait_for_end(
    proc: subprocess.Popen,
    limits: Limits,
    flood: threading.Event,
    stop: Callable[[], None],
    output: Path,
    out_of_memory: Callable[[], bool] | None = None,
) -> str | None:
    """Wait for `proc`; on a flood, once the memory limit has killed a process (`out_of_memory`,
    asked every 0.1 s: the others would only wait for it until the timeout), past the timeout,
    or when /output (`output`) grows past its limits, call `stop` (which must end the whole run)
    and wait again. Returns why the run was stopped ("flood", "memory", "timeout", "output"),
    else None -- also "output" when the run ended by itself having written too much."""
    deadline = time.monotonic() + limits.timeout
    next_look = time.monotonic() + OUTPUT_CHECK_INTERVAL
    reason = None
    while proc.poll() is None:
        now = time.monotonic()
        if flood.is_set():
            reason = "flood"
        elif out_of_memory is not None and out_of_memory():
            reason = "memory"
        elif now >= deadline:
            reason = "timeout"
        elif now >= next_look:
            next_look = now + OUTPUT_CHECK_INTERVAL
            reason = "output" if output_exceeds(output, limits) else None
        if reason is not None:
            stop()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return reason
        flood.wait(min(0.1, deadline - now))
    return "output" if output_exceeds(output, limits) else None
