"""`mura evaluate` stopped from outside: a SIGTERM (or SIGHUP) ends the sandbox with it -- no
container, process or cgroup is left and the exit is clean -- and a container outlives even a
SIGKILLed harness only until its own deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from harness_helpers import (
    RUNNERS,
    TEST_IMAGE,
    copy_submission,
    host_processes_with,
    make_hidden_test,
    runner_or_skip,
    sandbox_of,
)

from scorer.harness import cgroups, docker_runner

ROOT = Path(__file__).resolve().parents[1]


def start_evaluate(runner_name: str, tmp_path: Path, timeout: float) -> tuple[subprocess.Popen, str, Path]:
    """`mura evaluate` of endless_loop as a subprocess, once its sandbox runs: (the process, the
    token its processes carry, the run folder)."""
    hidden, gold, _ = make_hidden_test(tmp_path / "organiser", n=5)
    token = f"mura-test-{uuid.uuid4().hex}"
    submission = copy_submission("endless_loop", tmp_path / "participant", {"token.txt": token})
    run = tmp_path / "organiser" / "run"
    command = [
        sys.executable,
        "-m",
        "mura",
        "evaluate",
        str(submission),
        "--test",
        str(hidden),
        "--gold",
        str(gold),
        "--no-record",
        "--out",
        str(run),
        "--runner",
        runner_name,
        "--image",
        TEST_IMAGE,
        "--timeout",
        str(timeout),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not host_processes_with(token):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sandbox did not start in 120 s"
        time.sleep(0.1)
    return proc, token, run


def container_ids() -> set[str]:
    command = ["docker", "ps", "--all", "--no-trunc", "--quiet"]
    listing = subprocess.run(command, capture_output=True, text=True)
    return set(listing.stdout.split())


@pytest.mark.required_in_ci
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_a_stopped_evaluation_leaves_no_container_process_or_cgroup(runner_name, signum, tmp_path):
    runner_or_skip(runner_name)
    proc, token, run = start_evaluate(runner_name, tmp_path, timeout=300)
    pid = int(host_processes_with(token)[0].split(":")[0])
    sandbox = sandbox_of(pid)  # /mura-kit/run-... or /docker/<id>

    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    *stages, last = stderr.strip().splitlines()
    assert last == (
        f"mura evaluate: stopped by {name}; the sandbox was stopped and removed; the evaluation is "
        f"incomplete (run folder {run}): run it again"
    )
    assert stages[-1].startswith("mura evaluate: running in the "), stages  # said before it ran
    assert stdout == ""
    assert host_processes_with(token) == []
    assert not (run / "sandbox").exists()  # the staged test set and /output are gone
    if runner_name == "docker":
        assert sandbox.startswith("/docker/")
        assert sandbox.rsplit("/", 1)[1] not in container_ids()
    elif cgroups.available():
        assert sandbox.startswith(f"/{cgroups.PARENT}/run-")
        assert not [c for c in cgroups.CONTROLLERS if (cgroups.ROOT / c / sandbox.lstrip("/")).exists()]


@pytest.mark.required_in_ci
def test_a_container_stops_at_its_own_deadline_when_the_harness_is_killed(tmp_path):
    runner_or_skip("docker")
    proc, token, _ = start_evaluate("docker", tmp_path, timeout=2)
    container = sandbox_of(int(host_processes_with(token)[0].split(":")[0])).rsplit("/", 1)[1]
    proc.kill()  # no cleanup at all: only the container's own deadline is left
    proc.wait()
    try:
        deadline = time.monotonic() + 2 + docker_runner.CONTAINER_GRACE + 60
        while True:
            probe = subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", container],
                capture_output=True,
                text=True,
            )
            state = json.loads(probe.stdout)
            if not state["Running"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not state["Running"], "the container outlived its deadline"
        assert state["ExitCode"] == 128 + signal.SIGKILL  # `timeout -s KILL` ended it
        assert host_processes_with(token) == []
        # Nor does the harness's `docker events` client outlive that deadline (its --until).
        name = subprocess.run(
            ["docker", "inspect", "--format", "{{.Name}}", container], capture_output=True, text=True
        ).stdout.strip("/\n")
        assert name.startswith("mura-eval-"), name
        ended = time.monotonic() + 30
        while host_processes_with(f"container={name} ") and time.monotonic() < ended:
            time.sleep(0.5)
        assert host_processes_with(f"container={name} ") == []
    finally:
        subprocess.run(["docker", "rm", "--force", container], capture_output=True)
