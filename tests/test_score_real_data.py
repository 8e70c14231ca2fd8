"""Scoring on MURA's real validation index (../shared/real), when it is present."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "MURA-v1.1"
pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(
        not (REAL / "valid_labeled_studies.csv").is_file(),
        reason="the real MURA index files (../shared/real) are not on this machine",
    ),
]


def test_score_a_submission_built_from_the_real_validation_index(tmp_path):
    rows = [line.split(",") for line in (REAL / "valid_labeled_studies.csv").read_text().splitlines() if line]
    # Predict the label, wrong on every seventh study, in a shuffled order and respelled paths.
    preds = [
        f"./{path.rstrip('/')},{int(label) if i % 7 else 1 - int(label)}"
        for i, (path, label) in enumerate(rows)
    ]
    sub = tmp_path / "output.csv"
    sub.write_text("\n".join(reversed(preds)) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura",
            "score",
            str(REAL / "valid_labeled_studies.csv"),
            str(sub),
            "--format",
            "json",
            "--resamples",
            "200",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    # Independent count straight from the file: the type is the XR_ folder.
    per_type = Counter(path.split("/")[2].removeprefix("XR_").capitalize() for path, _ in rows)
    abnormal = Counter(path.split("/")[2].removeprefix("XR_").capitalize() for path, y in rows if y == "1")
    assert result["n_studies"] == 1199 == len(rows)
    assert result["gold"]["abnormal"] == 538 and result["gold"]["normal"] == 661
    for group, n in per_type.items():
        record = result["model"][group]
        assert record["n"] == n
        assert record["tp"] + record["fn"] == abnormal[group]
    wrong = sum(1 for i in range(len(rows)) if i % 7 == 0)
    overall = result["model"]["Overall"]
    assert overall["fp"] + overall["fn"] == wrong
