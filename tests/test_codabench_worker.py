"""A Codabench compute worker, emulated: the bundle `mura codabench bundle` writes, unzipped and run
in the kit's Codabench image exactly as compute_worker.py runs a submission (its mounts, working
directory, placeholders, dropped capabilities, no-new-privileges and environment; the submission
copied into /app/output first; the scoring step on what the prediction step left).

With the kit's reference submission (a tiny ensemble bundle, its ONNX path) every score equals
`mura score` of the answer mapped back to the real studies against the real gold; a crashing, a
too-slow and an incomplete submission fail with one readable, label-free last line, in the
prediction step and again in the scoring step. Both with the images in the bundle and with them
on the worker (--data-on-worker)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from bundle_helpers import tiny_bundle
from codabench_helpers import make_bundle, map_back, mura, private_of, read_map, unpack
from harness_helpers import copy_submission

from scorer.harness import docker_runner

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("MURA_CODABENCH_TEST_IMAGE", "mura-codabench:test")
MODEL_IMAGE = os.environ.get("MURA_CODABENCH_MODEL_IMAGE", "mura-codabench:test-model")
# compute_worker.py: Run._run_program_directory's cap_drop_list and security options.
CAP_DROP = (
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
)
SECURITY = ("no-new-privileges",)
WORKER_ENV = ("PYTHONUNBUFFERED=1", "http_proxy=", "https_proxy=")
MODES = ("images in the bundle", "data on the worker")
TIGHT = 5  # --time-limit: predict.py gets 3 s


def placeholders(command: str, kind: str, scoring: bool) -> str:
    """The legacy placeholders the worker replaces in a command, in its order
    (compute_worker.py: replace_legacy_metadata_command; ingestion not only during scoring)."""
    table = [
        ("$input", "/app/input_data" if kind == "ingestion" else "/app/input"),
        ("$output", "/app/output"),
        ("$program", "/app/program"),
        ("$ingestion_program", "/app/program"),
        ("$hidden", "/app/input/ref"),
        ("$shared", "/app/shared"),
        ("$submission_program", "/app/ingested_program"),
        ("$tmp", "/app/output"),
        ("$predictions", "/app/input/res" if scoring else "/app/output"),
    ]
    for placeholder, path in table:
        command = command.replace(placeholder, path)
    return command


@dataclass
class Step:
    proc: subprocess.CompletedProcess
    output: Path

    @property
    def last_line(self) -> str:
        lines = self.proc.stderr.strip().splitlines()
        return lines[-1] if lines else ""


class Worker:
    """One compute worker: HOST_DIRECTORY/data is `data`; each step gets a fresh run folder."""

    def __init__(self, image: str, root: Path, data: Path, user: str | None = None) -> None:
        self.image, self.root, self.data, self.user = image, root, data, user

    def run(self, program: Path, kind: str, scoring: bool, mounts: dict[Path, str], timeout: float) -> Step:
        meta = yaml.safe_load((program / "metadata.yaml").read_text())
        command = placeholders(meta["command"], kind, scoring)
        name = f"mura-codabench-worker-test-{uuid.uuid4().hex[:12]}"
        output = next(host for host, bind in mounts.items() if bind.startswith("/app/output"))
        args = [
            "docker",
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "none",
            "--userns",
            "host",
            "-w",
            "/app/program",
            *(f"--cap-drop={cap}" for cap in CAP_DROP),
            *(f"--security-opt={option}" for option in SECURITY),
            *(f"--env={e}" for e in WORKER_ENV),
        ]
        if self.user:
            args += ["--user", self.user]
        for host, bind in {program: "/app/program:z", **mounts, self.data: "/app/data:ro"}.items():
            args += ["-v", f"{host}:{bind}"]
        try:
            # The worker hands the command string to docker-py, which splits it as a shell would.
            proc = subprocess.run(
                [*args, self.image, *shlex.split(command)], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            raise
        return Step(proc, output)

    def folder(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def predict(self, bundle: Path, task: dict, submission: Path, timeout: float) -> Step:
        """The prediction step: the ingestion program with the submission beside it."""
        run = self.root / f"predict-{uuid.uuid4().hex[:8]}"
        shutil.copytree(submission, run / "program")
        shutil.copytree(submission, run / "output")  # a submission without metadata: copied there
        shutil.copytree(bundle / Path(task["ingestion_program"]).with_suffix(""), run / "ingestion_program")
        shutil.copytree(bundle / Path(task["input_data"]).with_suffix(""), run / "input_data")
        self.open_up(run)
        mounts = {
            run / "output": "/app/output:z",
            run / "program": "/app/ingested_program",
            run / "input_data": "/app/input_data",
        }
        step = self.run(run / "ingestion_program", "ingestion", False, mounts, timeout)
        status = {"exitCode": None, "ingestionExitCode": step.proc.returncode}
        (run / "output" / "metadata").write_text(yaml.safe_dump(status))  # the worker's push_output
        return step

    def score(self, bundle: Path, task: dict, predicted: Path) -> Step:
        """The scoring step: the scoring program on the reference data and the prediction output."""
        run = self.root / f"score-{uuid.uuid4().hex[:8]}"
        shutil.copytree(bundle / Path(task["scoring_program"]).with_suffix(""), run / "program")
        shutil.copytree(bundle / Path(task["reference_data"]).with_suffix(""), run / "input" / "ref")
        shutil.copytree(predicted, run / "input" / "res")
        (run / "output").mkdir()
        (run / "shared").mkdir()
        self.open_up(run)
        mounts = {run / "output": "/app/output:z", run / "shared": "/app/shared", run / "input": "/app/input"}
        return self.run(run / "program", "program", True, mounts, 120)

    def open_up(self, run: Path) -> None:
        """For an unprivileged container user, what its worker would give it: the run readable,
        the output and shared folders writable (as root the worker's own folders simply work)."""
        if self.user is None:
            return
        for path in [run, *run.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)


def skip_without(image: str) -> None:
    reason = docker_runner.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{reason} (CI starts one with .ci/docker-up)")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip(f"no image {image} in the engine (.ci/docker-up builds it)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Generated MURA-shaped data with real (small) images, six radiologists and strata."""
    from reference_model.synth import Options, generate

    root = tmp_path_factory.mktemp("worker-data")
    options = Options(train_studies=2, valid_studies=2, test_studies=18, image_size=48, seed=7)
    generate(root, options, workers=1)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The kit's reference submission: submission/predict.py with a tiny ensemble bundle beside it."""
    folder = tmp_path_factory.mktemp("reference") / "submission"
    folder.mkdir()
    shutil.copy(ROOT / "submission" / "predict.py", folder / "predict.py")
    images = (data / "MURA-v1.1" / "test_image_paths.csv").read_text().splitlines()
    tiny_bundle(folder / "bundle", data, images)
    return folder


@pytest.fixture(scope="module")
def bundles(data, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """(mode, time limit) -> the bundle unpacked, each a fresh anonymisation."""
    made = {}
    gold = data / "MURA-v1.1" / "test_radiologists.csv"
    for mode in MODES:
        for limit in (TIGHT, 300):
            out = tmp_path_factory.mktemp("worker-bundle") / "competition.zip"
            extra = ["--data-on-worker"] if mode == MODES[1] else []
            make_bundle(out, data, gold, "--time-limit", limit, "--resamples", 300, *extra)
            made[mode, limit] = unpack(out, out.parent / "unpacked")
    return made


def worker_for(image: str, bundle: Path, tmp_path: Path, user: str | None = None) -> Worker:
    """A worker whose data folder holds the bundle's worker data, if it has any."""
    data = tmp_path / "host" / "data"
    held = bundle.parent / "competition.worker-data"
    shutil.copytree(held, data) if held.is_dir() else data.mkdir(parents=True)
    return Worker(image, tmp_path / "host", data, user)


def the_task(bundle: Path) -> dict:
    spec = yaml.safe_load((bundle / "competition.yaml").read_text())
    (phase,) = spec["phases"]
    (task,) = [t for t in spec["tasks"] if t["index"] in phase["tasks"]]
    return task


@pytest.mark.required_in_ci
@pytest.mark.parametrize("mode", MODES)
def test_the_reference_submission_scores_as_mura_score_does_against_the_real_gold(
    data, reference, bundles, tmp_path, mode
):
    skip_without(MODEL_IMAGE)
    bundle = bundles[mode, 300]
    task = the_task(bundle)
    worker = worker_for(MODEL_IMAGE, bundle, tmp_path)
    predicted = worker.predict(bundle, task, reference, timeout=400)
    assert predicted.proc.returncode == 0, predicted.proc.stdout + predicted.proc.stderr
    assert "predicted 18 studies" in predicted.proc.stderr  # the reference model's own summary line
    left = sorted(p.name for p in predicted.output.iterdir())
    assert left == ["metadata", "output.csv", "probabilities.csv"]  # the worker's copy is gone
    scored = worker.score(bundle, task, predicted.output)
    assert scored.proc.returncode == 0, scored.proc.stderr
    scores = json.loads((scored.output / "scores.json").read_text())
    assert "Overall_Mean" in scores and (scored.output / "detailed_results.html").is_file()

    # The answer mapped back to the real studies, scored by `mura score` with the bundle's settings.
    mapping = read_map(private_of(bundle.parent / "competition.zip") / "test_map.csv")
    answer = map_back(predicted.output / "output.csv", mapping, tmp_path / "predictions.csv")
    settings = json.loads((bundle / "test_reference_data" / "scoring.json").read_text())
    proc = mura(
        "score",
        data / "MURA-v1.1" / "test_radiologists.csv",
        answer,
        "--format",
        "json",
        "--seed",
        settings["seed"],
        "--resamples",
        settings["resamples"],
    )
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(proc.stdout)
    assert scores == {key: expected[key] for key in scores}
    official = {k for k, v in expected.items() if k.endswith(("_Mean", "_Lower", "_Upper")) and v is not None}
    assert set(scores) == official


CASES = {
    "crash": ("crash", r"exit code 1; last lines of the log: .*RuntimeError: the model file is corrupt"),
    "too slow": ("endless_loop", r"timed out after 3 s; predict the whole test set within it"),
    "incomplete": ("partial_output", r"expected one row for each of the 18 studies in the input, found 9; "),
}


@pytest.mark.required_in_ci
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_a_failing_submission_fails_with_one_readable_label_free_line(data, bundles, tmp_path, mode, case):
    import re

    skip_without(IMAGE)
    name, pattern = CASES[case]
    submission = copy_submission(name, tmp_path, {"token.txt": uuid.uuid4().hex})
    bundle = bundles[mode, TIGHT]
    task = the_task(bundle)
    worker = worker_for(IMAGE, bundle, tmp_path)
    predicted = worker.predict(bundle, task, submission, timeout=60)
    line = predicted.last_line
    assert predicted.proc.returncode == 2, predicted.proc.stdout + predicted.proc.stderr
    assert line.startswith("submission error: ") and re.search(pattern, line), line
    real = read_map(private_of(bundle.parent / "competition.zip") / "test_map.csv").values()
    shown = predicted.proc.stdout + predicted.proc.stderr
    assert "_positive" not in shown and "_negative" not in shown
    assert not [s for s in real if s.rsplit("/", 3)[1] in shown]  # no real patient folder
    # Codabench goes on to score: the scoring step fails with the same line, and nothing is scored.
    scored = worker.score(bundle, task, predicted.output)
    assert scored.proc.returncode == 2 and scored.last_line == line, scored.proc.stderr
    assert not (scored.output / "scores.json").exists()


@pytest.mark.required_in_ci
def test_the_image_runs_both_steps_as_an_unprivileged_user_too(bundles, tmp_path):
    skip_without(IMAGE)
    bundle = bundles[MODES[0], TIGHT]
    task = the_task(bundle)
    worker = worker_for(IMAGE, bundle, tmp_path, user="1000:1000")
    predicted = worker.predict(bundle, task, copy_submission("well_behaved", tmp_path), timeout=60)
    assert predicted.proc.returncode == 0, predicted.proc.stderr
    scored = worker.score(bundle, task, predicted.output)
    assert scored.proc.returncode == 0, scored.proc.stderr
    assert "Overall_Mean" in json.loads((scored.output / "scores.json").read_text())
    # Where nothing is mounted over it, /app/output is writable by any user as well.
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "1000:1000",
            IMAGE,
            "sh",
            "-c",
            "touch /app/output/x /app/shared/x && echo $HOME && pwd",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and probe.stdout.split() == ["/tmp", "/app/program"], probe.stderr


@pytest.mark.required_in_ci
def test_the_image_has_no_entrypoint_and_runs_as_root_by_default():
    skip_without(IMAGE)
    proc = subprocess.run(
        ["docker", "image", "inspect", IMAGE, "--format", "{{json .Config}}"], capture_output=True, text=True
    )
    config = json.loads(proc.stdout)
    assert not config.get("Entrypoint") and config["WorkingDir"] == "/app/program"
    assert config.get("User", "") in ("", "0", "0:0", "root")


def test_the_codabench_dockerfile_is_the_evaluation_image_laid_out_for_the_worker():
    from test_docker_files import hadolint, instructions

    dockerfile = ROOT / "docker" / "codabench.Dockerfile"
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = instructions(dockerfile)
    assert steps[0] == ("ARG", "BASE=mura-evaluation:latest") and steps[1] == ("FROM", "${BASE}")
    assert ("ENTRYPOINT", "[]") in steps and ("WORKDIR", "/app/program") in steps
    assert not [kind for kind, _ in steps if kind in ("COPY", "ADD")]  # the kit comes from the base
    from scorer.codabench.bundle import IMAGE

    assert f"CODABENCH_IMAGE ?= {IMAGE}\n" in (ROOT / "Makefile").read_text()  # the bundle's --image default
