"""The sandbox with a container engine: `docker run`, as CodaLab ran submissions.

`--network none`, `--init` (so a timeout's SIGKILL reaches every process), a read-only root
file system with a size-capped /tmp, the test data and the submission mounted read-only, the
gold file never mounted, memory (no swap), CPU, process and file-size limits, no capabilities,
no new privileges, an unprivileged user, no image pulls, no daemon-side log (a flood on stdout
would fill the daemon's disk otherwise). GPUs only when asked (`--gpus`).

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
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from scorer.errors import HostError
from scorer.harness.sandbox import (
    COMMAND,
    DATA_MOUNT,
    ENVIRONMENT,
    OUTPUT_MOUNT,
    SUBMISSION_MOUNT,
    Limits,
    LogCapture,
    RunOutcome,
    stop_flags,
    wait_for_end,
)

DEFAULT_IMAGE = "mura-evaluation:latest"
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


def docker_arguments(
    name: str, image: str, submission: Path, data: Path, output: Path, limits: Limits
) -> list[str]:
    args = [
        "docker", "run",
        "--name", name,
        "--pull", "never",
        "--init",
        "--network", "none",
        "--read-only",
        "--tmpfs", f"/tmp:rw,exec,size={limits.tmp},mode=1777",
        "--shm-size", str(limits.tmp),
        "--memory", str(limits.memory),
        "--memory-swap", str(limits.memory),
        "--cpus", f"{limits.cpus:g}",
        "--pids-limit", str(limits.pids),
        "--ulimit", f"fsize={limits.file_size}",
        "--ulimit", "core=0",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--user", USER,
        "--log-driver", "none",
        "--workdir", SUBMISSION_MOUNT,
        "--entrypoint", "timeout",
        "--mount", f"type=bind,source={submission},target={SUBMISSION_MOUNT},readonly",
        "--mount", f"type=bind,source={data},target={DATA_MOUNT},readonly",
        "--mount", f"type=bind,source={output},target={OUTPUT_MOUNT}",
    ]  # fmt: skip
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

    def __init__(self, image: str = DEFAULT_IMAGE) -> None:
        self.image = image

    def check(self, limits: Limits | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostError(f"the docker runner is unavailable: {reason}")
        probe = subprocess.run(["docker", "image", "inspect", self.image], capture_output=True, text=True)
        if probe.returncode != 0:
            raise HostError(
                f"the evaluation image {self.image} is not in the Docker engine; build it with "
                "`make image` (docker/evaluation.Dockerfile) or name another with --image"
            )

    def visible(self, submission: Path) -> list[Path]:
        return [submission]

    def run(self, submission: Path, data: Path, output: Path, limits: Limits) -> RunOutcome:
        self.check(limits)
        name = f"mura-eval-{uuid.uuid4().hex[:12]}"
        output.chmod(0o777)  # the container's user is not the organiser
        mounts = (submission.resolve(), data.resolve(), output.resolve())
        command = docker_arguments(name, self.image, *mounts, limits)
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        refused = 0

        def stop() -> None:
            nonlocal refused
            refused = _pids_refused(name)  # the container's cgroup goes with it
            _remove(name)

        capture = LogCapture(proc.stdout, limits.log_cap, limits.output_limit)
        try:
            stopped = wait_for_end(proc, limits, capture.flood, stop, output)
            state = _inspect(name)
        finally:  # also on an exception (a signal to the harness): no container outlives it
            _remove(name)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = capture.finish()
        text = log.decode(errors="replace").strip().splitlines()
        if proc.returncode == DOCKER_FAILED and state is None:
            raise HostError(f"docker could not start the container: {text[-1] if text else 'exit 125'}")
        if state and state.get("Error"):  # e.g. the image has no `timeout` or `python3`
            raise HostError(f"docker could not start the container: {state['Error']}")
        leftovers = _containers_named(name)
        oom = bool(state and state.get("OOMKilled"))
        code = None if stopped or capture.flooded else (int(state["ExitCode"]) if state else proc.returncode)
        return RunOutcome(
            self.name,
            code,
            time.monotonic() - start,
            out_of_memory=oom,
            hit_process_limit=refused > 0,
            **stop_flags(stopped, capture.flooded),
            log=log,
            log_bytes=capture.total,
            leftovers=[f"container {name}"] if leftovers else [],
            sandbox=name,
        )


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
    events = Path("/sys/fs/cgroup/pids/docker") / probe.stdout.strip() / "pids.events"
    try:
        text = events.read_text() if probe.returncode == 0 else ""
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("max "))


def _remove(name: str) -> None:
    subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True, timeout=60)


def _containers_named(name: str) -> bool:
    probe = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"name=^{name}$"], capture_output=True, text=True
    )
    return bool(probe.stdout.strip())
