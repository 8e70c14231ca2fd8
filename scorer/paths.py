"""The study-path grammar of MURA, in one place.

A study is named by its whole path with a trailing slash, e.g.
`MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/`: the same
`patientNNNNN/studyK_*` folder occurs under several study types, so nothing shorter is unique.
The scorer matches studies on `study_key`, that path without the study folder's
`_positive`/`_negative` suffix: the suffix is the label, and a match that needed it would tell
a participant which label they guessed (in MURA a patient's studyK exists once per type, so the
suffix never tells two studies apart).

Each rule is written once, for one path (`normalize_study`, `study_key`, `study_type`); the
`*_studies`/`study_keys`/`study_types` forms apply it to a whole column at C speed (a million
paths in a fraction of a second) and give the same result as the one-path form on each, which
they fall back to for a path outside the usual shape (tests/test_score_bulk.py checks this).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import SupportsIndex, overload

# The seven study types, in the order the official score keys use.
STUDY_TYPES: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
OVERALL = "Overall"

# What an image file's name ends with (in any case): the formats the reference model decodes.
# The harness stages a test study's files with these suffixes (and no others); an index line with
# no folder and none of them is a header.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

_TYPE_IN_PATH = re.compile(r"(?:^|/)XR_([A-Z]+)(?:/|$)")
_FOLDER_LABEL = re.compile(r"_(positive|negative)$", re.IGNORECASE)
# The same rules on many paths joined by line breaks, a path a line.
_LEADING_DOT_SLASHES = re.compile(r"^(?:\./)+", re.MULTILINE)
_TRAILING_SLASHES = re.compile(r"(?<!/)/*$", re.MULTILINE)
_LABEL_AT_END = re.compile(r"_(?:positive|negative)/$", re.MULTILINE | re.IGNORECASE)
_TYPE_FOLDER = b"XR_"
_LOOK_AHEAD = "\n" * (max(map(len, STUDY_TYPES)) + 1)


def type_key(study_type: str) -> str:
    """The prefix of the official score keys: `ELBOW` -> `Elbow` (as in `Elbow_Mean`)."""
    return study_type.capitalize()


# The groups a submission is scored in, as the score keys name them, overall first (the
# leaderboard's and Codabench's column order): Overall, Elbow, ..., Wrist.
GROUPS: tuple[str, ...] = (OVERALL, *(type_key(t) for t in STUDY_TYPES))


def normalize_study(text: str) -> str:
    """The canonical spelling of a study path: no surrounding blanks, no leading `./`, and
    exactly one trailing slash. `./a/b` and ` a/b/ ` both become `a/b/`."""
    key = text.strip()
    while key.startswith("./"):
        key = key[2:]
    return key.rstrip("/") + "/"


def study_key(text: str) -> str:
    """The label-blind key the scorer matches studies on: the canonical path without the study
    folder's `_positive`/`_negative` suffix. `a/study1_positive/`, `a/study1_negative` and
    `./a/study1/` are all `a/study1/`."""
    return _label_blind(normalize_study(text))


def _label_blind(study: str) -> str:
    head, _, folder = study[:-1].rpartition("/")
    folder = _FOLDER_LABEL.sub("", folder)
    return f"{head}/{folder}/" if head else f"{folder}/"


def study_type(study: str) -> str | None:
    """The study type named by an `XR_{TYPE}` folder in the path, or None if there is none."""
    for match in _TYPE_IN_PATH.finditer(study):
        if match.group(1) in STUDY_TYPES:
            return match.group(1)
    return None


# --- the same rules on a whole column of paths ------------------------------------------------


def _joined(paths: Sequence[str]) -> str | None:
    """The paths a line each, or None when one holds a line break itself (or there are none)."""
    joined = "\n".join(paths)
    return joined if paths and joined.count("\n") == len(paths) - 1 else None


class Canonical(list[str]):
    """Paths that normalize_study leaves as they are: what normalize_studies returns when it had
    nothing to change (MURA's paths), which study_keys need not normalize again. A slice of them
    is Canonical too."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Canonical: ...
    def __getitem__(self, index: SupportsIndex | slice) -> str | Canonical:
        got = super().__getitem__(index)
        return Canonical(got) if isinstance(index, slice) else got


def normalize_studies(texts: Sequence[str]) -> list[str]:
    """normalize_study of each text (Canonical when none needed a change)."""
    if isinstance(texts, Canonical):
        return texts
    stripped = list(map(str.strip, texts))
    joined = _joined(stripped)
    if joined is None:
        return [normalize_study(text) for text in texts]
    if joined.startswith("./") or "\n./" in joined:
        joined = _LEADING_DOT_SLASHES.sub("", joined)
    elif _one_trailing_slash_each(joined, len(stripped)):
        return Canonical(stripped)  # stripped, so none starts with a blank a second pass would strip
    return _TRAILING_SLASHES.sub("/", joined).split("\n")


def _one_trailing_slash_each(joined: str, count: int) -> bool:
    ends = joined.count("/\n") + joined.endswith("/")
    return ends == count and "//\n" not in joined and not joined.endswith("//")


def study_keys(texts: Sequence[str]) -> list[str]:
    """study_key of each text."""
    studies = normalize_studies(texts)
    joined = _joined(studies)
    # study_key drops the leading slash of a one-folder path (`/a/` is `a/`): such paths, rare,
    # take the one-path rule.
    if joined is None or joined.startswith("/") or "\n/" in joined:
        return list(map(_label_blind, studies))
    keys, changed = _LABEL_AT_END.subn("/", joined)
    del joined  # a million keys are made next: one joined copy at a time
    return keys.split("\n") if changed else studies


def study_types(studies: Sequence[str]) -> list[str | None]:
    """study_type of each study. The usual path holds one `XR_` (MURA's: `.../XR_WRIST/...`):
    those are read from the joined bytes with numpy; any other takes the one-path rule."""
    import numpy as np  # here only: the leaderboard reads this module's names without numpy

    joined = _joined(studies)
    if joined is None or not joined.isascii():
        return [study_type(study) for study in studies]
    text = np.frombuffer(f"{joined}\n{_LOOK_AHEAD}".encode("ascii"), dtype=np.uint8)
    starts = np.flatnonzero(text == ord("X"))
    for offset, char in enumerate(_TYPE_FOLDER[1:], 1):
        starts = starts[text[starts + offset] == char]
    line_ends = np.flatnonzero(text[: len(joined)] == ord("\n"))
    if not np.array_equal(np.searchsorted(line_ends, starts), np.arange(len(studies))):
        return [study_type(study) for study in studies]  # a path with no XR_, or with several
    before = text[np.maximum(starts - 1, 0)]
    folder_start = (starts == 0) | (before == ord("/")) | (before == ord("\n"))
    # The characters after each XR_, enough for the longest type and what ends it.
    after = np.lib.stride_tricks.sliding_window_view(text, len(_LOOK_AHEAD))[starts + len(_TYPE_FOLDER)]
    code = np.full(len(studies), len(STUDY_TYPES))  # STUDY_TYPES[code]; None past the end
    for i, name in enumerate(STUDY_TYPES):
        folder = np.ascontiguousarray(after[:, : len(name) + 1]).view(f"S{len(name) + 1}").ravel()
        named = (folder == f"{name}/".encode()) | (folder == f"{name}\n".encode())
        code[folder_start & named] = i
    return list(map((*STUDY_TYPES, None).__getitem__, code.tolist()))


# --- an image path's study ---------------------------------------------------------------------


def study_of_image(image_path: str) -> str:
    """The study an image belongs to: its folder, with a trailing slash."""
    path = image_path.strip()
    folder, _, _ = path.rpartition("/")
    return normalize_study(folder)
