"""The bubblewrap sandbox without cgroups (a cgroup v2 host, or an organiser who is not root):
the CPUs stay pinned, a timeout never reports processes that are only still dying, and an
unprivileged organiser's sandbox (a user namespace) holds the same limits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from harness_helpers import NO_CGROUPS, copy_submission, runner_or_skip

from scorer.harness import bwrap_runner
from scorer.harness.sandbox import Limits, MiB

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A data folder with an input list (the runner does not care what it lists) and /output."""
    data, output = tmp_path / "data", tmp_path / "output"
    data.mkdir(parents=True)
    output.mkdir()
    (data / "input.csv").write_text("/data/test/XR_HAND/case0001/image1.png\n")
    return data, output


@pytest.mark.required_in_ci
def test_without_cgroups_the_cpus_are_pinned_and_stay_pinned(tmp_path):
    runner = runner_or_skip(NO_CGROUPS)
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: a pinned run looks like any other")
    submission = tmp_path / "greedy"
    submission.mkdir()
    (submission / "predict.py").write_text(
        "import os, threading\n"
        "before = sorted(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, range(os.cpu_count()))\n"  # ask for every CPU back
        "seen = []\n"
        "def worker():\n"
        "    os.sched_setaffinity(0, range(os.cpu_count()))\n"
        "    seen.append(sorted(os.sched_getaffinity(0)))\n"
        "thread = threading.Thread(target=worker)\n"
        "thread.start()\n"
        "thread.join()\n"
        "print(before, sorted(os.sched_getaffinity(0)), seen[0])\n"
    )
    data, output = inputs(tmp_path)
    outcome = runner.run(submission, data, output, Limits(timeout=60, memory=512 * MiB, cpus=1, pids=32))
    assert outcome.exit_code == 0, outcome.log
    first = [allowed[0]]
    assert outcome.log.decode().strip() == f"{first} {first} {first}"


@pytest.mark.required_in_ci
def test_a_timeout_without_cgroups_never_reports_processes_that_are_still_dying(tmp_path):
    # A fork bomb's many processes take a while to die after the sandbox's PID namespace goes;
    # they used to be found (and reported as leftovers) in that moment. Repeated: it was a race.
    runner = runner_or_skip(NO_CGROUPS)
    submission = copy_submission("fork_bomb", tmp_path, {"token.txt": "mura-test-dying"})
    limits = Limits(timeout=1, memory=256 * MiB, cpus=1, pids=200)
    for attempt in range(4):
        data, output = inputs(tmp_path / str(attempt))
        outcome = runner.run(submission, data, output, limits)
        assert outcome.timed_out and outcome.leftovers == [], (attempt, outcome.leftovers)


def unprivileged_organiser() -> Path:
    """A world-readable place with a copy of the kit's scorer package, for an organiser uid
    that cannot enter root's folders (tmp_path is root's)."""
    place = Path(tempfile.mkdtemp(prefix="mura-organiser-", dir="/tmp"))
    shutil.copytree(ROOT / "scorer", place / "kit" / "scorer", ignore=shutil.ignore_patterns("__pycache__"))
    return place


@pytest.mark.required_in_ci
def test_an_unprivileged_organisers_sandbox_holds_the_same_limits(tmp_path):
    runner_or_skip("bwrap")
    if os.geteuid() != 0 or not SYSTEM_PYTHON.is_file():
        pytest.skip("needs root (to become an unprivileged organiser) and the system's python3")
    organiser = bwrap_runner.SANDBOX_UIDS.start - 1  # an unused, unprivileged uid
    place = unprivileged_organiser()
    try:
        submission = copy_submission("fork_limit", place, {"token.txt": "mura-test-nonroot"})
        (submission / "whoami.py").write_text(
            "import ctypes, os\n"
            "from pathlib import Path\n"
            "Path('/output/made-inside').write_text('x')  # its owner is who the host sees\n"
            "try:\n"
            "    os.close(os.open('/proc/sys/kernel/core_pattern', os.O_WRONLY)); print('SYSCTL opened')\n"
            "except OSError as exc:\n"
            "    print('SYSCTL', type(exc).__name__)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "print('USERNS', 'made' if libc.unshare(0x10000000) == 0 else 'refused')\n"
        )
        entry = submission / "predict.py"
        entry.write_text(entry.read_text().replace("children = 0\n", "import whoami\nchildren = 0\n"))
        data, output = inputs(place)
        driver = place / "drive.py"
        driver.write_text(
            "import json, sys\n"
            "from dataclasses import asdict\n"
            "from pathlib import Path\n"
            "from scorer.harness.bwrap_runner import BwrapRunner, unavailable_reason\n"
            "from scorer.harness.sandbox import Limits\n"
            "runner = BwrapRunner()\n"
            "limits = Limits(timeout=60, memory=512 << 20, cpus=1, pids=48)\n"
            f"outcome = runner.run(Path('{submission}'), Path('{data}'), Path('{output}'), limits)\n"
            "run = asdict(outcome)\n"
            "run['log'] = outcome.log.decode()\n"
            "owner = Path(sys.argv[1]).stat().st_uid\n"
            "print(json.dumps({'cgroups': runner.use_cgroups, 'run': run, 'owner': owner}))\n"
        )
        for path in [place, *place.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.chown(output, organiser, organiser)
        drop = ["setpriv", f"--reuid={organiser}", f"--regid={organiser}", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(place / "kit"), "LANG": "C.UTF-8"}
        command = [*drop, str(SYSTEM_PYTHON), str(driver), str(output / "made-inside")]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=place)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(place)], check=False)
    run = report["run"]
    assert report["cgroups"] is False  # an unprivileged organiser cannot make cgroups
    assert report["owner"] == organiser  # the sandbox's user is the organiser's own uid: no more
    lines = run["log"].splitlines()
    assert "SYSCTL PermissionError" in lines and "USERNS refused" in lines
    assert run["exit_code"] == 1 and run["leftovers"] == []
    refused = [line for line in lines if line.startswith("fork refused after ")]
    assert refused and int(refused[0].split()[3]) < 48, lines
