"""`mura score` end to end: gold forms, every bad-input class, output formats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]


def mura(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def study(i: int, label: int, study_type: str | None = None) -> str:
    t = study_type or TYPES[i % 7]
    return f"MURA-v1.1/test/XR_{t}/patient{11000 + i:05d}/study1_{'positive' if label else 'negative'}/"


@pytest.fixture
def case(tmp_path):
    """A 28-study gold file with six raters and a valid submission for it."""
    rows, preds = [], []
    for i in range(28):
        label = int(i % 3 == 0 or i % 5 == 0)
        rads = [label if (i + r) % 7 else 1 - label for r in range(6)]
        rows.append(f"{study(i, label)}," + ",".join(map(str, rads)))
        preds.append(f"{study(i, label)},{label if i % 4 else 1 - label}")
    gold = tmp_path / "gold.csv"
    gold.write_text("\n".join(rows) + "\n")
    sub = tmp_path / "output.csv"
    sub.write_text("\n".join(preds) + "\n")
    return gold, sub, preds


def assert_participant_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("submission error: ")
    assert "Traceback" not in proc.stderr
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr  # no gold label leaks
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_host_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith(("organiser error: ", "Error: "))
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def write(path: Path, lines: list[str] | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines))
    return path


def test_scores_a_valid_submission(case):
    gold, sub, _ = case
    proc = mura("score", gold, sub, "--format", "json", "--resamples", "300")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    keys = list(result)
    official = [f"{t.capitalize()}_{s}" for t in TYPES for s in ("Mean", "Lower", "Upper")]
    assert keys[:24] == official + ["Overall_Mean", "Overall_Lower", "Overall_Upper"]
    assert result["n_studies"] == 28
    assert len(result["gold"]["gold_raters"]) == 3 and len(result["radiologists"]) == 3
    assert set(result["gold"]["gold_raters"]).isdisjoint(result["radiologists"])
    assert sum(result["model"][t.capitalize()]["n"] for t in TYPES) == 28
    for group in result["model"].values():
        # None first: comparing None with a number would raise before `or` is reached.
        assert group["kappa"] is None or group["kappa_lower"] <= group["kappa"] <= group["kappa_upper"]


def test_table_is_the_default_and_json_file_is_written(case, tmp_path):
    gold, sub, _ = case
    out = tmp_path / "result.json"
    page = tmp_path / "report.html"
    proc = mura("score", gold, sub, "--resamples", "200", "--json", out, "--html", page)
    assert proc.returncode == 0, proc.stderr
    assert "Overall" in proc.stdout and "Kappa" in proc.stdout and "Best radiologist" in proc.stdout
    assert json.loads(out.read_text())["Overall_Mean"] is not None
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_same_inputs_and_seed_give_the_same_bytes(case):
    gold, sub, _ = case
    first = mura("score", gold, sub, "--format", "json", "--seed", "7")
    second = mura("score", gold, sub, "--format", "json", "--seed", "7")
    other = mura("score", gold, sub, "--format", "json", "--seed", "8")
    assert first.returncode == 0 and first.stdout == second.stdout
    assert other.stdout != first.stdout


def test_gold_raters_given_and_drawn(case):
    gold, sub, _ = case
    given = json.loads(
        mura(
            "score", gold, sub, "--format", "json", "--resamples", "50", "--gold-raters", "Rad1,rad4,Rad5"
        ).stdout
    )
    assert given["gold"]["gold_raters"] == ["Rad1", "Rad4", "Rad5"]
    assert given["gold"]["choice"] == "given"
    assert list(given["radiologists"]) == ["Rad2", "Rad3", "Rad6"]
    drawn = [
        json.loads(
            mura("score", gold, sub, "--format", "json", "--resamples", "50", "--seed", str(s)).stdout
        )["gold"]
        for s in range(6)
    ]
    assert all(d["choice"] == "random" for d in drawn)
    assert len({tuple(d["gold_raters"]) for d in drawn}) > 1  # the seed chooses


def test_label_and_three_rater_forms_and_header(tmp_path, case):
    _, sub, preds = case
    studies = [line.split(",")[0] for line in preds]
    labels = [int(s.endswith("positive/")) for s in studies]
    label_gold = write(tmp_path / "valid.csv", [f"{s},{y}" for s, y in zip(studies, labels)])
    result = json.loads(mura("score", label_gold, sub, "--format", "json", "--resamples", "50").stdout)
    assert result["gold"]["choice"] == "label" and result["radiologists"] == {}
    three = write(
        tmp_path / "test.csv",
        ["study,Rad1,Rad2,Rad3"] + [f"{s},{y},{y},{1 - y}" for s, y in zip(studies, labels)],
    )
    result3 = json.loads(mura("score", three, sub, "--format", "json", "--resamples", "50").stdout)
    assert result3["gold"]["choice"] == "all" and result3["gold"]["gold_raters"] == ["Rad1", "Rad2", "Rad3"]
    assert result3["Overall_Mean"] == result["Overall_Mean"]  # majority of (y, y, 1-y) is y


def test_spellings_of_a_study_path_are_the_same_study(case, tmp_path):
    gold, _, preds = case
    respelled = []
    for i, line in enumerate(preds):
        path, value = line.split(",")
        path = [path.rstrip("/"), "./" + path, f"  {path}  "][i % 3]
        respelled.append(f"{path},{value}")
    sub = write(tmp_path / "respelled.csv", respelled)
    a = mura("score", gold, sub, "--format", "json", "--resamples", "50")
    b = mura("score", gold, case[1], "--format", "json", "--resamples", "50")
    assert a.returncode == 0, a.stderr
    assert json.loads(a.stdout)["model"] == json.loads(b.stdout)["model"]


def test_studies_that_collide_across_types_are_kept_apart(tmp_path):
    # patient11186/study1_positive exists under several study types in the real data.
    same = "patient11186/study1_positive/"
    gold = write(
        tmp_path / "gold.csv",
        [f"MURA-v1.1/valid/XR_{t}/{same},{int(t != 'HAND')}" for t in ["WRIST", "HAND", "ELBOW"]]
        + [f"MURA-v1.1/valid/XR_{t}/patient2/study1_negative/,0" for t in ["WRIST", "HAND", "ELBOW"]],
    )
    sub = write(
        tmp_path / "out.csv",
        [f"MURA-v1.1/valid/XR_{t}/{same},1" for t in ["WRIST", "HAND", "ELBOW"]]
        + [f"MURA-v1.1/valid/XR_{t}/patient2/study1_negative/,0" for t in ["WRIST", "HAND", "ELBOW"]],
    )
    result = json.loads(mura("score", gold, sub, "--format", "json", "--resamples", "50").stdout)
    assert result["n_studies"] == 6
    assert result["model"]["Hand"]["fp"] == 1 and result["model"]["Wrist"]["tp"] == 1
    assert result["model"]["Overall"]["n"] == 6


def test_undefined_kappa_is_null_with_a_note(tmp_path):
    rows = [f"{study(i, 1, 'FINGER')},1" for i in range(5)] + [
        f"{study(i, i % 2, 'WRIST')},{i % 2}" for i in range(10, 16)
    ]
    gold = write(tmp_path / "gold.csv", rows)
    sub = write(tmp_path / "out.csv", rows)
    proc = mura("score", gold, sub, "--format", "json", "--resamples", "100")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["Finger_Mean"] is None and result["Finger_Lower"] is None
    assert result["Elbow_Mean"] is None and result["model"]["Elbow"]["n"] == 0
    assert result["Wrist_Mean"] == 1.0
    assert any("Finger: kappa of model is undefined" in note for note in result["notes"])
    table = mura("score", gold, sub, "--resamples", "100").stdout
    assert "undefined" in table


# --- the submission's errors: exit 2, one line, no labels ------------------------------------


def _variants(preds: list[str]) -> dict[str, tuple[list[str] | bytes, tuple[str, ...]]]:
    text = "".join(p + "\n" for p in preds)
    first_path = preds[0].split(",")[0]
    return {
        "missing": (preds[:-3], ("expected one row for each of the 28 studies", "found 25", "missing 3")),
        "extra": (preds + ["MURA-v1.1/test/XR_HAND/patient99999/study1/,1"], ("patient99999", "remove them")),
        "duplicate": (preds + [preds[5]], ("more than one row", "lines 6, 29")),
        "probabilities": ([p.rsplit(",", 1)[0] + ",0.73" for p in preds], ("'0.73'", "threshold")),
        "nan": ([p.rsplit(",", 1)[0] + ",nan" for p in preds], ("'nan'",)),
        "text": ([p.rsplit(",", 1)[0] + ",abnormal" for p in preds], ("'abnormal'", "write 0 for normal")),
        "float one": ([p.rsplit(",", 1)[0] + ",1.0" for p in preds], ("'1.0'",)),
        "three columns": ([p + ",0.9" for p in preds], ("expected 2 comma-separated fields", "found 3")),
        "one column": ([p.split(",")[0] for p in preds], ("expected 2 comma-separated fields", "found 1")),
        "no path": ([",1"] + preds[1:], ("expected a study path",)),
        "header": (["study,label"] + preds, ("looks like a header", "delete the first line")),
        "empty": (b"", ("is empty", "0 bytes")),
        "blank lines only": (b"\n \n\n", ("is empty", "only blank lines")),
        "latin-1": (text.replace(first_path, first_path + "\xe9").encode("latin-1"), ("not UTF-8", "0xe9")),
        "nothing matches": ([p.replace("MURA-v1.1/", "data/") for p in preds], ("none of your study paths",)),
    }


@pytest.mark.parametrize("name", list(_variants(["x,1"] * 8)))
def test_every_bad_submission_is_a_participant_error(case, tmp_path, name):
    gold, _, preds = case
    content, needles = _variants(preds)[name]
    sub = write(tmp_path / "bad.csv", content)
    assert_participant_error(mura("score", gold, sub), *needles)


def test_missing_predictions_file(case, tmp_path):
    gold, _, _ = case
    assert_participant_error(mura("score", gold, tmp_path / "nope.csv"), "does not exist")
    assert_participant_error(mura("score", gold, tmp_path), "is a folder")


@pytest.mark.parametrize(
    "form, needle",
    [
        (lambda text: b"\xef\xbb\xbf" + text.encode(), "a UTF-8 byte-order mark;"),
        (lambda text: text.replace("\n", "\r\n").encode(), "Windows line endings (CRLF);"),
        (
            lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),
            "a UTF-8 byte-order mark and Windows line endings (CRLF);",
        ),
    ],
    ids=["bom", "crlf", "both"],
)
def test_a_bom_and_crlf_are_read_as_the_official_script_read_them_with_a_note(case, tmp_path, form, needle):
    """pandas, which the official evaluate.py read submissions with, accepts both: a submission
    that scored there scores here, with one line on stderr saying what the contract asks for."""
    gold, sub, _ = case
    windows = write(tmp_path / "windows.csv", form(sub.read_text()))
    proc = mura("score", gold, windows, "--format", "json", "--resamples", "50")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"note: predictions file has {needle} " + NOTE_END]
    plain = mura("score", gold, sub, "--format", "json", "--resamples", "50")
    assert json.loads(proc.stdout)["model"] == json.loads(plain.stdout)["model"]


NOTE_END = (
    "read all the same, as the official script did (the contract asks for UTF-8 without a BOM and "
    "LF line endings)"
)


def test_quoted_fields_are_one_field_in_gold_predictions_probabilities_and_strata(case, tmp_path):
    """RFC 4180, as pandas reads it: `"path",1` is `path,1`, and a quoted path may hold a comma."""
    gold, _, preds = case
    comma = "MURA-v1.1/test/XR_HAND/patient1,2/study1_positive/"
    quoted_gold = write(tmp_path / "gold.csv", [f'"{comma}",1,1,1,0,0,0', *gold.read_text().splitlines()])
    rows = [p.rsplit(",", 1) for p in preds]
    all_quoted = write(tmp_path / "quoted.csv", [f'"{comma}",1'] + [f'"{p}",{v}' for p, v in rows])
    as_before = write(tmp_path / "plain.csv", [f'"{comma}",1', *preds])
    probs = write(tmp_path / "probs.csv", [f'"{comma}",0.9'] + [f'"{p}",0.{v}' for p, v in rows])
    strata = write(tmp_path / "strata.csv", [f'"{comma}",fracture'])
    args = ("--format", "json", "--resamples", "50")
    a = mura("score", quoted_gold, all_quoted, "--probabilities", probs, "--strata", strata, *args)
    b = mura("score", quoted_gold, as_before, *args)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    result = json.loads(a.stdout)
    assert result["n_studies"] == 29 and result["model"]["Hand"]["n"] == 5
    assert result["model"] == json.loads(b.stdout)["model"]
    assert result["strata"]["groups"]["fracture"]["n"] == 1 and result["roc"]["auc"] is not None


def test_a_participant_file_over_64_mib_is_refused_with_its_size(case, tmp_path):
    gold, _, _ = case
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:
        handle.truncate(64 * 2**20 + 1)  # sparse: nothing is written
    assert_participant_error(
        mura("score", gold, big), "is 64.0 MiB (67,108,865 bytes); expected a CSV file of at most 64 MiB"
    )


def test_messages_stay_short_whatever_the_submission(case, tmp_path):
    """At most 500 characters and five examples: a 3 MB line is not echoed back, and 100,000
    rows over 200 studies do not list every line of every duplicate."""
    gold, _, _ = case
    three_mb = write(tmp_path / "line.csv", ["MURA-v1.1/test/XR_HAND/" + "x" * 3_000_000 + "/,1"])
    repeated = write(tmp_path / "repeated.csv", [f"{study(i % 200, 1)},1" for i in range(100_000)])
    value = write(tmp_path / "value.csv", [f"{study(0, 1)},{'9' * 100_000}"])
    cases = {
        three_mb: (),
        repeated: (
            "found 200 studies with more than one row: MURA-v1.1/test/XR_ELBOW/patient11000/study1/ "
            "(lines 1, 201, 401 and 497 more), ",
            "(lines 3, 203, 403 and 497 more) and 197 more; keep one row for each study",
        ),
        value: ("(lines 1: '9999999999", "9…9", "9999999999'); threshold probabilities first"),
    }
    for sub, needles in cases.items():
        proc = mura("score", gold, sub)
        assert_participant_error(proc, *needles)
        assert len(proc.stderr.strip()) <= 500, proc.stderr[:1000]


def test_blank_lines_between_rows_are_ignored(case, tmp_path):
    gold, _, preds = case
    sub = write(tmp_path / "gaps.csv", [preds[0], "", *preds[1:], "   "])
    assert mura("score", gold, sub, "--resamples", "20").returncode == 0


# --- the organiser's errors: exit 3 -----------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, needles",
    [
        ("missing", None, ("gold file", "does not exist")),
        ("empty", b"", ("gold file", "is empty")),
        ("values", b"MURA-v1.1/test/XR_HAND/p1/s1/,2\n", ("expected 0 or 1", "line")),
        (
            "widths",
            b"MURA-v1.1/test/XR_HAND/p1/s1/,1\nMURA-v1.1/test/XR_HAND/p2/s1/,1,0,1\n",
            ("same number of fields",),
        ),
        ("duplicate", b"MURA-v1.1/test/XR_HAND/p1/s1/,1\nMURA-v1.1/test/XR_HAND/p1/s1,0\n", ("repeated",)),
        ("no type", b"MURA-v1.1/test/p1/s1/,1\n", ("XR_{TYPE}",)),
        ("even raters", b"MURA-v1.1/test/XR_HAND/p1/s1/,1,0\n", ("odd number",)),
        ("not utf-8", b"MURA-v1.1/test/XR_HAND/p\xff/s1/,1\n", ("not UTF-8",)),
    ],
)
def test_broken_gold_is_a_host_error(case, tmp_path, name, content, needles):
    _, sub, _ = case
    gold = tmp_path / "broken_gold.csv"
    if content is not None:
        gold.write_bytes(content)
    proc = mura("score", gold, sub)
    assert_host_error(proc, *needles)
    assert proc.stderr.startswith("organiser error: ")


def test_broken_gold_wins_over_a_broken_submission(tmp_path):
    gold = write(tmp_path / "gold.csv", b"")
    sub = write(tmp_path / "sub.csv", b"")
    assert_host_error(mura("score", gold, sub), "gold file")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--gold-raters", "Rad1,Rad9,Rad2"), "Rad9"),
        (("--gold-raters", "Rad1,Rad2"), "odd number"),
        (("--gold-raters", "Rad1,Rad1,Rad2"), "twice"),
        (("--resamples", "0"), "--resamples"),
        (("--confidence", "1.5"), "--confidence"),
        (("--no-such-option",), "No such option"),
    ],
)
def test_bad_options_are_host_errors(case, args, needle):
    gold, sub, _ = case
    assert_host_error(mura("score", gold, sub, *args), needle)


def test_gold_with_crlf_bom_and_header_is_accepted(case, tmp_path):
    gold, sub, _ = case
    text = "study,Rad1,Rad2,Rad3,Rad4,Rad5,Rad6\n" + gold.read_text()
    crlf = write(tmp_path / "gold_crlf.csv", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    a = json.loads(mura("score", crlf, sub, "--format", "json", "--resamples", "50").stdout)
    b = json.loads(mura("score", gold, sub, "--format", "json", "--resamples", "50").stdout)
    assert a["model"] == b["model"]


# --- label-blind matching: no message or score depends on a guessed suffix ------------------


def _guess(preds: list[str], how: str) -> list[str]:
    """The valid submission with every study folder's suffix replaced by a guess."""
    out = []
    for i, line in enumerate(preds):
        path, value = line.split(",")
        bare = path.replace("_positive/", "/").replace("_negative/", "/")
        suffix = {"positive": "_positive", "negative": "_negative", "none": ""}.get(
            how, ["_positive", ""][i % 2]
        )
        out.append(f"{bare[:-1]}{suffix}/,{value}")
    return out


