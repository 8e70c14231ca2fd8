"""Fixtures for the leaderboard tests: real `mura score` results on small generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import example_data

from scorer import report
from scorer.pipeline import score_files
from scorer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@cache
def _gold(folder: str, n: int) -> Path:
    test = example_data.make_test(n=n, seed=0)
    path = Path(folder) / f"gold-{n}.csv"
    example_data.write_gold(path, test)
    return path


def score_result(folder: Path, accuracy: float, seed: int, *, n: int = 70, resamples: int = 100) -> dict:
    """The JSON `mura score --json` writes for a submission of the given accuracy."""
    test = example_data.make_test(n=n, seed=0)
    gold = _gold(str(folder), n)
    predictions = folder / f"predictions-{accuracy}-{seed}.csv"
    example_data.write_predictions(
        predictions, test.studies, list(example_data.noisy_predictions(test, accuracy, seed))
    )
    return json.loads(report.to_json(score_files(gold, predictions, Settings(resamples=resamples))))


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def mura(*args: str | Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def assert_host_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 3, no traceback, and the reason on the last line of stderr: one line for the kit's own
    organiser errors (click's usage errors come after a usage line, as for `mura score`)."""
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    if last.startswith("organiser error: "):
        assert len(lines) == 1, proc.stderr
    else:
        assert last.startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in last, last
