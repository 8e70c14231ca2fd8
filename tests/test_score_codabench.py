"""The Codabench / CodaLab Competitions scoring program."""

import json
import os
import subprocess
import sys
from pathlib import Path

import example_data
import pytest

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


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_detailed_results_are_the_participants_view(tmp_path):
    proc = run(make_input(tmp_path), tmp_path / "output")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "output" / "detailed_results.html").read_text()
    scores = json.loads((tmp_path / "output" / "scores.json").read_text())
    assert f"{scores['Overall_Mean']:.3f}" in page and "Bootstrap CI" in page
    assert "model − Rad4" in page  # the radiologists' kappas and the paired differences
    # No confusion counts, no gold class counts, nothing else that gives away the prevalence.
    for needle in (
        "<th>TP</th>",
        "<th>FN</th>",
        "abnormal",
        "normal)",
        "Sensitivity",
        "Specificity",
        "Accuracy",
        "F1",
        "Asymptotic",
        "seed",
    ):
        assert needle not in page, needle
    groups = [t.capitalize() for t in example_data.STUDY_TYPES] + ["Overall"]
    assert set(scores) <= {f"{g}_{s}" for g in groups for s in ("Mean", "Lower", "Upper")}


def test_outputs_are_readable_by_the_platform_under_its_umask(tmp_path):
    input_dir = make_input(tmp_path)
    previous = os.umask(0o022)
    try:
        proc = run(input_dir, tmp_path / "output")
    finally:
        os.umask(previous)
    assert proc.returncode == 0, proc.stderr
    for name in ("scores.json", "scores.txt", "detailed_results.html"):
        assert (tmp_path / "output" / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize(
    "gold, needles",
    [
        ("MURA-v1.1/test/XR_HAND/patient1/study1_negative/,0,0,0\n" * 2, ("repeated", "(lines 1 and 2)")),
        ("MURA-v1.1/test/XR_HAND/patient1/study1_positive/,1,1,1,2,0,1\n", ("line 1, column 5",)),
    ],
    ids=["duplicate", "rater value"],
)
def test_a_broken_gold_file_gives_a_generic_label_free_last_line(tmp_path, gold, needles):
    input_dir = make_input(tmp_path)
    (input_dir / "ref" / "test.csv").write_text(gold)
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 3
    line = last_line(proc)
    assert line.startswith("organiser error: the organisers' reference data or scoring set-up is invalid")
    assert all(needle in line for needle in needles), line
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr
    assert "1,1,1" not in proc.stderr and "0,0,0" not in proc.stderr


@pytest.mark.parametrize("raters", [["Rad1", "Rad4", "Rad5"], "Rad1,Rad4,Rad5", " Rad1, Rad4 ,Rad5 "])
def test_gold_raters_may_be_a_list_or_a_comma_separated_string(tmp_path, raters):
    input_dir = make_input(tmp_path)
    (input_dir / "ref" / "scoring.json").write_text(json.dumps({"gold_raters": raters, "resamples": 200}))
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "output" / "detailed_results.html").read_text()
    assert "majority of Rad1, Rad4, Rad5" in page


@pytest.mark.parametrize(
    "config, needle",
    [
        ({"gold_raters": "Rad1,Rad9,Rad2"}, 'ref/scoring.json field "gold_raters" names Rad9'),
        ({"gold_raters": ["Rad1", 4, "Rad5"]}, 'ref/scoring.json field "gold_raters": expected a list'),
        ({"resamples": 100_000_000}, 'ref/scoring.json field "resamples" must be from 1 to 1,000,000'),
        ({"resamples": "many"}, 'ref/scoring.json field "resamples": expected an integer'),
        ({"seed": True}, 'ref/scoring.json field "seed": expected an integer'),
        ({"gold-raters": "Rad1"}, "unknown fields gold-raters"),
        (["Rad1"], "expected an object"),
    ],
)
def test_a_bad_scoring_json_names_its_field(tmp_path, config, needle):
    input_dir = make_input(tmp_path)
    (input_dir / "ref" / "scoring.json").write_text(json.dumps(config))
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 3
    line = last_line(proc)
    assert needle in line and "--" not in line.split(": ", 1)[1], line


