"""Reading a million studies in bulk gives what the row-by-row rules give.

- scorer.paths: the column forms (normalize_studies, study_keys, study_types)
  against the one-path rules, on generated paths, with the bulk branch taken where it should be.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer import paths
from scorer.paths import (
    normalize_studies,
    study_key,
    study_keys,
    study_type,
    study_types,
)

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
