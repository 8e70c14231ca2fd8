""".ci/: the CI run stops the Docker engine it started, whatever fails, and never another one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DOWN = ROOT / ".ci" / "docker-down"


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def docker_down(state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MURA_DOCKERD": str(state)}
    return subprocess.run(["bash", str(DOCKER_DOWN)], capture_output=True, text=True, env=env, timeout=60)


def test_docker_down_leaves_an_engine_it_did_not_start_alone(tmp_path):
    # An engine already answering in the state folder (its own pid file), not started by docker-up.
    state = tmp_path / "state"
    state.mkdir()
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (state / "pid").write_text(f"{engine.pid}\n")
        assert docker_down(state).returncode == 0
        time.sleep(0.2)
        assert alive(engine)
        # A recorded pid that is no dockerd of this folder (a reused pid) is not killed either.
        (state / "started-by-docker-up").write_text(f"{engine.pid}\n")
        assert docker_down(state).returncode == 0
        time.sleep(0.2)
        assert alive(engine) and not (state / "started-by-docker-up").exists()
    finally:
        engine.kill()
        engine.wait()


def test_docker_down_stops_the_engine_docker_up_started(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # Its command line as docker-up starts it: `dockerd ... --pidfile STATE/pid ...`.
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "dockerd", "--pidfile", f"{state}/pid"]
    )
    try:
        (state / "started-by-docker-up").write_text(f"{engine.pid}\n")
        assert docker_down(state).returncode == 0
        assert engine.wait(timeout=30) != 0
        assert not (state / "started-by-docker-up").exists()
    finally:
        if alive(engine):
            engine.kill()
            engine.wait()


def test_the_ci_run_sets_its_trap_before_it_starts_an_engine_in_a_folder_of_its_own():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line and not line.lstrip().startswith("#"))

    assert first("mktemp -d") < first("trap ") < first(".ci/docker-up")
    assert first("export MURA_DOCKERD") < first(".ci/docker-up")


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines())


def test_docker_down_unmounts_what_the_engine_left_mounted_in_its_folder(tmp_path):
    """dockerd leaves exec/netns/default mounted after a clean stop; .ci/run then cannot remove
    its state folder. docker-down unmounts it once the engine has gone."""
    state = tmp_path / "state"
    leftover = state / "exec" / "netns" / "default"
    leftover.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(leftover)], capture_output=True).returncode:
        pytest.skip("mounting needs root")
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "dockerd", "--pidfile", f"{state}/pid"]
    )
    try:
        (state / "started-by-docker-up").write_text(f"{engine.pid}\n")
        assert mounted(leftover)
        assert docker_down(state).returncode == 0
        assert not mounted(leftover)
    finally:
        if alive(engine):
            engine.kill()
            engine.wait()
        subprocess.run(["umount", str(leftover)], capture_output=True)