def _without_inputs(stdout: str) -> dict:
    result = json.loads(stdout)
    result.pop("inputs")  # the submission file's name and hash
    return result


GUESSES = ("positive", "negative", "none", "mixed")


def test_a_guessed_suffix_matches_the_study_whatever_the_guess(case, tmp_path):
    # The reviewer's probe: every study written with `_positive`. It used to fail with
    # "found N rows for other studies", N and the lines being exactly the normal studies.
    gold, sub, preds = case
    truth = json.loads(mura("score", gold, sub, "--format", "json", "--resamples", "100").stdout)
    truth.pop("inputs")
    for how in GUESSES:
        probe = write(tmp_path / f"probe-{how}.csv", _guess(preds, how))
        proc = mura("score", gold, probe, "--format", "json", "--resamples", "100")
        assert proc.returncode == 0, (how, proc.stderr)
        assert _without_inputs(proc.stdout) == truth, how


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: rows[:-2],  # missing studies
        lambda rows: rows + [rows[3]],  # a duplicate
        lambda rows: rows + ["MURA-v1.1/test/XR_HAND/patient99999/study1_positive/,1"],  # an extra
        lambda rows: [r.rsplit(",", 1)[0] + ",0.7" for r in rows],  # not 0/1
    ],
    ids=["missing", "duplicate", "extra", "values"],
)
def test_no_message_depends_on_the_guessed_suffix(case, tmp_path, change):
    gold, _, preds = case
    messages = set()
    for how in ("positive", "negative"):  # the same text, guessed two ways: same message
        probe = write(tmp_path / "probe.csv", change(_guess(preds, how)))
        proc = mura("score", gold, probe)
        assert_participant_error(proc)
        messages.add(proc.stderr)
    assert len(messages) == 1, messages


