"""Fixtures for the harness tests: a tiny hidden test set, the sandboxes, and checks that the
organiser's files and processes are as they were."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import example_data
import numpy as np
import pytest

from scorer.harness import bwrap_runner, docker_runner

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ROOT / "tests" / "hostile"
TEST_IMAGE = os.environ.get("MURA_TEST_IMAGE", "mura-evaluation:test")
RUNNERS = ("bwrap", "docker")
# bubblewrap also without cgroups, as on a cgroup v2 host or for a non-root organiser: the
# fallback limits (prlimit, RLIMIT_NPROC on the run's uid, CPU affinity) must hold as well.
NO_CGROUPS = "bwrap-nocgroups"
SYSTEM_PYTHON = "/usr/bin/python3"
PNG = b"\x89PNG\r\n\x1a\n"


def make_hidden_test(root: Path, n: int = 14, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """A hidden test set the harness can stage: (the folder holding MURA-v1.1/, the gold file
    with six radiologists, the gold studies). The images are PNG-signed random bytes: the harness
    never decodes them."""
    test = example_data.make_test(n=n, seed=seed)
    hidden = root / "hidden"
    rng = np.random.default_rng(seed)
    for study in test.studies:
        folder = hidden / study
        folder.mkdir(parents=True)
        for view in range(1, int(rng.integers(1, 4)) + 1):
            (folder / f"image{view}.png").write_bytes(PNG + rng.bytes(64))
    gold = root / "test_radiologists.csv"
    example_data.write_gold(gold, test)
    return hidden, gold, list(test.studies)


def tree_digest(*paths: Path) -> dict[str, tuple]:
    """Every file and folder under `paths`: its content's hash, mode and mtime."""
    found: dict[str, tuple] = {}
    for base in paths:
        for path in [base, *sorted(base.rglob("*"))] if base.is_dir() else [base]:
            info = path.lstat()
            content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            found[str(path)] = (content, info.st_mode, info.st_mtime_ns)
    return found


def runner_or_skip(name: str):
    """The named runner, or a skip that says what is missing (a failure in CI)."""
    if name in ("bwrap", NO_CGROUPS):
        reason = bwrap_runner.unavailable_reason()
        if reason is not None:
            pytest.skip(f"bubblewrap runner: {reason}")
        return bwrap_runner.BwrapRunner(use_cgroups=False if name == NO_CGROUPS else None)
    reason = docker_runner.unavailable_reason()
    if reason is not None:
        pytest.skip(f"docker runner: {reason} (CI starts one with .ci/docker-up)")
    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"docker runner: no image {TEST_IMAGE} in the engine (.ci/docker-up builds it)")
    return docker_runner.DockerRunner(TEST_IMAGE)


def copy_submission(name: str, target: Path, files: dict[str, str] | None = None) -> Path:
    """A copy of tests/hostile/NAME with extra files (token.txt, targets.txt, ...)."""
    folder = target / name
    shutil.copytree(HOSTILE / name, folder)
    for file, text in (files or {}).items():
        (folder / file).write_text(text)
    return folder


def host_processes_with(token: str) -> list[str]:
    """Command lines of the host's processes that carry `token` (a sandbox's survivors)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if token in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def sandbox_of(pid: int) -> str:
    """The cgroup path of a host process (`/mura-kit/run-...` for a bubblewrap run with cgroups,
    `/docker/<container id>` for a container): which sandbox it runs in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return path
    return ""


# An organiser who is not root: an unused, unprivileged uid (test_harness_fallback uses the one above).
ORGANISER_UID = bwrap_runner.SANDBOX_UIDS.start - 2


@contextlib.contextmanager
def organiser_place() -> Iterator[Path]:
    """A folder under /tmp that ORGANISER_UID can enter (pytest's tmp_path is root's, 0700), with
    `home/` its own; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to become an organiser who is not root")
    place = Path(tempfile.mkdtemp(prefix="mura-organiser-", dir="/tmp"))
    try:
        place.chmod(0o755)
        (place / "home").mkdir()
        os.chown(place / "home", ORGANISER_UID, ORGANISER_UID)
        yield place
    finally:
        subprocess.run(["rm", "-rf", str(place)], check=False)


def docker_socket_group() -> int | None:
    """The group that may use the Docker engine's socket (DOCKER_HOST, or the default one), when
    the socket and its folders let a member of that group reach it."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    socket = Path(host.removeprefix("unix://"))
    try:
        info = socket.stat()
    except OSError:
        return None
    if info.st_mode & 0o060 != 0o060 or not all(p.stat().st_mode & 0o001 for p in socket.parents):
        return None
    return info.st_gid


def organiser_python() -> str:
    """The interpreter an organiser who is not root runs the kit with: the system's python3, of
    the same version as this one (the kit's .venv may point at an interpreter under /root, which
    such an organiser cannot enter)."""
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    if version.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"needs {SYSTEM_PYTHON} of Python {sys.version_info[0]}.{sys.version_info[1]}")
    return SYSTEM_PYTHON


def as_organiser(
    place: Path, command: list[str], env: dict[str, str], **kwargs
) -> subprocess.CompletedProcess:
    """Run `command` as ORGANISER_UID, not root, with no capabilities, the Docker socket's group,
    and the kit (this worktree and its .venv) at PLACE/kit: bind-mounted in a mount namespace of
    its own, since the worktree may lie in a folder only root can enter (a CI clone). `{python}`
    in `command` is organiser_python(), which finds the kit and the .venv's packages through
    PYTHONPATH. The environment: `env`, a PATH, HOME and PYTHONPATH."""
    kit = place / "kit"
    packages = Path(sysconfig.get_paths()["purelib"])
    if packages.is_relative_to(ROOT):
        packages = kit / packages.relative_to(ROOT)
    kit.mkdir(exist_ok=True)
    group = docker_socket_group()
    groups = [f"--groups={group}"] if group is not None else ["--clear-groups"]
    drop = ["setpriv", f"--reuid={ORGANISER_UID}", f"--regid={ORGANISER_UID}", *groups, "--"]
    bind = 'mount --bind "$1" "$2" && cd "$PWD" && shift 2 && exec "$@"'  # cd: into the mount
    wrapped = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", bind, "sh", str(ROOT)]
    wrapped.append(str(kit))
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(place / "home"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{kit}:{packages}",
        "PYTHONDONTWRITEBYTECODE": "1",
        **{k: os.environ[k] for k in ("DOCKER_HOST", "MURA_TEST_IMAGE", "CI") if k in os.environ},
        **env,
    }
    argv = [organiser_python() if part == "{python}" else part for part in command]
    return subprocess.run([*wrapped, *drop, *argv], env=environment, capture_output=True, text=True, **kwargs)
