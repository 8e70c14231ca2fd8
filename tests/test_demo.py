"""`make demo`'s steps at the tiny size: synth -> train -> bundle -> evaluate in a sandbox ->
leaderboard -> activation maps, and a second run that reuses what the first made."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import runner_or_skip

from scorer.harness import bwrap_runner
from scorer.leaderboard.store import open_store

ROOT = Path(__file__).resolve().parents[1]


def run_demo(out: Path, submission: Path) -> str:
    command = [sys.executable, str(ROOT / "demo" / "run.py"), "--size", "tiny"]
    proc = subprocess.run(
        [*command, "--out", str(out), "--submission", str(submission)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.required_in_ci
def test_the_demo_runs_the_whole_competition_and_a_second_run_reuses_it(tmp_path):
    # The demo picks docker only with the evaluation image; bubblewrap is what CI has for it.
    runner_or_skip("bwrap" if bwrap_runner.unavailable_reason() is None else "docker")
    out, submission = tmp_path / "demo-output", tmp_path / "submission"
    submission.mkdir()
    shutil.copy(ROOT / "submission" / "predict.py", submission)

    first = run_demo(out, submission)
    steps = ("synth", "train", "bundle", "evaluate", "leaderboard render", "cam")
    for step in (f"$ mura {name} " for name in steps):
        assert step in first, step
    assert (submission / "bundle" / "manifest.json").is_file()
    result = json.loads((out / "evaluation" / "result.json").read_text())
    assert result["n_studies"] == 12 and "strata" in result  # scored on the hidden test, stratified
    assert result["strata"]["groups"] and all(group["n"] > 0 for group in result["strata"]["groups"].values())
    assert len(result["radiologists"]) == 3  # six generated radiologists: three make the gold standard
    outcome = json.loads((out / "evaluation" / "outcome.json").read_text())
    assert outcome["status"] == "scored" and outcome["run"]["leftovers"] == []
    assert (out / "evaluation" / "private" / "map.csv").is_file()
    # The evaluation recorded the scored entry, and the leaderboard shows it -- or says it left
    # it off (a tiny model's kappa may be below the 0.5 threshold or undefined).
    kappa = result["Overall_Mean"]
    with open_store(out / "leaderboard.sqlite") as store:
        entries = store.query("SELECT submitter, model, institution, status, kappa FROM submissions")
    assert entries == [("demo", "DenseNet-121 x2 (demo)", "MURA kit", "scored", kappa)]
    markdown, page = (out / "leaderboard.md").read_text(), (out / "leaderboard.html").read_text()
    assert "| Rank | Date | Model | Kappa |" in markdown and "<table" in page
    rows = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    if kappa is not None and kappa >= 0.5:
        assert len(rows) == 1 and "DenseNet-121 x2 (demo)" in rows[0] and rows[0].endswith(f"| {kappa:.3f} |")
    else:
        assert rows == [] and "Left off: 1 " in page
    assert list((out / "cams").rglob("*.png"))
    # It ends by saying where each output is.
    tail = first[first.index("Its outputs:") :]
    for path in (
        out / "evaluation" / "score.html",
        out / "leaderboard.md",
        out / "leaderboard.html",
        out / "cams",
    ):
        assert str(path) in tail

    second = run_demo(out, submission)
    assert "reusing the synth tree already there" in second
    for step in ("$ mura train", "$ mura bundle", "$ mura evaluate", "$ mura cam"):
        assert step not in second, step
    assert second.count("# training member") == 2 and "# the evaluation: reusing" in second
