"""Matching a submission against the gold studies: exactly one 0/1 for every gold study.

Unlike the official MURA script (an inner join), nothing is scored unless every gold study has
exactly one prediction and no prediction names another study. Messages show study paths with
their `_positive`/`_negative` suffixes hidden: participants must never learn a gold label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scorer.errors import ParticipantError, examples, hide_labels
from scorer.formats import PREDICTIONS, Prediction, SubmissionFile


def align(
    predictions: Sequence[Prediction], studies: Sequence[str], kind: SubmissionFile = PREDICTIONS
) -> np.ndarray:
    """The submitted value for each study in `studies`, in that order: int8 0/1 for
    predictions, float64 for probabilities."""
    what = kind.what
    first: dict[str, Prediction] = {}
    repeated: dict[str, list[int]] = {}
    for prediction in predictions:
        if prediction.study in first:
            repeated.setdefault(prediction.study, [first[prediction.study].line]).append(prediction.line)
        else:
            first[prediction.study] = prediction
    if repeated:
        shown = (
            f"{hide_labels(study)} (lines {', '.join(map(str, lines))})" for study, lines in repeated.items()
        )
        raise ParticipantError(
            f"{what}: expected exactly one row per study; found {len(repeated)} studies with more "
            f"than one row: {examples(shown)}; keep one row for each study"
        )

    wanted = set(studies)
    extra = [p for p in first.values() if p.study not in wanted]
    missing = [study for study in studies if study not in first]
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
            f"{what}: expected rows only for the {len(studies)} studies in the input; found "
            f"{len(extra)} rows for other studies: {examples(shown)}; remove them{hint}"
        )
    if missing:
        raise ParticipantError(
            f"{what}: expected one row for each of the {len(studies)} studies in the input, "
            f"found {matched}; missing {len(missing)}: {examples(map(hide_labels, missing))}; "
            f"add a row {kind.form} for each (predict every study, even when unsure){hint}"
        )
    dtype = np.int8 if kind is PREDICTIONS else np.float64
    return np.array([first[study].value for study in studies], dtype=dtype)
