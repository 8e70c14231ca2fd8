"""Matching a submission against the gold studies: exactly one 0/1 for every gold study.

Unlike the official MURA script (an inner join), nothing is scored unless every gold study has
exactly one prediction and no prediction names another study. Studies are matched on their
label-blind keys (paths.study_key: the path without the `_positive`/`_negative` suffix), so a
submission that guesses a suffix, the right one or none, matches the same study, and whether a
row matches never depends on a gold label. Messages show paths with those suffixes hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scorer.errors import ParticipantError, examples, hide_labels
from scorer.formats import PREDICTIONS, Prediction, SubmissionFile
from scorer.paths import study_key


def align(
    predictions: Sequence[Prediction], studies: Sequence[str], kind: SubmissionFile = PREDICTIONS
) -> np.ndarray:
    """The submitted value for each study in `studies` (whose keys must be unique, as a gold
    file's are), in that order: int8 0/1 for predictions, float64 for probabilities."""
    what = kind.what
    first: dict[str, Prediction] = {}
    repeated: dict[str, list[int]] = {}
    for prediction in predictions:
        key = study_key(prediction.study)
        if key in first:
            repeated.setdefault(key, [first[key].line]).append(prediction.line)
        else:
            first[key] = prediction
    if repeated:
        shown = (f"{hide_labels(key)} (lines {examples(lines, 3)})" for key, lines in repeated.items())
        raise ParticipantError(
            f"{what}: expected exactly one row per study; found {len(repeated):,} studies with more "
            f"than one row: {examples(shown, 3)}; keep one row for each study (a study folder's "
            "label suffix, if you write one, does not make it another study)"
        )

    keys = [study_key(study) for study in studies]
    wanted = set(keys)
    extra = [p for key, p in first.items() if key not in wanted]
    missing = [key for key in keys if key not in first]
    matched = len(first) - len(extra)
    hint = (
        "; none of your study paths matches a test study: write each study's folder exactly as "
        "the image paths in input.csv give it, with a trailing slash"
        if matched == 0
        else ""
    )
    if extra:
        shown = (f"{hide_labels(p.written)} (line {p.line})" for p in extra)
        raise ParticipantError(
            f"{what}: expected rows only for the {len(studies):,} studies in the input; found "
            f"{len(extra):,} rows for other studies: {examples(shown, 3)}; remove them{hint}"
        )
    if missing:
        raise ParticipantError(
            f"{what}: expected one row for each of the {len(studies):,} studies in the input, "
            f"found {matched:,}; missing {len(missing):,}: {examples(map(hide_labels, missing), 3)}; "
            f"add a row {kind.form} for each (predict every study, even when unsure){hint}"
        )
    dtype = np.int8 if kind is PREDICTIONS else np.float64
    return np.array([first[key].value for key in keys], dtype=dtype)
