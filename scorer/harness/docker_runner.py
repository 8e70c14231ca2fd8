"""The sandbox with a container engine: `docker run`, as CodaLab ran submissions.

`--network none`, `--init` (so a timeout's SIGKILL reaches every process), a read-only root
file system with a size-capped /tmp, the test data and the submission mounted read-only, the
gold file never mounted, memory (no swap), CPU, process and file-size limits, no capabilities,
no new privileges, an unprivileged user, no image pulls, no daemon-side log (a flood on stdout
would fill the daemon's disk otherwise). GPUs only when asked (`--gpus`).

The container runs as the organiser's own uid:gid when the organiser is not root, so that
whatever the submission leaves in /output (a file of mode 000, a folder) is the organiser's to
read and remove; as root, as the image's unprivileged user (USER). When the memory limit kills a
process (the engine's `oom` event), the whole container is stopped at once: the others would
only wait for it until the timeout.

The container has a unique name: on a timeout it is removed by name (`docker rm -f`), because
killing the `docker run` client alone leaves the container running (../shared/RECIPES.md); so
it is when the harness is stopped by a signal. And it has a deadline of its own, for when the
harness is killed outright: the contract runs under `timeout -s KILL` (coreutils, in every
Debian-based image) set CONTAINER_GRACE seconds past the harness's own limit. The image needs
`timeout` and `sh`; without them the container cannot start, which is the organiser's error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

from scorer.errors import HostError
from scorer.harness import cgroups
from scorer.harness.sandbox import (
    COMMAND,
    DATA_MOUNT,
    ENVIRONMENT,
    OUTPUT_MOUNT,
    SUBMISSION_MOUNT,
    Limits,
    LogCapture,
    MemoryCap,
    RunOutcome,
    Watch,
    stop_flags,
    wait_for_end,
)

# The evaluation image (docker/evaluation.Dockerfile): `make image` builds it under this name, the
# Makefile's EVAL_IMAGE (tests/test_docker_files.py holds the two together).
EVALUATION_IMAGE = "mura-evaluation:latest"
USER = "1000:1000"  # the evaluation image's `mura` user (docker/evaluation.Dockerfile)
DOCKER_FAILED = 125  # `docker run` itself failed: the container did not start
CONTAINER_GRACE = 10.0  # seconds the container's own deadline lies past the harness's timeout
ONE_STREAM = ("sh", "-c", 'exec "$@" 2>&1', "sh")  # runs its arguments with stderr on stdout


def unavailable_reason() -> str | None:
    """Why no engine can be used here, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 20 s"
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return f"no Docker engine answers ({lines[-1] if lines else f'exit {probe.returncode}'})"
    return None


def has_image(image: str) -> bool:
    """Whether the engine holds `image` (the runner never pulls one)."""
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def container_user() -> str:
    """Who the submission runs as: the organiser's own uid:gid (what it writes to /output is
    theirs to read and remove), or, for a root organiser, the image's unprivileged user."""
    return USER if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"


def docker_arguments(
    name: str, image: str, submission: Path, data: Path, output: Path, limits: Limits, user: str = USER
) -> list[str]:
    args = [
        "docker",
        "run",
        "--name",
        name,
        "--pull",
        "never",
        "--init",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        f"/tmp:rw,exec,size={limits.tmp},mode=1777",
        "--shm-size",
        str(limits.tmp),
        "--memory",
        str(limits.memory),
        "--memory-swap",
        str(limits.memory),
        "--cpus",
        f"{limits.cpus:g}",
        "--pids-limit",
        str(limits.pids),
        "--ulimit",
        f"fsize={limits.file_size}",
        "--ulimit",
        "core=0",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        user,
        "--log-driver",
        "none",
        "--workdir",
        SUBMISSION_MOUNT,
        "--entrypoint",
        "timeout",
        "--mount",
        f"type=bind,source={submission},target={SUBMISSION_MOUNT},readonly",
        "--mount",
        f"type=bind,source={data},target={DATA_MOUNT},readonly",
        "--mount",
        f"type=bind,source={output},target={OUTPUT_MOUNT}",
    ]
    for key, value in ENVIRONMENT.items():
        if key != "PATH":  # the image's own PATH finds its python3
            args += ["--env", f"{key}={value}"]
    if limits.gpus:
        args += ["--gpus", limits.gpus]
    # The contract (the image's own entrypoint too), under the container's own deadline, with
    # stderr on stdout's pipe: docker carries the two streams apart and may reorder them.
    deadline = math.ceil(limits.timeout + CONTAINER_GRACE)
    return args + [image, "-s", "KILL", str(deadline), *ONE_STREAM, *COMMAND]


