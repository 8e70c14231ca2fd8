"""Hostile and broken submissions, in each sandbox: every one ends as a recorded failure with a
clear reason, the organiser's data and leaderboard stay intact, and nothing is left running."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import threading
import uuid

import pytest
from harness_helpers import (
    NO_CGROUPS,
    RUNNERS,
    copy_submission,
    host_processes_with,
    make_hidden_test,
    runner_or_skip,
    tree_digest,
)

from scorer.harness import cgroups
from scorer.harness.evaluate import Submission, evaluate
from scorer.harness.sandbox import Limits, MiB
from scorer.leaderboard.store import Entry, open_store
from scorer.pipeline import score_files
from scorer.settings import Settings

SETTINGS = Settings(resamples=100)
LIMITS = Limits(
    timeout=3,
    memory=256 * MiB,
    cpus=1,
    pids=64,
    log_cap=64 * 1024,
    output_limit=8 * MiB,
    output_size=16 * MiB,
)
N_STUDIES = 14
# Every sandbox, and bubblewrap's fallback limits where it has no cgroups (which is what bubblewrap
# has for an organiser who is not root: that run repeats only the other two).
HOSTILE_RUNNERS = (
    pytest.param(RUNNERS[0], marks=pytest.mark.unprivileged),
    NO_CGROUPS,
    *(pytest.param(name, marks=pytest.mark.unprivileged) for name in RUNNERS[1:]),
)

ENDLESS = {"endless_loop", "fork_bomb"}
# name -> what the recorded reason must say
CASES = {
    "endless_loop": r"^timed out after 3 s; ",
    "memory_hog": r"^killed: exceeded the memory limit of 256 MiB; ",
    # The parenthesis only where the sandbox can tell (a cgroup v1 pids group): see below.
    "fork_bomb": r"^timed out after 3 s( \(it hit the process limit of 64\))?; ",
    "fork_limit": r"^exit code 1( \(it hit the process limit of 64\))?; last lines of the log: "
    r".*fork refused after (?P<children>\d+) children",
    "fill_output": r"^stopped: wrote more than 16 MiB or 10,000 files to /output; write only output\.csv",
    "network_call": r"^exit code 1; last lines of the log: .*no network: every connection failed$",
    "write_data": r"^exit code 1; last lines of the log: .*Read-only file system.*nothing could be changed$",
    "read_gold": r"^exit code 1; last lines of the log: .*no labels anywhere: the gold file cannot be read$",
    "stdout_flood": r"^stopped: wrote more than 8 MiB to stdout/stderr; ",
    "no_output": r"^wrote no output\.csv; expected /output/output\.csv ",
    "partial_output": rf"^predictions file: expected one row for each of the {N_STUDIES} studies in "
    r"the input, found 7; missing 7: /data/test/XR_[A-Z]+/case\d{4}/, ",
    "probabilities": r"^predictions file: expected the second field to be 0 or 1 on every line; .*'0\.73'.*"
    r"threshold probabilities first",
    "crash": r"^exit code 1; last lines of the log: .*RuntimeError: the model file is corrupt$",
}


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    return make_hidden_test(tmp_path_factory.mktemp("hidden"), n=N_STUDIES)


@pytest.fixture(scope="module")
def listener():
    """A TCP server on each of the host's addresses that the network_call submission tries;
    it counts the connections it accepts (it must accept none)."""
    hosts = sorted({"127.0.0.1", *_host_addresses()})
    servers, accepted = [], []
    for host in hosts:
        server = socket.create_server((host, 0))
        server.settimeout(0.2)
        servers.append(server)
    stop = threading.Event()

    def serve(server):
        while not stop.is_set():
            try:
                connection, peer = server.accept()
            except OSError:
                continue
            accepted.append(peer)
            connection.close()

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    targets = "".join(f"{s.getsockname()[0]} {s.getsockname()[1]}\n" for s in servers)
    yield targets, accepted
    stop.set()
    for server in servers:
        server.close()


def _host_addresses() -> set[str]:
    """The host's own IPv4 addresses (no traffic leaves the machine)."""
    probe = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return {a for a in probe.stdout.split() if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a)}


@pytest.fixture
def board(tmp_path, hidden):
    """A leaderboard that already holds one honest result, which must survive."""
    _, gold, studies = hidden
    predictions = tmp_path / "honest.csv"
    predictions.write_text("".join(f"{s},{int('positive' in s)}\n" for s in studies))
    db = tmp_path / "leaderboard.sqlite"
    with open_store(db) as store:
        store.add_result(score_files(gold, predictions, SETTINGS), Entry("alice", model="honest"))
    return db


