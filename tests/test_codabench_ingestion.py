"""The Codabench ingestion program, run on this machine from its unzipped folder as the worker runs
it (tests/test_codabench_worker.py runs it in a container): the answer checked and handed on in
the reference data's names, and every failure one readable line that the scoring step repeats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from codabench_helpers import make_bundle, read_map, unpack
from harness_helpers import copy_submission, host_processes_with, make_hidden_test

from scorer.codabench import INGESTION_FAILED

N = 12


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingestion")
    test_dir, gold, _ = make_hidden_test(root / "data", n=N, seed=4)
    bundle = make_bundle(root / "competition.zip", test_dir, gold, "--resamples", 200)
    folder = unpack(bundle, root / "unpacked")
    return {"folder": folder, "map": read_map(root / "competition.private" / "test_map.csv")}


def run_program(folder: Path, module: str, *args: object) -> subprocess.CompletedProcess:
    """`python3 -m MODULE ARGS` from the program's folder, with the worker's environment only."""
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "HOME": str(folder)}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ingest(competition, submission: Path, output: Path, limit: float = 20) -> subprocess.CompletedProcess:
    folder = competition["folder"]
    return run_program(
        folder / "ingestion_program",
        "scorer.codabench.ingestion",
        folder / "test_input_data",
        submission,
        output,
        "--time-limit",
        limit,
    )


def score(competition, output: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The scoring step on what the prediction step left (its /app/input/res)."""
    inputs = tmp_path / "scoring-input"
    shutil.copytree(competition["folder"] / "test_reference_data", inputs / "ref")
    shutil.copytree(output, inputs / "res")
    program = competition["folder"] / "scoring_program"
    return run_program(program, "scorer.codabench", inputs, tmp_path / "scores")


def worker_output(tmp_path: Path, submission: Path) -> Path:
    """/app/output as the worker leaves it before the ingestion program runs: a copy of the
    submission (compute_worker.py copies a submission without metadata there)."""
    output = tmp_path / "output"
    shutil.copytree(submission, output)
    (output / "output.csv").write_text("a/,1\n")  # shipped in the submission: must not be scored
    return output


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "scorer/" not in proc.stderr, proc.stderr  # no traceback of the kit's own (a submission's passes)
    return proc.stderr.strip().splitlines()[-1]


def test_a_valid_answer_is_handed_on_in_the_reference_names_with_its_probabilities(competition, tmp_path):
    submission = copy_submission("well_behaved", tmp_path)
    (submission / "predict.py").write_text(
        (submission / "predict.py").read_text()
        + "import os\nwith open(os.environ['MURA_PROBABILITIES'], 'w') as f:\n"
        "    f.writelines(f'{s},0.25\\n' for s in studies)\n"
    )
    output = worker_output(tmp_path, submission)
    proc = ingest(competition, submission, output)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote 12 studies" in proc.stdout  # the submission's own output passes through
    assert sorted(p.name for p in output.iterdir()) == ["output.csv", "probabilities.csv"]
    rows = [line.split(",") for line in (output / "output.csv").read_text().splitlines()]
    assert [study for study, _ in rows] == list(competition["map"])  # every case once, in case order
    assert [value for _, value in rows] == [str(int(s.rstrip("/")[-1]) % 2) for s, _ in rows]
    probabilities = (output / "probabilities.csv").read_text().splitlines()
    assert [line.split(",") for line in probabilities] == [[study, "0.25"] for study, _ in rows]
    scored = score(competition, output, tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "Overall_Mean" in json.loads((tmp_path / "scores" / "scores.json").read_text())


@pytest.mark.parametrize(
    "name, files, needle",
    [
        ("crash", {}, "exit code 1; last lines of the log: "),
        ("partial_output", {}, f"one row for each of the {N} studies in the input, found 6; missing 6: "),
        ("probabilities", {}, "threshold probabilities first"),
        ("no_output", {}, "wrote no output.csv; expected "),
        ("well_behaved", {"metadata.yaml": "command: python3 predict.py\n"}, "a metadata.yaml at its root"),
    ],
    ids=["crash", "incomplete", "probabilities", "no output", "own metadata"],
)
def test_a_failed_submission_ends_in_one_line_the_scoring_step_repeats(
    competition, tmp_path, name, files, needle
):
    submission = copy_submission(name, tmp_path, files)
    output = worker_output(tmp_path, submission)
    proc = ingest(competition, submission, output)
    line = last_line(proc)
    assert proc.returncode == 2 and line.startswith("submission error: ") and needle in line, proc.stderr
    real = {study.rsplit("/", 3)[1] for study in competition["map"].values()}  # patient folders
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr
    assert not [patient for patient in real if patient in proc.stdout + proc.stderr]
    assert sorted(p.name for p in output.iterdir()) == [INGESTION_FAILED]  # no answer to score
    scored = score(competition, output, tmp_path)
    assert scored.returncode == 2 and last_line(scored) == line
    assert not (tmp_path / "scores" / "scores.json").exists()


def test_a_too_slow_submission_is_stopped_with_everything_it_started(competition, tmp_path):
    token = f"mura-ingestion-test-{uuid.uuid4().hex}"
    submission = copy_submission("endless_loop", tmp_path, {"token.txt": token})
    output = worker_output(tmp_path, submission)
    proc = ingest(competition, submission, output, limit=2)
    assert proc.returncode == 2
    assert last_line(proc) == "submission error: timed out after 2 s; predict the whole test set within it"
    assert host_processes_with(token) == []  # its child in a session of its own is gone too
    assert score(competition, output, tmp_path).returncode == 2


def test_a_worker_without_the_data_is_the_organisers_error(tmp_path):
    test_dir, gold, _ = make_hidden_test(tmp_path / "data", n=5, seed=5)
    bundle = make_bundle(tmp_path / "c.zip", test_dir, gold, "--data-on-worker")
    folder = unpack(bundle, tmp_path / "unpacked")
    worker_data = tmp_path / "worker" / "data"
    shutil.copytree(tmp_path / "c.worker-data", worker_data)
    held = next(worker_data.iterdir())
    image = next(held.rglob("*.png"))
    image.chmod(0o644)
    image.write_bytes(b"stale")
    submission = copy_submission("well_behaved", tmp_path)
    output = tmp_path / "output"
    output.mkdir()
    proc = run_program(
        folder / "ingestion_program",
        "scorer.codabench.ingestion",
        folder / "test_input_data",
        submission,
        output,
        "--time-limit",
        20,
        "--worker-data",
        worker_data,
    )
    line = last_line(proc)
    assert proc.returncode == 3 and line.startswith("organiser error: "), proc.stderr
    assert "lacks or has other bytes for 1 of" in line and held.name in line
    assert "wrote" not in proc.stdout  # predict.py never ran
    inputs = tmp_path / "input"
    shutil.copytree(folder / "test_reference_data", inputs / "ref")
    shutil.copytree(output, inputs / "res")
    scored = run_program(folder / "scoring_program", "scorer.codabench", inputs, tmp_path / "scores")
    assert scored.returncode == 3 and last_line(scored) == line
