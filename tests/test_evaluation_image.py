"""The evaluation image built with the model extra on a base that has torch (a CUDA PyTorch image)
keeps the base's torch and torchvision: it never installs the project's pinned pair over them,
and a base whose torch is older than the kit needs fails the build instead.

The bases are made here: the CI's local Debian base (no Docker Hub) with stand-in `torch` and
`torchvision` distributions, tiny wheels of versions other than the pins. The rest of the model
extra comes from PyPI, as in `make image`. Every image, container and layer a module run makes
carries one label and is removed at its end."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from scorer.harness import docker_runner

ROOT = Path(__file__).resolve().parents[1]
TEST_BASE = os.environ.get("MURA_TEST_BASE", "mura-test-base:bookworm")
LABEL = "mura-kit-test-run"
BUILD_TIMEOUT = 1800  # seconds; the model extra's wheels (onnxruntime, scipy, ...) take minutes


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def stand_in_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel of a package `name` whose `__version__` and metadata say `version`, and nothing else."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'"""A stand-in for the real {name}."""\n__version__ = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: mura-kit-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [record_line(path, text.encode()) for path, text in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return wheel


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_label():
    """This module run's label; at its end every container and image carrying it is removed."""
    reason = docker_runner.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{reason} (CI starts one with .ci/docker-up)")
    if docker("image", "inspect", TEST_BASE).returncode != 0:
        pytest.skip(f"no base image {TEST_BASE} in the engine (.ci/docker-up makes it)")
    token = uuid.uuid4().hex[:12]
    yield token
    label = f"label={LABEL}={token}"
    docker("container", "prune", "--force", "--filter", label)  # a failed build's step
    docker("image", "prune", "--all", "--force", "--filter", label, timeout=600)


@pytest.fixture(scope="module")
def project_pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    assert {"torch", "torchvision"} <= pins.keys()
    return pins


def base_with_torch(tmp_path: Path, token: str, torch: str, torchvision: str) -> str:
    """TEST_BASE with stand-in torch and torchvision installed into its Python; its tag."""
    context = tmp_path / "base"
    context.mkdir()
    for name, version in (("torch", torch), ("torchvision", torchvision)):
        stand_in_wheel(context, name, version)
    (context / "Dockerfile").write_text(
        f"FROM {TEST_BASE}\n"
        f"LABEL {LABEL}={token}\n"
        "COPY *.whl /tmp/stand-ins/\n"
        "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-index --no-cache-dir"
        " /tmp/stand-ins/*.whl && rm -rf /tmp/stand-ins\n"
    )
    tag = f"mura-kit-test-base:{token}-torch{torch}"
    proc = docker("build", "--network", "none", "-t", tag, str(context), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tag


def make_image(base: str, tag: str) -> subprocess.CompletedProcess:
    """`make image` with the model extra on `base`, as an organiser builds it; stdout and stderr joined."""
    env = dict(os.environ)
    # pip inside the build reaches PyPI through the machine's proxy: the CA bundle (as .ci/docker-up).
    env.setdefault("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "image",
        f"EVAL_IMAGE={tag}",
        f"EVAL_BASE={base}",
        "EVAL_EXTRAS=model",
    ]
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=BUILD_TIMEOUT
    )


def in_image(image: str, code: str) -> str:
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", code)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


INSPECT = """
import importlib, json
from importlib.metadata import version
import torch, torchvision
for module in ("onnx", "onnxruntime", "openvino", "PIL", "tqdm", "numpy", "scorer", "reference_model"):
    importlib.import_module(module)
print(json.dumps({
    "torch": version("torch"), "torchvision": version("torchvision"),
    "modules": [torch.__version__, torchvision.__version__, torch.__doc__, torchvision.__doc__],
    "onnxruntime": version("onnxruntime"), "openvino": version("openvino"), "mura-kit": version("mura-kit"),
}))
"""


@pytest.mark.required_in_ci
def test_the_model_extra_keeps_the_base_images_torch_and_torchvision(run_label, project_pins, tmp_path):
    torch, torchvision = "2.3.0", "0.18.0"  # meet the kit's torch>=2.1, torchvision>=0.16
    assert (torch, torchvision) != (project_pins["torch"], project_pins["torchvision"])
    base = base_with_torch(tmp_path, run_label, torch, torchvision)
    image = f"mura-kit-test-evaluation:{run_label}"
    build = make_image(base, image)
    assert build.returncode == 0, build.stdout[-5000:]
    found = json.loads(in_image(image, INSPECT))
    assert (found["torch"], found["torchvision"]) == (torch, torchvision)
    assert found["modules"] == [
        torch,
        torchvision,
        "A stand-in for the real torch.",
        "A stand-in for the real torchvision.",
    ]
    assert found["onnxruntime"] and found["openvino"] and found["mura-kit"]  # the rest of the model extra
    assert "keeping the base image's torch 2.3.0, torchvision 0.18.0" in build.stdout


@pytest.mark.required_in_ci
def test_a_base_whose_torch_is_older_than_the_kit_needs_fails_the_build(run_label, tmp_path):
    base = base_with_torch(tmp_path, run_label, "1.13.1", "0.14.1")
    image = f"mura-kit-test-evaluation:{run_label}-old-torch"
    build = make_image(base, image)
    assert build.returncode != 0
    # pip's conflict names both sides: the kit's requirement and the base's torch, kept as it is.
    assert "torch>=2.1" in build.stdout and "torch==1.13.1" in build.stdout, build.stdout[-5000:]
    assert "Downloading torch-" not in build.stdout
    assert "build on a base with a newer torch, or with EXTRAS=" in build.stdout  # what to do
    assert docker("image", "inspect", image).returncode != 0
