"""An organiser who is not root (CI runs as root, so these become one): what a submission leaves in
/output is theirs to read and remove, or a recorded failure with a reason -- never a traceback; a
run without a run-wide memory cap is said before it starts and refused on request; and the
harness tests marked `unprivileged` pass when run as such an organiser."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3

import pytest
from harness_helpers import (
    ORGANISER_UID,
    as_organiser,
    docker_socket_group,
    make_hidden_test,
    organiser_place,
    runner_or_skip,
)

ANSWER = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "images = [l for l in Path(sys.argv[1]).read_text().splitlines() if l]\n"
    "studies = dict.fromkeys(i.rpartition('/')[0] + '/' for i in images)\n"
    "Path(sys.argv[2]).write_text(''.join(f'{s},1\\n' for s in studies))\n"
)
# What a careless (or hostile) submission leaves behind: a private answer, a folder with a file
# that nobody may enter, a file nobody may read.
LEAVES = ANSWER + (
    "os.chmod(sys.argv[2], 0o600)\n"
    "os.makedirs('/output/cache/deeper')\n"
    "Path('/output/cache/deeper/weights.bin').write_bytes(b'x' * 1000)\n"
    "os.chmod('/output/cache/deeper/weights.bin', 0)\n"
    "os.chmod('/output/cache/deeper', 0)\n"
    "os.chmod('/output/cache', 0)\n"
)
UNREADABLE = ANSWER + "os.chmod(sys.argv[2], 0)\n"


def organiser_runner(runner_name: str) -> None:
    """Skip (in CI: fail) when the organiser cannot use this sandbox."""
    runner_or_skip(runner_name)
    if runner_name == "docker" and docker_socket_group() is None:
        pytest.skip("the Docker engine's socket is not reachable for a member of its group")


def evaluate_as_organiser(place, runner_name: str, code: str, *options: str):
    """`mura evaluate` of a submission running `code`, by ORGANISER_UID: (the process, run folder, store)."""
    organiser = place / "home" / f"evaluation{len(list((place / 'home').glob('evaluation*')))}"
    organiser.mkdir()
    hidden, gold, _ = make_hidden_test(organiser, n=7)
    submission = organiser / "submission"
    submission.mkdir()
    (submission / "predict.py").write_text(code)
    for path in [organiser, *organiser.rglob("*")]:
        shutil.chown(path, ORGANISER_UID, ORGANISER_UID)
    run, db = organiser / "run", organiser / "board.sqlite"
    command = [
        "{python}",
        "-m",
        "mura",
        "evaluate",
        str(submission),
        "--test",
        str(hidden),
        "--gold",
        str(gold),
        "--out",
        str(run),
        "--db",
        str(db),
        "--runner",
        runner_name,
        "--image",
        os.environ.get("MURA_TEST_IMAGE", "mura-evaluation:test"),
        "--timeout",
        "60",
        "--memory",
        "512m",
        "--resamples",
        "100",
        *options,
    ]
    return as_organiser(place, command, {}, cwd=organiser), run, db


def recorded(db) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT status, reason FROM submissions").fetchall()


@pytest.mark.required_in_ci
@pytest.mark.parametrize("runner_name", ["bwrap", "docker"])
def test_what_a_submission_leaves_in_output_is_the_non_root_organisers_to_read_and_remove(runner_name):
    organiser_runner(runner_name)
    with organiser_place() as place:
        done, run, db = evaluate_as_organiser(place, runner_name, LEAVES)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert not (run / "sandbox").exists()  # all of it removed, the locked folder too
        assert (run / "private" / "output.csv").stat().st_uid == ORGANISER_UID
        assert json.loads((run / "outcome.json").read_text())["status"] == "scored"
        assert recorded(db) == [("scored", None)]


@pytest.mark.required_in_ci
@pytest.mark.parametrize("runner_name", ["bwrap", "docker"])
def test_an_output_csv_its_owner_cannot_read_is_a_recorded_failure_for_a_non_root_organiser(runner_name):
    organiser_runner(runner_name)
    with organiser_place() as place:
        done, run, db = evaluate_as_organiser(place, runner_name, UNREADABLE)
        assert done.returncode == 2, done.stdout + done.stderr
        reason = (
            "/output/output.csv has mode 000, which its owner cannot read; write it with the usual "
            "permissions (e.g. 644)"
        )
        assert f"submission failed ({runner_name} sandbox, " in done.stderr and reason in done.stderr
        assert recorded(db) == [("failed", reason)]
        assert not (run / "sandbox").exists()


@pytest.mark.required_in_ci
def test_a_non_root_organiser_without_a_run_wide_memory_cap_is_told_before_the_run_and_can_refuse_it():
    organiser_runner("bwrap")
    with organiser_place() as place:
        refused, run, db = evaluate_as_organiser(place, "bwrap", ANSWER, "--require-memory-cap")
        if "WARNING" not in refused.stderr and refused.returncode == 0:
            pytest.skip("this host delegates cgroup v2 to the organiser: the cap holds for the whole run")
        assert refused.returncode == 3, refused.stderr
        assert refused.stderr.startswith(
            "organiser error: --require-memory-cap: the bwrap sandbox has no run-wide memory cap here "
            "(per process only (prlimit --as): "
        ), refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and not run.exists()
        assert not db.exists() or recorded(db) == []

        done, run, _ = evaluate_as_organiser(place, "bwrap", ANSWER)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0].startswith("mura evaluate: WARNING: no run-wide memory cap: per process only"), lines
        assert lines[1].startswith("mura evaluate: staged "), lines
        cap = json.loads((run / "outcome.json").read_text())["memory_cap"]
        assert cap["run_wide"] is False and "prlimit --as" in cap["how"]


@pytest.mark.required_in_ci
def test_the_harness_tests_pass_for_an_organiser_who_is_not_root():
    """The harness tests marked `unprivileged`, run again as ORGANISER_UID (with the Docker
    socket's group): CI runs as root, so nothing else would see what an organiser who is not
    root meets."""
    organiser_runner("bwrap")
    with organiser_place() as place:
        (place / "tmp").mkdir()
        shutil.chown(place / "tmp", ORGANISER_UID, ORGANISER_UID)
        command = [
            "{python}",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-m",
            "unprivileged",
            "--basetemp",
            str(place / "tmp" / "pytest"),
            "tests/",
        ]
        done = as_organiser(place, command, {"TMPDIR": str(place / "tmp")}, cwd=place / "kit")
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"\b[1-9]\d* passed", summary), done.stdout[-3000:]  # (in CI, a skip fails too)