class DockerRunner:
    name = "docker"

    def __init__(self, image: str = EVALUATION_IMAGE) -> None:
        self.image = image
        self.memory_limit: bool | None = None  # whether the engine can limit memory (check)

    def check(self, limits: Limits | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostError(f"the docker runner is unavailable: {reason}")
        if not has_image(self.image):
            raise HostError(
                f"the evaluation image {self.image} is not in the Docker engine; build it with "
                "`make image` (docker/evaluation.Dockerfile) or name another with --image"
            )
        info = subprocess.run(
            ["docker", "info", "--format", "{{json .MemoryLimit}}"], capture_output=True, text=True
        )
        self.memory_limit = info.stdout.strip() != "false"

    def memory_cap(self) -> MemoryCap:
        if self.memory_limit is False:
            return MemoryCap(False, "none: the Docker engine has no memory limit support (MemoryLimit false)")
        return MemoryCap(True, "the container's memory cgroup (docker --memory) for the whole run")

    def visible(self, submission: Path) -> list[Path]:
        return [submission]

    def run(
        self, submission: Path, data: Path, output: Path, limits: Limits, watch: Watch | None = None
    ) -> RunOutcome:
        self.check(limits)
        name = f"mura-eval-{uuid.uuid4().hex[:12]}"
        user = container_user()
        if user == USER:
            output.chmod(0o777)  # the container's user is not the (root) organiser
        mounts = (submission.resolve(), data.resolve(), output.resolve())
        command = docker_arguments(name, self.image, *mounts, limits, user)
        refused = 0

        def stop() -> None:
            nonlocal refused
            refused = _pids_refused(name)  # the container's cgroup goes with it
            _remove(name)

        oom = OomEvents(name, limits.timeout + CONTAINER_GRACE)
        proc = None
        try:
            start = time.monotonic()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            capture = LogCapture(proc.stdout, limits.log_cap, limits.output_limit)
            if watch is not None:
                watch(capture)
            stopped = wait_for_end(proc, limits, capture.flood, stop, output, oom.seen.is_set)
            state = _inspect(name)
        finally:  # also on an exception (a signal to the harness): no container outlives it
            _remove(name)
            oom.close()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        log = capture.finish()
        text = log.decode(errors="replace").strip().splitlines()
        if proc.returncode == DOCKER_FAILED and state is None:
            raise HostError(f"docker could not start the container: {text[-1] if text else 'exit 125'}")
        if state and state.get("Error"):  # e.g. the image has no `timeout` or `python3`
            raise HostError(f"docker could not start the container: {state['Error']}")
        leftovers = _containers_named(name)
        killed = stopped == "memory" or oom.seen.is_set() or bool(state and state.get("OOMKilled"))
        code = None if stopped or capture.flooded else (int(state["ExitCode"]) if state else proc.returncode)
        return RunOutcome(
            self.name,
            code,
            time.monotonic() - start,
            out_of_memory=killed,
            hit_process_limit=refused > 0,
            **stop_flags(stopped, capture.flooded),
            log=log,
            log_bytes=capture.total,
            leftovers=[f"container {name}"] if leftovers else [],
            sandbox=name,
        )


class OomEvents:
    """The engine's `oom` events for one container (by name, before it exists: `--since` now
    replays any that came before the stream was open): `seen` is set at the first. The stream
    ends by itself `lasting` seconds on (`--until`), as the container does: a harness killed
    outright leaves no `docker events` client behind for ever."""

    def __init__(self, name: str, lasting: float) -> None:
        self.seen = threading.Event()
        now = time.time()
        self._proc = subprocess.Popen(
            [
                "docker",
                "events",
                "--since",
                f"{now:.3f}",
                "--until",
                f"{now + lasting:.3f}",
                "--filter",
                "type=container",
                "--filter",
                f"container={name}",
                "--filter",
                "event=oom",
                "--format",
                "{{.Action}}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, name="docker-oom-events", daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip() == b"oom":
                self.seen.set()

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


def _inspect(name: str) -> dict | None:
    """The container's final state (ExitCode, OOMKilled), or None if there is no container."""
    probe = subprocess.run(
        ["docker", "inspect", "--format", "{{json .State}}", name], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return None
    return json.loads(probe.stdout)


def _pids_refused(name: str) -> int:
    """Forks the container's pids cgroup refused (cgroup v1 with the cgroupfs driver; else 0)."""
    probe = subprocess.run(["docker", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return 0
    return cgroups.counter(cgroups.ROOT / "pids" / "docker" / probe.stdout.strip() / "pids.events", "max")


def _remove(name: str) -> None:
    subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True, timeout=60)


def _containers_named(name: str) -> bool:
    probe = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"name=^{name}$"], capture_output=True, text=True
    )
    return bool(probe.stdout.strip())
