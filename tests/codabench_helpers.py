"""Making and unpacking Codabench bundles in tests, and mapping a competition's answer back."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def mura(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


def make_bundle(out: Path, test_dir: Path, gold: Path, *options: object) -> Path:
    """`mura codabench bundle` into `out` (a new .zip); fails the test when it does not exit 0."""
    proc = mura("codabench", "bundle", "--test", test_dir, "--gold", gold, "--out", out, *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def unpack(bundle: Path, into: Path) -> Path:
    """The bundle unzipped, each inner zip (program, data, kit) unzipped into a folder of its name
    without .zip, as Codabench's unpacker and worker do."""
    into.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(into)
    for inner in sorted(into.glob("*.zip")):
        with zipfile.ZipFile(inner) as archive:
            archive.extractall(inner.with_suffix(""))
    return into


def competition(folder: Path) -> dict:
    """competition.yaml, parsed as Codabench parses it (PyYAML)."""
    return yaml.safe_load((folder / "competition.yaml").read_text())


def private_of(bundle: Path) -> Path:
    return bundle.with_name(bundle.stem + ".private")


def read_map(path: Path) -> dict[str, str]:
    """A bundle's map back: anonymised study -> real study."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "anonymised_study,study"
    return dict(line.split(",") for line in lines[1:])


def map_back(answer: Path, mapping: dict[str, str], target: Path) -> Path:
    """An answer in the anonymised names (the ingestion program's output.csv) in the real ones."""
    rows = [line.split(",") for line in answer.read_text().splitlines()]
    target.write_text("".join(f"{mapping[study]},{value}\n" for study, value in rows))
    return target
