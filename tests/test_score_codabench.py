"""The Codabench / CodaLab Competitions scoring program."""

import json
import os
import subprocess
import sys
from pathlib import Path

from scorer import example_data

ROOT = Path(__file__).resolve().parents[1]


def run(input_dir: Path, output_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scorer.codabench", str(input_dir), str(output_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def make_input(tmp_path: Path, predictions: list[str] | None = None) -> Path:
    test = example_data.make_test(n=60, seed=1)
    ref, res = tmp_path / "input" / "ref", tmp_path / "input" / "res"
    ref.mkdir(parents=True)
    res.mkdir(parents=True)
    example_data.write_gold(ref / "test.csv", test)
    (ref / "scoring.json").write_text(json.dumps({"gold_raters": ["Rad1", "Rad2", "Rad3"], "resamples": 300}))
    if predictions is None:
        pred = example_data.noisy_predictions(test, 0.85, seed=2)
        predictions = [f"{s},{v}" for s, v in zip(test.studies, pred)]
    (res / "output.csv").write_text("".join(line + "\n" for line in predictions))
    return tmp_path / "input"


def test_writes_scores_and_detailed_results(tmp_path):
    proc = run(make_input(tmp_path), tmp_path / "output")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "output" / "scores.json").read_text())
    assert "Overall_Mean" in scores and "Wrist_Upper" in scores
    assert all(isinstance(v, float) for v in scores.values())
    txt = (tmp_path / "output" / "scores.txt").read_text().splitlines()
    assert f"Overall_Mean: {scores['Overall_Mean']}" in txt
    page = (tmp_path / "output" / "detailed_results.html").read_text()
    assert "Rad4" in page and "Rad1, Rad2, Rad3" in page  # the organiser's rater choice was used
    assert "_positive" not in page and "_negative" not in page


def test_a_failed_submission_exits_non_zero_with_the_reason_last_on_stderr(tmp_path):
    input_dir = make_input(tmp_path, predictions=["MURA-v1.1/test/XR_HAND/patient1/study1/,0.7"])
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("submission error:") and "0 or 1" in last
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr
    assert not (tmp_path / "output" / "scores.json").exists()


def test_missing_predictions_are_the_participants_fault(tmp_path):
    input_dir = make_input(tmp_path)
    (input_dir / "res" / "output.csv").unlink()
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 2
    assert "expected the predictions file in res/" in proc.stderr.strip().splitlines()[-1]


def test_metadata_names_the_module():
    meta = (ROOT / "scorer" / "codabench" / "metadata.yaml").read_text()
    assert "python3 -m scorer.codabench" in meta
