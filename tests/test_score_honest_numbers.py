"""Hidden stratification, the label audit and ROC analysis (issue: honest numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from scorer import roc
from scorer.settings import Settings
from scorer.strata import score_strata

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]


def mura(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def constructed(n_per_finding: int = 60, degenerative_miss: float = 0.7, seed: int = 0):
    """Gold (= truth), model reads and strata where the model misses degenerative findings at
    `degenerative_miss` and other findings at 5%."""
    rng = np.random.default_rng(seed)
    findings = (
        ["fracture"] * n_per_finding
        + ["hardware"] * n_per_finding
        + ["degenerative"] * n_per_finding
        + ["normal"] * (3 * n_per_finding)
    )
    truth = np.array([f != "normal" for f in findings], dtype=np.int8)
    miss = np.array([{"degenerative": degenerative_miss, "normal": 0.1}.get(f, 0.05) for f in findings])
    model = np.where(rng.random(truth.size) < miss, 1 - truth, truth).astype(np.int8)
    rad = np.where(rng.random(truth.size) < 0.08, 1 - truth, truth).astype(np.int8)
    masks = {name: np.array([f == name for f in findings]) for name in sorted(set(findings))}
    return truth, model, rad, masks, findings


def test_per_stratum_counts_and_intervals_match_a_direct_computation():
    truth, model, rad, masks, _ = constructed()
    out = score_strata(truth, {"model": model, "Rad1": rad}, masks, Settings(resamples=3000, seed=4))
    rng = np.random.default_rng(9)
    for name, mask in masks.items():
        group = out["groups"][name]
        t, m = truth[mask], model[mask]
        assert group["n"] == mask.sum()
        assert group["abnormal"] == t.sum() and group["normal"] == (1 - t).sum()
        metric = group["metric"]
        assert metric == ("specificity" if name == "normal" else "sensitivity")
        positive = 1 if metric == "sensitivity" else 0
        direct = np.mean(m[t == positive] == positive)
        assert group["model"][metric] == pytest.approx(direct)
        assert group["Rad1"][metric] == pytest.approx(np.mean(rad[mask][t == positive] == positive))
        # Direct bootstrap: resample all studies, recompute within the stratum.
        values = []
        for _ in range(3000):
            idx = rng.integers(0, truth.size, truth.size)
            keep = mask[idx] & (truth[idx] == positive)
            values.append(np.mean(model[idx][keep] == positive))
        lo, hi = np.percentile(values, [2.5, 97.5])
        assert group["model"][f"{metric}_lower"] == pytest.approx(lo, abs=0.03)
        assert group["model"][f"{metric}_upper"] == pytest.approx(hi, abs=0.03)


def test_the_flag_fires_on_a_hidden_stratum():
    truth, model, rad, masks, _ = constructed(degenerative_miss=0.7)
    out = score_strata(truth, {"model": model, "Rad1": rad}, masks, Settings(resamples=2000))
    assert out["groups"]["degenerative"]["flag"] is True
    assert [f for f in out["flags"] if "'degenerative'" in f] and len(out["flags"]) == 1
    assert not out["groups"]["fracture"]["flag"] and not out["groups"]["normal"]["flag"]


def test_the_flag_stays_quiet_without_one():
    truth, model, rad, masks, _ = constructed(degenerative_miss=0.05)
    out = score_strata(truth, {"model": model, "Rad1": rad}, masks, Settings(resamples=2000))
    assert out["flags"] == []
    assert not any(group["flag"] for group in out["groups"].values())


def _write_case(tmp_path: Path, degenerative_miss: float = 0.7):
    truth, model, _rad, _, findings = constructed(degenerative_miss=degenerative_miss)
    studies = [
        f"MURA-v1.1/test/XR_{TYPES[i % 7]}/patient{30000 + i}/study1_{'positive' if y else 'negative'}/"
        for i, y in enumerate(truth)
    ]
    rng = np.random.default_rng(1)
    rads = np.stack([np.where(rng.random(truth.size) < 0.08, 1 - truth, truth) for _ in range(3)], axis=1)
    gold = tmp_path / "gold.csv"
    gold.write_text("".join(f"{s},{','.join(map(str, r))}\n" for s, r in zip(studies, rads)))
    sub = tmp_path / "output.csv"
    sub.write_text("".join(f"{s},{v}\n" for s, v in zip(studies, model)))
    strata = tmp_path / "strata.csv"
    strata.write_text("".join(f"{s},{f}\n" for s, f in zip(studies, findings)))
    return gold, sub, strata, studies, truth, model


def test_strata_in_json_table_and_html(tmp_path):
    gold, sub, strata, *_ = _write_case(tmp_path)
    html = tmp_path / "report.html"
    proc = mura("score", gold, sub, "--strata", strata, "--resamples", "500", "--html", html)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: hidden stratification: model sensitivity on 'degenerative'" in proc.stdout
    result = json.loads(
        mura("score", gold, sub, "--strata", strata, "--resamples", "500", "--format", "json").stdout
    )
    assert set(result["strata"]["groups"]) == {"degenerative", "fracture", "hardware", "normal"}
    assert result["strata"]["unstratified"] == 0
    assert "degenerative" in html.read_text() and "Strata" in html.read_text()


@pytest.mark.parametrize(
    "content, needle",
    [
        ("MURA-v1.1/test/XR_HAND/patient1/study9/,fracture\n", "only studies of the gold file"),
        ("{s},fracture,extra\n", "expected 2 fields"),
        ("{s},\n", "one or more finding names"),
        ("{s},frac/ture\n", "one or more finding names"),
        ("{s},fracture\n{s},hardware\n", "repeated"),
    ],
)
def test_broken_strata_files_are_host_errors(tmp_path, content, needle):
    gold, sub, strata, studies, *_ = _write_case(tmp_path)
    strata.write_text(content.format(s=studies[0]))
    proc = mura("score", gold, sub, "--strata", strata)
    assert proc.returncode == 3 and proc.stderr.startswith("organiser error: strata file")
    assert needle in proc.stderr


def test_studies_in_several_strata_and_unstratified_ones(tmp_path):
    gold, sub, strata, studies, *_ = _write_case(tmp_path)
    strata.write_text("study,findings\n" + "".join(f"{s},fracture; hardware\n" for s in studies[:10]))
    result = json.loads(
        mura("score", gold, sub, "--strata", strata, "--resamples", "100", "--format", "json").stdout
    )
    assert result["strata"]["groups"]["fracture"]["n"] == 10 == result["strata"]["groups"]["hardware"]["n"]
    assert result["strata"]["unstratified"] == len(studies) - 10


# --- the label audit --------------------------------------------------------------------------


def test_the_audit_reproduces_a_hand_made_confusion_table(tmp_path):
    # 100 wrist studies: gold 40 abnormal / 60 normal; the dataset labels catch 32 of the 40
    # (sensitivity 0.8) and call 45 of the 60 normal (specificity 0.75): seed 002's overall numbers.
    rows_gold, rows_labels, rows_strata = [], [], []
    for i in range(100):
        abnormal = i < 40
        label = int(i < 32) if abnormal else int(i >= 85)
        path = f"MURA-v1.1/valid/XR_WRIST/patient{40000 + i}/study1/"
        rows_gold.append(f"{path},{int(abnormal)},{int(abnormal)},{1 - int(abnormal)}")
        rows_labels.append(f"{path},{label}")
        rows_strata.append(
            f"{path},{'degenerative' if 20 <= i < 40 else 'fracture' if abnormal else 'normal'}"
        )
    rows_labels.append("MURA-v1.1/valid/XR_HAND/patient1/study1_positive/,1")  # not in gold: ignored
    (tmp_path / "gold.csv").write_text("\n".join(rows_gold) + "\n")
    (tmp_path / "labels.csv").write_text("\r\n".join(rows_labels) + "\r\n")
    (tmp_path / "strata.csv").write_text("\n".join(rows_strata) + "\n")
    proc = mura(
        "audit-labels",
        tmp_path / "labels.csv",
        tmp_path / "gold.csv",
        "--strata",
        tmp_path / "strata.csv",
        "--resamples",
        "500",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    overall = result["groups"]["Overall"]
    assert (overall["tp"], overall["fn"], overall["tn"], overall["fp"]) == (32, 8, 45, 15)
    assert overall["sensitivity"] == pytest.approx(0.8) and overall["specificity"] == pytest.approx(0.75)
    assert result["groups"]["Wrist"]["n"] == 100 and result["groups"]["Hand"]["n"] == 0
    assert result["labelled_studies"] == 101
    # Degenerative (studies 20-39): labels catch 12 of 20; fractures (0-19): all 20.
    assert result["strata"]["degenerative"]["sensitivity"] == pytest.approx(0.6)
    assert result["strata"]["fracture"]["sensitivity"] == pytest.approx(1.0)
    assert result["strata"]["normal"]["specificity"] == pytest.approx(0.75)
    assert any("'degenerative'" in note for note in result["notes"])
    table = mura("audit-labels", tmp_path / "labels.csv", tmp_path / "gold.csv", "--resamples", "100").stdout
    assert "0.800" in table and "0.750" in table


def test_the_audit_needs_a_label_for_every_gold_study(tmp_path):
    (tmp_path / "gold.csv").write_text("MURA-v1.1/valid/XR_HAND/p1/s1/,1\nMURA-v1.1/valid/XR_HAND/p2/s1/,0\n")
    (tmp_path / "labels.csv").write_text("MURA-v1.1/valid/XR_HAND/p1/s1/,1\n")
    proc = mura("audit-labels", tmp_path / "labels.csv", tmp_path / "gold.csv")
    assert proc.returncode == 3 and "no label for 1 of the 2 gold studies" in proc.stderr


# --- probabilities: AUC and the ROC curve ----------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=2, max_size=200))
@settings(max_examples=300, deadline=None)
def test_auc_equals_sklearn(pairs):
    truth, scores = (np.array(x) for x in zip(*pairs))
    scores = scores / 20.0  # many ties
    ours = roc.auc(truth, scores)
    if truth.min() == truth.max():
        assert np.isnan(ours)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)


def test_bootstrap_auc_is_reproducible_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    scores = truth * 0.3 + rng.random(200)
    a = roc.bootstrap_auc(truth, scores, 2000, seed=1, group="Overall")
    b = roc.bootstrap_auc(truth, scores, 2000, seed=1, group="Overall")
    assert np.array_equal(a, b)
    lo, hi = np.percentile(a, [2.5, 97.5])
    assert lo < roc.auc(truth, scores) < hi


def test_radiologists_under_the_curve_on_constructed_cases():
    # A curve through (0, 0), (0.2, 0.6), (0.5, 0.9), (1, 1).
    fpr, tpr = np.array([0.0, 0.2, 0.5, 1.0]), np.array([0.0, 0.6, 0.9, 1.0])
    assert roc.under_curve(fpr, tpr, (0.2, 0.5))  # below a vertex
    assert not roc.under_curve(fpr, tpr, (0.2, 0.6))  # on it
    assert not roc.under_curve(fpr, tpr, (0.1, 0.5))  # above the line from (0, 0) to (0.2, 0.6)
    assert roc.under_curve(fpr, tpr, (0.35, 0.7))  # the curve is at 0.75 there
    assert not roc.under_curve(fpr, tpr, (0.35, 0.8))
    # A perfect model: a radiologist who misses an abnormal study (A) is under its curve.
    truth = np.array([0, 0, 0, 1, 1, 1])
    report = roc.roc_report(
        truth,
        np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),
        {"A": np.array([0, 0, 1, 1, 1, 0]), "B": np.array([0, 0, 0, 1, 1, 1])},
        resamples=200,
        seed=0,
        confidence=0.95,
    )
    assert report["auc"] == 1.0
    assert report["radiologists"]["A"]["under_curve"] and not report["radiologists"]["B"]["under_curve"]
    assert report["radiologists_under_curve"] == 1


def test_probabilities_through_the_cli(tmp_path):
    gold, sub, _, studies, _truth, model = _write_case(tmp_path)
    probs = tmp_path / "probabilities.csv"
    probs.write_text("".join(f"{s},{0.2 + 0.6 * v:.3f}\n" for s, v in zip(studies, model)))
    html = tmp_path / "report.html"
    proc = mura(
        "score", gold, sub, "--probabilities", probs, "--resamples", "300", "--format", "json", "--html", html
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["roc"]["auc"] == pytest.approx(roc_auc_score(result_truth(result, gold), model))
    assert result["roc"]["radiologists"] == {}  # all three raters form the gold standard
    assert '<polyline class="roc"' in html.read_text()  # the ROC curve, inline SVG


def result_truth(result: dict, gold: Path) -> np.ndarray:
    rows = [line.split(",") for line in gold.read_text().splitlines()]
    return np.array([int(sum(map(int, r[1:])) >= 2) for r in rows])


@pytest.mark.parametrize("value, needle", [("1.5", "'1.5'"), ("nan", "'nan'"), ("high", "'high'")])
def test_bad_probabilities_are_participant_errors(tmp_path, value, needle):
    gold, sub, _, studies, *_ = _write_case(tmp_path)
    probs = tmp_path / "probabilities.csv"
    probs.write_text("".join(f"{s},{value if i == 3 else '0.5'}\n" for i, s in enumerate(studies)))
    proc = mura("score", gold, sub, "--probabilities", probs)
    assert proc.returncode == 2
    assert proc.stderr.startswith("submission error: probabilities file") and needle in proc.stderr
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr
    probs.write_text("".join(f"{s},0.5\n" for s in studies[:-1]))
    proc = mura("score", gold, sub, "--probabilities", probs)
    assert proc.returncode == 2 and "missing 1" in proc.stderr
