"""The study-path grammar of MURA, in one place.

A study is named by its whole path with a trailing slash, e.g.
`MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/`: the same
`patientNNNNN/studyK_*` folder occurs under several study types, so nothing shorter is unique.
The scorer matches studies on `study_key`, that path without the study folder's
`_positive`/`_negative` suffix: the suffix is the label, and a match that needed it would tell
a participant which label they guessed (in MURA a patient's studyK exists once per type, so the
suffix never tells two studies apart).
"""

from __future__ import annotations

import re

# The seven study types, in the order the official score keys use.
STUDY_TYPES: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
OVERALL = "Overall"

# What an image file's name ends with (in any case): the formats the reference model decodes.
# The harness stages a test study's files with these suffixes (and no others); an index line with
# no folder and none of them is a header.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

_TYPE_IN_PATH = re.compile(r"(?:^|/)XR_([A-Z]+)(?:/|$)")
_FOLDER_LABEL = re.compile(r"_(positive|negative)$", re.IGNORECASE)


def type_key(study_type: str) -> str:
    """The prefix of the official score keys: `ELBOW` -> `Elbow` (as in `Elbow_Mean`)."""
    return study_type.capitalize()


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
    head, _, folder = normalize_study(text)[:-1].rpartition("/")
    folder = _FOLDER_LABEL.sub("", folder)
    return f"{head}/{folder}/" if head else f"{folder}/"


def study_type(study: str) -> str | None:
    """The study type named by an `XR_{TYPE}` folder in the path, or None if there is none."""
    for match in _TYPE_IN_PATH.finditer(study):
        if match.group(1) in STUDY_TYPES:
            return match.group(1)
    return None


def study_of_image(image_path: str) -> str:
    """The study an image belongs to: its folder, with a trailing slash."""
    path = image_path.strip()
    folder, _, _ = path.rpartition("/")
    return normalize_study(folder)