def test_an_output_that_is_a_file_is_the_organisers_error(tmp_path):
    (tmp_path / "output").write_text("not a folder")
    proc = run(make_input(tmp_path), tmp_path / "output")
    assert proc.returncode == 3
    assert "OUTPUT" in last_line(proc) and "is a file" in last_line(proc)


def test_a_prediction_file_that_links_outside_res_is_refused(tmp_path):
    # A result zip with output.csv -> ../ref/test.csv must not be scored (or read) as predictions.
    input_dir = make_input(tmp_path)
    (input_dir / "res" / "output.csv").unlink()
    (input_dir / "res" / "output.csv").symlink_to(input_dir / "ref" / "test.csv")
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 2
    assert last_line(proc).startswith("submission error:") and "inside res/" in last_line(proc)
    assert not (tmp_path / "output" / "scores.json").exists()


def test_the_metadata_states_what_the_codabench_path_imports(tmp_path):
    input_dir = make_input(tmp_path)
    probe = (
        "import sys\nfrom scorer.codabench import main\ncode = main(sys.argv[1:])\n"
        "top = {m.split('.')[0] for m in sys.modules if not m.startswith('_')}\n"
        "third = sorted(top - set(sys.stdlib_module_names) - {'scorer', 'cython_runtime'})\n"
        "print('THIRD', ','.join(third), code)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", probe, str(input_dir), str(tmp_path / "output")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    # (cython_runtime is numpy's; names with a leading _ are the interpreter's and site's.)
    assert proc.stdout.strip() == "THIRD numpy 0", proc.stdout + proc.stderr
    meta = (ROOT / "scorer" / "codabench" / "metadata.yaml").read_text()
    assert "Python >= 3.10" in meta and "numpy" in meta and "numpy only" not in meta


def test_predictions_zipped_inside_a_folder_get_a_hint(tmp_path):
    input_dir = make_input(tmp_path)
    (input_dir / "res" / "sub").mkdir()
    (input_dir / "res" / "output.csv").rename(input_dir / "res" / "sub" / "output.csv")
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 2
    assert "sub/output.csv in a folder: zip the file itself" in last_line(proc)


@pytest.mark.parametrize("prefix, crlf", [(b"\xef\xbb\xbf", False), (b"", True), (b"\xef\xbb\xbf", True)])
def test_predictions_with_a_bom_or_crlf_are_scored_with_a_note(tmp_path, prefix, crlf):
    """As the official script (pandas) read them: the same scores, and one note on stderr."""
    input_dir = make_input(tmp_path / "plain")
    assert run(input_dir, tmp_path / "plain" / "output").returncode == 0
    output = input_dir / "res" / "output.csv"
    text = output.read_text()
    output.write_bytes(prefix + (text.replace("\n", "\r\n") if crlf else text).encode())
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 0, proc.stderr
    [note] = proc.stderr.splitlines()
    assert note.startswith("note: predictions file has ") and "read all the same" in note
    assert ("byte-order mark" in note) == bool(prefix) and ("CRLF" in note) == crlf
    assert (tmp_path / "output" / "scores.json").read_text() == (
        tmp_path / "plain" / "output" / "scores.json"
    ).read_text()


def test_predictions_over_64_mib_are_refused_before_they_are_read(tmp_path):
    input_dir = make_input(tmp_path)
    with (input_dir / "res" / "output.csv").open("r+b") as handle:
        handle.truncate(64 * 2**20 + 1)  # sparse
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 2
    line = last_line(proc)
    assert line.startswith("submission error: predictions file ")
    assert "is 64.0 MiB (67,108,865 bytes); expected a CSV file of at most 64 MiB" in line


def test_the_organisers_error_line_stays_within_500_characters(tmp_path):
    input_dir = make_input(tmp_path)
    lines = (input_dir / "ref" / "test.csv").read_text().splitlines()
    long = "MURA-v1.1/test/XR_HAND/" + "p" * 600 + "/study1_positive/"
    twice = [f"{long},1,1,1,0,0,0", f"{long},0,1,1,0,0,0"]
    (input_dir / "ref" / "test.csv").write_text("\n".join([*lines, *twice]))
    proc = run(input_dir, tmp_path / "output")
    assert proc.returncode == 3
    line = last_line(proc)
    assert len(line) <= 500 and "…" in line and line.endswith("keep one row per study")
    assert line.startswith("organiser error: the organisers' reference data or scoring set-up is invalid")