def test_two_rows_for_one_study_with_different_suffixes_are_a_duplicate(case, tmp_path):
    gold, _, preds = case
    path = preds[0].split(",")[0].replace("_positive/", "/").replace("_negative/", "/")
    sub = write(tmp_path / "twice.csv", [f"{path[:-1]}_positive/,1", f"{path[:-1]}_negative/,0", *preds[1:]])
    assert_participant_error(mura("score", gold, sub), "more than one row", "lines 1, 2")


def test_studies_that_collide_across_types_are_kept_apart_without_suffixes(tmp_path):
    same = "patient11186/study1"
    gold = write(
        tmp_path / "gold.csv",
        [f"MURA-v1.1/valid/XR_{t}/{same}_positive/,{int(t != 'HAND')}" for t in ["WRIST", "HAND", "ELBOW"]],
    )
    sub = write(
        tmp_path / "out.csv", [f"MURA-v1.1/valid/XR_{t}/{same}/,1" for t in ["WRIST", "HAND", "ELBOW"]]
    )
    result = json.loads(mura("score", gold, sub, "--format", "json", "--resamples", "50").stdout)
    assert result["n_studies"] == 3
    assert result["model"]["Hand"]["fp"] == 1 and result["model"]["Wrist"]["tp"] == 1
    assert result["model"]["Elbow"]["tp"] == 1


