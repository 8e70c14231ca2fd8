"""An independent oracle for `mura score`: every kappa it prints, recomputed from the CSV files
with scikit-learn's cohen_kappa_score and a majority vote written here, not the kit's."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]
RATERS = ["RadA", "RadB", "RadC", "RadD", "RadE", "RadF"]
GOLD_RATERS = ["RadA", "RadB", "RadC"]
UNDEFINED_TYPE = "HUMERUS"  # every gold label and every prediction normal: kappa is undefined


def write_files(tmp_path: Path) -> tuple[Path, Path]:
    """A six-rater gold file with a header naming the raters, and a submission: noisy reads of a
    hidden truth, 15 to 40 studies per type, in a shuffled order."""
    rng = np.random.default_rng(12)
    gold_rows, predictions = [], []
    for t, study_type in enumerate(TYPES):
        for i in range(int(rng.integers(15, 41))):
            study = f"MURA-v1.1/test/XR_{study_type}/patient{11000 + 100 * t + i:05d}/study1/"
            if study_type == UNDEFINED_TYPE:
                votes, predicted = [0] * 6, 0
            else:
                truth = int(rng.random() < 0.4)
                votes = [truth ^ int(rng.random() < 0.15) for _ in RATERS]
                predicted = truth ^ int(rng.random() < 0.2)
            gold_rows.append([study, *votes])
            predictions.append([study, predicted])
    order = rng.permutation(len(predictions))
    gold, sub = tmp_path / "gold.csv", tmp_path / "output.csv"
    with gold.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([["study", *RATERS], *gold_rows])
    with sub.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(predictions[i] for i in order)
    return gold, sub


def read_back(gold: Path, sub: Path) -> tuple[list[dict], dict[str, int]]:
    """The files as plain Python reads them: gold rows by rater name, predictions by study."""
    with gold.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with sub.open(newline="") as handle:
        predicted = {study: int(value) for study, value in csv.reader(handle)}
    return rows, predicted


def kappa(truth: list[int], predicted: list[int]) -> float | None:
    """sklearn's kappa; None where it is undefined (NaN), as the scorer documents it (null)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = cohen_kappa_score(truth, predicted, labels=[0, 1])
    return None if math.isnan(value) else float(value)


def approx(value: float | None):
    return None if value is None else pytest.approx(value, abs=1e-12)


def test_every_mean_is_sklearns_kappa_against_the_majority_of_the_chosen_raters(tmp_path):
    gold, sub = write_files(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura",
            "score",
            gold,
            sub,
            "--gold-raters",
            ",".join(GOLD_RATERS),
            "--format",
            "json",
            "--resamples",
            "200",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    rows, predicted = read_back(gold, sub)
    groups: dict[str, list[dict]] = {"Overall": rows}
    for study_type in TYPES:
        groups[study_type.capitalize()] = [r for r in rows if f"/XR_{study_type}/" in r["study"]]
    others = [r for r in RATERS if r not in GOLD_RATERS]
    for group, members in groups.items():
        assert members, group
        truth = [int(sum(int(r[name]) for name in GOLD_RATERS) >= 2) for r in members]
        model = [predicted[r["study"]] for r in members]
        expected = kappa(truth, model)
        if group == UNDEFINED_TYPE.capitalize():
            assert expected is None  # the oracle agrees that it is undefined
            assert result[f"{group}_Mean"] is None and result[f"{group}_Lower"] is None
        else:
            assert expected is not None and result[f"{group}_Mean"] == approx(expected), group
        for name in others:  # the radiologists outside the gold panel, scored the same way
            theirs = kappa(truth, [int(r[name]) for r in members])
            assert result["radiologists"][name][group]["kappa"] == approx(theirs), (group, name)
    assert result["gold"]["gold_raters"] == GOLD_RATERS and list(result["radiologists"]) == others
    assert 0 < result["Overall_Mean"] < 1  # a real agreement, not a degenerate one
