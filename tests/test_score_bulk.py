"""Reading a million studies in bulk gives what the row-by-row rules give.

- scorer.paths: the column forms (normalize_studies, study_keys, study_types)
  against the one-path rules, on generated paths, with the bulk branch taken where it should be;
- scorer.formats: the plain-file splitter against the csv module;
- the readers and align on a file that takes the plain path against the same rows quoted
  (which the csv module reads): the same tables, values and messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer import formats, paths
from scorer.errors import HostError, ParticipantError
from scorer.formats import BLANK, PROBABILITIES, read_gold, read_predictions, read_strata, read_table
from scorer.paths import (
    normalize_studies,
    study_key,
    study_keys,
    study_type,
    study_types,
)
from scorer.validate import align

# Pieces of paths where the rules have corners: label suffixes in any case (and the long s that
# IGNORECASE matches to s), XR_ folders that are and are not a type, dots, blanks, a line break.
PIECES = [
    "MURA-v1.1",
    "valid",
    "XR_WRIST",
    "XR_HAND",
    "XR_SHOULDER",
    "XR_FOO",
    "XR_WRISTS",
    "XR_",
    "xr_hand",
    "aXR_HAND",
    "XR_HANDXR_WRIST",
    "patient00001",
    "study1",
    "study1_positive",
    "study2_Negative",
    "study3_POSITIVE",
    "study4_pos\u017fitive",
    "_positive",
    "_negative",
    "a_positive_negative",
    "",
    ".",
    "..",
    " ",
    "\u00a0x",
    "x\ny",
]
piece = st.sampled_from(PIECES) | st.text(alphabet="ab_/.X R\t\u2028", max_size=4)
path_text = st.builds(
    lambda prefix, parts, slashes, blank: blank + prefix + "/".join(parts) + "/" * slashes + blank,
    st.sampled_from(["", "./", "././", "/", ".//", "../"]),
    st.lists(piece, max_size=6),
    st.integers(0, 3),
    st.sampled_from(["", " ", "\t"]),
)


@given(st.lists(path_text, max_size=8))
@settings(max_examples=500, deadline=None)
def test_the_column_forms_of_the_path_rules_agree_with_the_one_path_rules(texts):
    assert normalize_studies(texts) == [paths.normalize_study(t) for t in texts]
    assert study_keys(texts) == [study_key(t) for t in texts]
    assert study_keys(normalize_studies(texts)) == [study_key(paths.normalize_study(t)) for t in texts]
    assert study_types(texts) == [study_type(t) for t in texts]
    studies = normalize_studies(texts)
    assert study_types(studies) == [study_type(s) for s in studies]


# MURA-shaped paths, each with one XR_ folder: the bulk branches must read them without the
# one-path rules (which are made to fail below), typed or not.
usual_path = st.builds(
    "{}/{}/{}/patient{:05d}/study{}{}{}".format,
    st.sampled_from(["MURA-v1.1", "./MURA-v1.1", "data/MURA-v1.1"]),
    st.sampled_from(["valid", "test", "train"]),
    st.sampled_from(
        ["XR_WRIST", "XR_HUMERUS", "XR_ELBOW", "XR_FOO", "XR_HANDS", "xXR_HAND", "XR_", "XR_HAND.x"]
    ),
    st.integers(0, 99_999),
    st.integers(1, 9),
    st.sampled_from(["", "_positive", "_negative", "_Positive", "_NEGATIVE", "_neutral", "positive"]),
    st.sampled_from(["/", "", "//"]),
)


@given(st.lists(usual_path, min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_usual_paths_take_the_bulk_branches(texts):
    expected = (
        [paths.normalize_study(t) for t in texts],
        [study_key(t) for t in texts],
        [study_type(paths.normalize_study(t)) for t in texts],
    )

    def one_path_rule(text: str) -> str:
        raise AssertionError(f"the one-path rule was used for {text!r}")

    with pytest.MonkeyPatch.context() as patch:
        for rule in ("normalize_study", "study_key", "study_type"):
            patch.setattr(paths, rule, one_path_rule)
        studies = normalize_studies(texts)
        assert (studies, study_keys(texts), study_types(studies)) == expected


def test_a_path_with_two_type_folders_takes_the_one_path_rule_whose_matches_do_not_overlap():
    # study_type finds XR_ folders one after another: the slash that ends XR_FOO cannot also
    # start XR_WRIST, so this path has no type, and the bulk form agrees.
    texts = ["a/XR_FOO/XR_WRIST/p/s/", "a/XR_HAND/XR_WRIST/p/s/", "XR_WRIST/p/s/"]
    assert study_types(texts) == [None, "HAND", "WRIST"] == [study_type(t) for t in texts]


# --- the plain-file splitter against the csv module --------------------------------------------

field = st.sampled_from(
    ["", "a", "MURA-v1.1/x/", "0", "1", "0.25", " 1", "a b", "é", '"q"', "x\ry", "\t"]
) | st.text(alphabet=',"ab \t\r\x0b\x1f', max_size=3)
plain_field = st.sampled_from(
    ["", "a", "MURA-v1.1/XR_HAND/p/s1_positive/", "0", "1", "0.25", "./x"]
) | st.text(alphabet="ab01_/.", max_size=5)


def csv_module_rows(text: str) -> list[formats.Row]:
    return [row for row in formats._split(text, "file", HostError) if row.fields not in BLANK]


def csv_text(rows: list[list[str]], newline: str, blank_every: int, final_newline: bool) -> str:
    lines = [",".join(row) for row in rows]
    if blank_every:
        lines = [
            line for i, row in enumerate(lines) for line in ([row, ""] if i % blank_every == 0 else [row])
        ]
    return newline.join(lines) + (newline if final_newline else "")


# How rows become a file's text: the line ending, a blank line after every n-th row, a last line end.
layout = st.tuples(st.sampled_from(["\n", "\r\n"]), st.integers(0, 3), st.booleans())


@given(st.lists(st.lists(field, min_size=1, max_size=4), max_size=6), layout)
@settings(max_examples=500, deadline=None)
def test_the_plain_splitter_gives_the_csv_modules_rows_or_leaves_the_file_to_it(rows, how):
    text = csv_text(rows, *how)
    plain = formats._split_plain(text)
    try:
        expected = csv_module_rows(text)
    except HostError:
        assert plain is None
        return
    if plain is not None:
        assert plain.rows == expected


@given(
    st.integers(1, 4).flatmap(lambda k: st.lists(st.lists(plain_field, min_size=k, max_size=k), min_size=1)),
    layout,
)
@settings(max_examples=300, deadline=None)
def test_a_plain_file_is_split_by_the_plain_splitter(rows, how):
    text = csv_text(rows, *how)
    plain = formats._split_plain(text)
    expected = csv_module_rows(text)
    if not any(row != [""] for row in rows):  # only blank lines
        assert plain is not None and plain.rows == expected == []
        return
    assert plain is not None, text
    assert plain.rows == expected
    with pytest.MonkeyPatch.context() as patch:  # a file split a few characters at a time
        patch.setattr(formats, "CHUNK", 3)
        assert formats._split_plain(text).rows == expected


def test_what_the_plain_splitter_leaves_to_the_csv_module():
    for text in ('"a",1\n', "a, 1\n", "a,1\rb,0\n", "a,1\nb\n", "é\u00a0,1\n", "a\x0b,1\n", "x" * 200_000):
        assert formats._split_plain(text) is None, text


# --- the readers and align: plain files against the same rows quoted ----------------------------

HAND = "MURA-v1.1/valid/XR_HAND/patient00001"
WRIST = "MURA-v1.1/valid/XR_WRIST/patient00002"


def write(
    folder: Path, name: str, rows: list[list[str]], *, quoted: bool, crlf: bool = False, bom: bool = False
) -> Path:
    """The rows as a CSV file: plain, or every field quoted (the csv module's path)."""
    folder.mkdir(exist_ok=True)
    cell = (lambda f: '"' + f.replace('"', '""') + '"') if quoted else (lambda f: f)
    text = "".join(",".join(map(cell, row)) + "\n" for row in rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\r\n" if crlf else "\n").encode()
    path = folder / name
    path.write_bytes(data)
    return path


def write_both(tmp_path: Path, name: str, rows: list[list[str]], **options) -> tuple[Path, Path]:
    """The rows plain and quoted, in two folders under the same name."""
    return tuple(
        write(tmp_path / kind, name, rows, quoted=kind == "quoted", **options) for kind in ("plain", "quoted")
    )


def both(tmp_path: Path, name: str, rows: list[list[str]], **options) -> tuple[Path, Path]:
    """write_both, where the plain file takes the plain path."""
    plain, quoted = write_both(tmp_path, name, rows, **options)
    assert read_table(plain, what="f", participant=False).width
    return plain, quoted


GOLD = [
    [f"{HAND}/study1_positive/", "1", "1", "0"],
    [f"./{HAND}/study2_NEGATIVE", "0", "0", "0"],
    [f"{WRIST}/study1//", "1", "0", "1"],
    [f"././{WRIST}/study2_Positive/", "0", "1", "1"],
]


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_a_gold_file_reads_the_same_on_either_path(tmp_path, header, crlf):
    rows = ([["study", "A", "B", "C"]] if header else []) + GOLD
    plain, quoted = both(tmp_path, "gold.csv", rows, crlf=crlf, bom=crlf)
    a, b = read_gold(plain), read_gold(quoted)
    assert (a.studies, a.types, a.raters, a.keys) == (b.studies, b.types, b.raters, b.keys)
    assert a.votes.dtype == b.votes.dtype == np.int8 and a.votes.tolist() == b.votes.tolist()
    assert a.studies[1] == f"{HAND}/study2_NEGATIVE/" and a.keys[1] == f"{HAND}/study2/"


@pytest.mark.parametrize(
    "rows",
    [
        [[f"{HAND}/study1_positive/", "1"], [f"{HAND}/study1_negative/", "0"]],  # one study twice
        [[f"{HAND}/study1/", "1"], ["MURA-v1.1/valid/patient9/study1/", "0"]],  # no type
        [[f"{HAND}/study1/", "1"], [f"{HAND}/study2/", "2"]],  # not a vote
        [[f"{HAND}/study1/", "1", "0"], [f"{HAND}/study2/", "1"]],  # widths differ
    ],
)
def test_a_broken_gold_file_gets_the_same_message_on_either_path(tmp_path, rows):
    messages = []
    for path in write_both(tmp_path, "gold.csv", rows):
        with pytest.raises(HostError) as caught:
            read_gold(path)
        messages.append(caught.value.message.replace(str(path.parent), "FOLDER"))
    assert messages[0] == messages[1]


PREDICTED = [
    [f"{WRIST}/study1", "1"],  # no trailing slash, no suffix
    [f"./{HAND}/study2_positive/", "0"],  # a guessed suffix, ./
    [f"{HAND}/study1_positive/", "1"],
    [f"{WRIST}/study2_positive/", "0"],
]


def test_predictions_and_their_alignment_are_the_same_on_either_path(tmp_path):
    gold = read_gold(both(tmp_path, "gold.csv", GOLD)[0])
    plain, quoted = both(tmp_path, "output.csv", PREDICTED)
    assert read_predictions(plain) == read_predictions(quoted)
    model = align(read_predictions(plain), gold.studies)
    assert model.dtype == np.int8 and model.tolist() == align(read_predictions(quoted), gold.studies).tolist()
    assert model.tolist() == [1, 0, 1, 0]  # gold order: study1 and study2 of HAND, then of WRIST
    probabilities = both(
        tmp_path, "probabilities.csv", [[p, f"0.{i}5"] for i, (p, _) in enumerate(PREDICTED)]
    )
    values = [align(read_predictions(p, PROBABILITIES), gold.studies, PROBABILITIES) for p in probabilities]
    assert values[0].dtype == np.float64 and values[0].tolist() == values[1].tolist() == [
        0.25,
        0.15,
        0.05,
        0.35,
    ]


@pytest.mark.parametrize("order", ["gold", "reversed", "shuffled"])
@pytest.mark.parametrize("spelling", ["as the gold", "no suffix", "mixed"])
def test_align_gives_each_gold_study_its_rows_value_in_any_order_and_spelling(
    tmp_path, monkeypatch, order, spelling
):
    """Against the rule row by row: each row's key (study_key) names one gold study. Paths are
    spelled and compared 7 at a time, so that chunks end everywhere."""
    monkeypatch.setattr("scorer.validate.CHUNK", 7)
    studies = [
        f"MURA-v1.1/valid/XR_{kind}/patient{i:05d}/study1_{'positive' if i % 3 else 'negative'}/"
        for i, kind in enumerate(["HAND", "WRIST", "ELBOW"] * 40)
    ]
    gold = read_gold(
        write(tmp_path, "gold.csv", [[s, str(i % 2)] for i, s in enumerate(studies)], quoted=False)
    )
    spelled = {
        "as the gold": studies,
        "no suffix": [s.rsplit("_", 1)[0] for s in studies],
        "mixed": [s if i % 2 else "./" + s.rsplit("_", 1)[0] for i, s in enumerate(studies)],
    }[spelling]
    rows = [[path, f"0.{i:03d}"] for i, path in enumerate(spelled)]
    rows = {
        "gold": rows,
        "reversed": rows[::-1],
        "shuffled": [rows[i] for i in np.random.default_rng(0).permutation(len(rows))],
    }[order]
    submitted = read_predictions(write(tmp_path, "p.csv", rows, quoted=False), PROBABILITIES)
    by_key = {study_key(path): float(value) for path, value in rows}
    expected = [by_key[study_key(study)] for study in gold.studies]
    assert (
        align(submitted, gold.studies, PROBABILITIES).tolist()
        == expected
        == [i / 1000 for i in range(len(studies))]
    )


def test_rows_that_spell_the_gold_studies_match_without_keys(tmp_path, monkeypatch):
    gold = read_gold(both(tmp_path, "gold.csv", GOLD)[0])
    rows = [[study, str(i % 2)] for i, study in enumerate(reversed(gold.studies))]
    submitted = read_predictions(both(tmp_path, "output.csv", rows)[0])
    monkeypatch.setattr("scorer.validate.study_keys", None)  # not needed: the paths match as spelled
    assert align(submitted, gold.studies).tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize(
    "rows",
    [
        PREDICTED + [[f"{HAND}/study2_negative/", "1"]],  # a study twice
        PREDICTED[:3],  # one missing
        PREDICTED + [[f"{HAND}/study9/", "1"]],  # another study
        [[p.replace("valid", "test"), v] for p, v in PREDICTED],  # none matches
        [["study", "label"]] + PREDICTED,  # a header
        PREDICTED[:2] + [[f"{HAND}/study1/", "0.7"]] + PREDICTED[3:],  # a probability
        PREDICTED[:2] + [["", "1"]] + PREDICTED[3:],  # no path
    ],
)
def test_a_broken_submission_gets_the_same_message_on_either_path(tmp_path, rows):
    gold = read_gold(both(tmp_path, "gold.csv", GOLD)[0])
    messages = []
    for path in write_both(tmp_path, "output.csv", rows):
        with pytest.raises(ParticipantError) as caught:
            align(read_predictions(path), gold.studies)
        messages.append(caught.value.message.replace(str(path.parent), "FOLDER"))
    assert messages[0] == messages[1]


def test_a_strata_file_reads_the_same_on_either_path(tmp_path):
    gold = read_gold(both(tmp_path, "gold.csv", GOLD)[0])
    rows = [
        ["study", "findings"],
        [f"{HAND}/study1/", "fracture;hardware"],
        [f"./{WRIST}/study2_negative", "normal"],
    ]
    plain, quoted = both(tmp_path, "strata.csv", rows)
    found = read_strata(plain, gold.studies)
    assert found == read_strata(quoted, gold.studies)
    assert found == {gold.studies[0]: ("fracture", "hardware"), gold.studies[3]: ("normal",)}
