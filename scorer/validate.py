"""Matching a submission against the gold studies: exactly one 0/1 for every gold study.

Unlike the official MURA script (an inner join), nothing is scored unless every gold study has
exactly one prediction and no prediction names another study. Studies are matched on their
label-blind keys (paths.study_key: the path without the `_positive`/`_negative` suffix), so a
submission that guesses a suffix, the right one or none, matches the same study, and whether a
row matches never depends on a gold label. Messages show paths with those suffixes hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
from numpy.typing import NDArray

from scorer.errors import ParticipantError, examples, hide_labels
from scorer.formats import PREDICTIONS, SubmissionFile, Submitted
from scorer.paths import Canonical, normalize_studies, study_keys

Spelling = Callable[[Sequence[str]], list[str]]  # a column form of a path rule, or `list`
CHUNK = 1 << 16  # paths spelled at a time


def align(predictions: Submitted, studies: Sequence[str], kind: SubmissionFile = PREDICTIONS) -> np.ndarray:
    """The submitted value for each study in `studies` (whose keys must be unique, as a gold
    file's are), in that order: int8 0/1 for predictions, float64 for probabilities."""
    # Usually every row names a study as `studies` spell it, once: then no key is needed (the
    # same path has the same key). Else rows and studies are matched on their keys.
    row = _one_to_one(predictions.studies, studies, list)
    if row is None:  # study_keys normalizes the paths: once here, not again for every chunk
        row = _one_to_one(normalize_studies(predictions.studies), normalize_studies(studies), study_keys)
    if row is None:
        row = _match_or_refuse(predictions, study_keys(predictions.studies), study_keys(studies), kind)
    dtype = np.int8 if kind is PREDICTIONS else np.float64
    return predictions.values[row].astype(dtype)


def _one_to_one(names: Sequence[str], targets: Sequence[str], spell: Spelling) -> NDArray[np.intp] | None:
    """For each target, the index of the one name spelled as it is (by `spell`), when the names
    are the targets in some order; else None. Names in the targets' order are the usual case
    (predict.py writes MURA's studies in its index files' order); else they are matched on the
    spellings' hashes with numpy and the matched spellings compared: a million paths in a
    fraction of a second, spelled a chunk at a time (never a million spellings held at once)."""
    if len(names) != len(targets):
        return None
    if _same(names, targets, spell):
        return np.arange(len(targets))
    names_hashed, targets_hashed = _hashes(names, spell), _hashes(targets, spell)
    names_order, targets_order = np.argsort(names_hashed), np.argsort(targets_hashed)
    names_hashed = names_hashed[names_order]
    if (names_hashed[1:] == names_hashed[:-1]).any():
        return None  # two names alike (or two hashes): the row-by-row match decides
    if not np.array_equal(names_hashed, targets_hashed[targets_order]):
        return None
    row = np.empty(len(targets), dtype=np.intp)
    row[targets_order] = names_order
    gathered = np.empty(len(names), dtype=object)  # numpy gathers a million strings fastest
    gathered[:] = names
    reordered = gathered[row].tolist()
    if isinstance(names, Canonical):
        reordered = Canonical(reordered)  # in any order, canonical paths stay canonical
    return row if _same(reordered, targets, spell) else None


def _hashes(strings: Sequence[str], spell: Spelling) -> NDArray[np.int64]:
    spelled = (map(hash, spell(strings[i : i + CHUNK])) for i in range(0, len(strings), CHUNK))
    return np.fromiter(chain.from_iterable(spelled), dtype=np.int64, count=len(strings))


def _same(names: Sequence[str], targets: Sequence[str], spell: Spelling) -> bool:
    """spell(names[t]) == spell(targets[t]) for every t, a chunk at a time (up to one that differs)."""
    return all(
        spell(names[i : i + CHUNK]) == spell(targets[i : i + CHUNK]) for i in range(0, len(names), CHUNK)
    )


def _match_or_refuse(
    predictions: Submitted, keys: list[str], wanted: list[str], kind: SubmissionFile
) -> NDArray[np.intp]:
    """The row of each wanted key, or the ParticipantError that says what does not match."""
    what = kind.what
    lines = predictions.lines.tolist()
    first: dict[str, int] = {}  # key -> its first row
    repeated: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key in first:
            repeated.setdefault(key, [lines[first[key]]]).append(lines[i])
        else:
            first[key] = i
    if repeated:
        shown = (f"{hide_labels(key)} (lines {examples(at, 3)})" for key, at in repeated.items())
        raise ParticipantError(
            f"{what}: expected exactly one row per study; found {len(repeated):,} studies with more "
            f"than one row: {examples(shown, 3)}; keep one row for each study (a study folder's "
            "label suffix, if you write one, does not make it another study)"
        )

    known = set(wanted)
    extra = [i for key, i in first.items() if key not in known]
    missing = [key for key in wanted if key not in first]
    matched = len(first) - len(extra)
    hint = (
        "; none of your study paths matches a test study: write each study's folder exactly as "
        "the image paths in input.csv give it, with a trailing slash"
        if matched == 0
        else ""
    )
    if extra:
        shown = (f"{hide_labels(predictions.written[i])} (line {lines[i]})" for i in extra)
        raise ParticipantError(
            f"{what}: expected rows only for the {len(wanted):,} studies in the input; found "
            f"{len(extra):,} rows for other studies: {examples(shown, 3)}; remove them{hint}"
        )
    if missing:
        raise ParticipantError(
            f"{what}: expected one row for each of the {len(wanted):,} studies in the input, "
            f"found {matched:,}; missing {len(missing):,}: {examples(map(hide_labels, missing), 3)}; "
            f"add a row {kind.form} for each (predict every study, even when unsure){hint}"
        )
    return np.array([first[key] for key in wanted], dtype=np.intp)