@pytest.mark.required_in_ci
@pytest.mark.parametrize("runner_name", HOSTILE_RUNNERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_or_broken_submission_ends_as_a_recorded_failure(
    case, runner_name, hidden, board, listener, tmp_path
):
    runner = runner_or_skip(runner_name)
    test_dir, gold, studies = hidden
    token = f"mura-test-{uuid.uuid4().hex}"
    organisers = [gold, test_dir / studies[0] / "image1.png", tmp_path / "run" / "private" / "map.csv"]
    targets = {"network_call": listener[0], "read_gold": "".join(f"{path}\n" for path in organisers)}
    files = {"token.txt": token, "targets.txt": targets.get(case, "")}
    submission = copy_submission(case, tmp_path / "submissions", files)
    before = tree_digest(test_dir, gold, submission)
    with open_store(board) as store:
        honest = store.query("SELECT * FROM submissions")

    run = tmp_path / "run"
    mallory = Submission(submission, "mallory")
    # Only the endless ones meet the 3 s limit; the others get time to end by themselves on a
    # loaded machine (read_gold walks the whole file system).
    limits = LIMITS if case in ENDLESS else dataclasses.replace(LIMITS, timeout=120)
    verdict = evaluate(mallory, test_dir, gold, run, runner, limits, SETTINGS, db=board)

    assert not verdict.ok, f"{case} was scored: {verdict.result and verdict.result['Overall_Mean']}"
    found = re.search(CASES[case], verdict.reason)
    assert found, verdict.reason
    if case == "fork_limit":  # the process limit holds in every sandbox, cgroups or not
        assert int(found["children"]) < LIMITS.pids, verdict.reason
    if case == "fork_bomb" and counts_refused_forks(runner_name):
        assert "(it hit the process limit of 64)" in verdict.reason, verdict.reason
    # Participant-safe: no real path of the hidden test set, no label.
    for study in studies:
        assert study.split("/")[3] not in verdict.reason  # patientNNNNN
    assert "_positive" not in verdict.reason and "_negative" not in verdict.reason
    assert str(test_dir) not in verdict.reason and str(gold) not in verdict.reason
    # Recorded, and the leaderboard is otherwise intact.
    with open_store(board) as store:
        assert store.query("SELECT * FROM submissions WHERE submitter = 'alice'") == honest
        mallory = store.query("SELECT status, reason FROM submissions WHERE submitter = 'mallory'")
        assert mallory == [("failed", verdict.reason)]
    # The organiser's data and the submission are unchanged, nothing is left running.
    assert tree_digest(test_dir, gold, submission) == before
    assert verdict.outcome.leftovers == []
    assert host_processes_with(token) == []
    assert listener[1] == []
    sandbox = verdict.outcome.sandbox
    if runner_name == "bwrap" and cgroups.available():
        assert sandbox.startswith("run-")
        assert not [c for c in cgroups.CONTROLLERS if (cgroups.ROOT / c / cgroups.PARENT / sandbox).exists()]
    if runner_name == "docker":
        names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True)
        assert sandbox.startswith("mura-eval-") and sandbox.encode() not in names.stdout.split()
    # The run folder says the same.
    assert (run / "log.txt").stat().st_size <= LIMITS.log_cap + 200
    assert not (run / "sandbox").exists()  # the staged copy and the sandbox's /output are gone


def counts_refused_forks(runner_name: str) -> bool:
    """Whether this sandbox can tell that forks were refused: cgroup v1 pids groups (bubblewrap's
    own, or the Docker engine's with the cgroupfs driver)."""
    if runner_name == "bwrap":
        return cgroups.available()
    return runner_name == "docker" and (cgroups.ROOT / "pids" / "docker").is_dir()


@pytest.mark.required_in_ci
@pytest.mark.parametrize("runner_name", RUNNERS)
def test_a_flood_is_stopped_and_its_log_keeps_the_head_and_the_tail(runner_name, hidden, tmp_path):
    runner = runner_or_skip(runner_name)
    test_dir, gold, _ = hidden
    submission = copy_submission("stdout_flood", tmp_path)
    run = tmp_path / "run"
    verdict = evaluate(Submission(submission, "mallory"), test_dir, gold, run, runner, LIMITS, SETTINGS)
    log = (run / "log.txt").read_bytes()
    assert verdict.outcome.flooded and verdict.outcome.log_bytes > LIMITS.output_limit
    assert log.startswith(b"flood flood")
    marker = rb"\[\.\.\. [\d,]+ bytes of output dropped: the log keeps the first and the last 32,768 bytes"
    assert re.search(marker, log)
    assert len(log) <= LIMITS.log_cap + 200