def test_gold_studies_that_differ_only_in_the_suffix_are_a_host_error(case, tmp_path):
    _, sub, _ = case
    gold = write(
        tmp_path / "gold.csv",
        [
            "MURA-v1.1/test/XR_HAND/patient1/study1_positive/,1",
            "MURA-v1.1/test/XR_HAND/patient1/study1_negative/,0",
        ],
    )
    proc = mura("score", gold, sub)
    assert_host_error(proc, "expected each study once", "(lines 1 and 2)")
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr


def test_strata_and_audit_labels_match_on_the_label_blind_key(tmp_path):
    # MURA-style labels files carry the suffix; a radiologists' gold file or a strata file need not.
    rows = [(f"MURA-v1.1/valid/XR_WRIST/patient{40000 + i}/study1", int(i < 10)) for i in range(30)]
    suffixed = [f"{p}_{'positive' if y else 'negative'}/" for p, y in rows]
    gold = write(tmp_path / "gold.csv", [f"{p}/,{y},{y},{y}" for p, y in rows])
    labels = write(tmp_path / "labels.csv", [f"{s},{y}" for s, (_, y) in zip(suffixed, rows)])
    strata = write(
        tmp_path / "strata.csv", [f"{s},{'fracture' if y else 'normal'}" for s, (_, y) in zip(suffixed, rows)]
    )
    proc = mura("audit-labels", labels, gold, "--strata", strata, "--resamples", "50", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["groups"]["Overall"]["sensitivity"] == 1.0 and result["strata"]["fracture"]["n"] == 10
    sub = write(tmp_path / "out.csv", [f"{p}/,{y}" for p, y in rows])
    scored = mura("score", labels, sub, "--strata", strata, "--resamples", "50", "--format", "json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["strata"]["groups"]["normal"]["n"] == 20


# --- the organiser's errors carry no label and no vote ----------------------------------------

LABELLED = "MURA-v1.1/test/XR_HAND/patient1/study1_positive/"


@pytest.mark.parametrize(
    "content, needles",
    [
        (
            f"{LABELLED},1,1,1\nMURA-v1.1/test/XR_HAND/patient2/study1_negative/,0,0,0\n{LABELLED},1,1,1\n",
            ("repeated", "(lines 1 and 3)"),
        ),
        (f"{LABELLED},1,1,1,2,0,1\n", ("line 1, column 5, rater Rad4",)),
        ("MURA-v1.1/test/patient1/study1_negative/,0\n", ("XR_{TYPE}",)),
    ],
    ids=["duplicate", "rater value", "no type"],
)
def test_gold_file_errors_name_lines_not_labels_or_votes(case, tmp_path, content, needles):
    _, sub, _ = case
    proc = mura("score", write(tmp_path / "gold.csv", content.encode()), sub)
    assert_host_error(proc, *needles)
    assert "_positive" not in proc.stderr and "_negative" not in proc.stderr
    assert "1,1,1" not in proc.stderr and "'2'" not in proc.stderr


def test_strata_and_audit_errors_hide_labels(tmp_path, case):
    gold, sub, preds = case
    strata = write(tmp_path / "strata.csv", ["MURA-v1.1/test/XR_HAND/patient9/study1_positive/,fracture"])
    proc = mura("score", gold, sub, "--strata", strata)
    assert_host_error(proc, "only studies of the gold file")
    labels = write(tmp_path / "labels.csv", preds[:3])
    audit = mura("audit-labels", labels, gold)
    assert_host_error(audit, "no label for 25 of the 28 gold studies")
    for p in (proc, audit):
        assert "_positive" not in p.stderr and "_negative" not in p.stderr


# --- output files: checked before scoring, written whole or not at all ------------------------


@pytest.mark.parametrize("command", ["score", "audit-labels"])
@pytest.mark.parametrize("option", ["--json", "--html"])
def test_an_output_in_a_missing_folder_is_a_host_error_before_scoring(case, tmp_path, command, option):
    gold, sub, preds = case
    # audit-labels takes LABELS GOLD; score takes GOLD PREDICTIONS.
    inputs = (write(tmp_path / "labels.csv", preds), gold) if command == "audit-labels" else (gold, sub)
    other = "--html" if option == "--json" else "--json"
    good = tmp_path / "other.out"
    proc = mura(command, *inputs, other, good, option, tmp_path / "nope" / "x.out")
    assert_host_error(proc, option, "does not exist", "create it first")
    assert not good.exists()  # the other output was not written either


def test_outputs_naming_the_same_file_or_a_device_are_host_errors(case, tmp_path):
    gold, sub, _ = case
    same = tmp_path / "r.out"
    assert_host_error(mura("score", gold, sub, "--json", same, "--html", same), "both name")
    assert_host_error(mura("score", gold, sub, "--json", "/dev/null"), "not a regular file")
    assert Path("/dev/null").is_char_device()


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    from scorer.cli import write_outputs
    from scorer.errors import HostError

    first, second = tmp_path / "a.json", tmp_path / "gone" / "b.html"
    with pytest.raises(HostError, match="cannot be written"):
        write_outputs({first: lambda: "{}\n", second: lambda: "<html>"})
    assert list(tmp_path.iterdir()) == []


def test_too_many_resamples_is_a_host_error(case):
    gold, sub, _ = case
    assert_host_error(mura("score", gold, sub, "--resamples", "100000000"), "--resamples", "1,000,000")


def test_the_scoring_defaults_are_written_once(tmp_path):
    """seed, resamples and confidence: changed in Settings alone, every command's options and
    Codabench's scoring.json (absent, or without those fields) follow."""
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "scorer", kit / "scorer", ignore=shutil.ignore_patterns("__pycache__"))
    settings = kit / "scorer" / "settings.py"
    text = settings.read_text()
    for old, new in [("seed: int = 0", "seed: int = 7"), ("resamples: int = 10_000", "resamples: int = 123")]:
        assert old in text
        text = text.replace(old, new)
    settings.write_text(text.replace("confidence: float = 0.95", "confidence: float = 0.9"))
    (tmp_path / "none" / "ref").mkdir(parents=True)
    (tmp_path / "some" / "ref").mkdir(parents=True)
    (tmp_path / "some" / "ref" / "scoring.json").write_text('{"gold_raters": "Rad1,Rad2,Rad3"}')
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from scorer.cli import score, audit_labels\n"
        "from scorer.harness.cli import evaluate\n"
        "from scorer.codabench.cli import bundle\n"
        "from scorer.codabench import _settings\n"
        "knobs = ('seed', 'resamples', 'confidence')\n"
        "shown = {c.name: {p.name: p.default for p in c.params if p.name in knobs}\n"
        "         for c in (score, audit_labels, evaluate, bundle)}\n"
        "for name in ('none', 'some'):\n"
        "    s = _settings(Path(sys.argv[1]) / name / 'ref')\n"
        "    shown[name] = {'seed': s.seed, 'resamples': s.resamples, 'confidence': s.confidence}\n"
        "print(json.dumps(shown))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(kit)},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    every = {"seed": 7, "resamples": 123, "confidence": 0.9}
    without_confidence = {"seed": 7, "resamples": 123}
    assert json.loads(proc.stdout) == {
        "score": every,
        "audit-labels": every,
        "evaluate": without_confidence,
        "bundle": without_confidence,
        "none": every,
        "some": every,
    }
