"""Reading the kit's CSV files, with the rules in one place.

All files are header-less, comma-separated text (MURA's official files), split into fields as
RFC 4180 says, by Python's csv module (pandas, which the official script read files with, splits
them the same way): a quoted field is one field, commas and all, and `"path",1` is the row
`path,1`. Fields are stripped of blanks; blank lines are skipped. No field holds a line break
(no study path does: a quote left open is reported on the line that opens it).

Two strictness levels:
- a participant's file must be to the contract: UTF-8, no header, at most 64 MiB; what breaks
  it is a ParticipantError saying what to change. A byte-order mark and CRLF line endings break
  it too, but the official script read them, so they are read with a note (errors.note);
- an organiser's file (gold, strata, index) may also have a header row; it has no size bound
  (it is the organiser's own data, and a large synthetic test set is theirs to make); what
  cannot be read is a HostError. A HostError can reach a participant (a Codabench log), so it
  names lines and columns, never a vote, and shows study paths with their
  `_positive`/`_negative` suffixes hidden.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scorer.errors import HostError, ParticipantError, ScoringError, examples, hide_labels, note, shorten
from scorer.files import MiB, read_file
from scorer.paths import normalize_study, study_key, study_type

BOM = b"\xef\xbb\xbf"
BINARY = ("0", "1")
BLANK = ((), ("",))  # the fields of a blank line
PREDICTION_FORM = "`study_path/,0|1`, e.g. `MURA-v1.1/valid/XR_WRIST/patient11185/study1/,1`"
# A participant's file: output.csv of MURA's 207 test studies is about 12 KB, of a million
# studies about 60 MB.
PARTICIPANT_FILE_LIMIT = 64 * MiB
TOO_LARGE_ADVICE = "write one short line per study and nothing else"
FIELD_WIDTH = 60  # characters of a file's value shown in a message


class Row(NamedTuple):  # a tuple: a million of them are made in well under a second
    line: int  # 1-based line number in the file (of the row's start)
    fields: tuple[str, ...]


def read_rows(path: str | Path, *, what: str, participant: bool) -> list[Row]:
    """The non-blank lines of a CSV file split into stripped fields.

    `what` names the file in messages ("predictions file", "gold file").
    """
    error: type[ScoringError] = ParticipantError if participant else HostError
    path = Path(path)
    limit = PARTICIPANT_FILE_LIMIT if participant else None
    data = read_file(path, what, "a CSV file", error, limit=limit, advice=TOO_LARGE_ADVICE)

    bom = data.startswith(BOM)
    if bom:
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} cannot be "
            "decoded; expected UTF-8 (study paths are plain ASCII); re-save the file as UTF-8"
        ) from None
    if "\x00" in text:
        raise error(f"{what} contains NUL bytes: it looks binary; expected a text CSV file")
    if participant:
        _note_windows_habits(what, bom, text.count("\r\n"))

    rows = [row for row in _split(text, what, error) if row.fields not in BLANK]
    if not rows:
        found = "0 bytes" if not data else "only blank lines"
        raise error(f"{what} {path} is empty: expected one CSV line per entry, found {found}")
    return rows


def _note_windows_habits(what: str, bom: bool, crlf: int) -> None:
    """The official script read a byte-order mark and CRLF endings (pandas does): so does the
    kit, saying so."""
    habits = (["a UTF-8 byte-order mark"] if bom else []) + (["Windows line endings (CRLF)"] if crlf else [])
    if habits:
        note(
            f"{what} has {' and '.join(habits)}; read all the same, as the official script did "
            "(the contract asks for UTF-8 without a BOM and LF line endings)"
        )


def csv_field(text: str) -> str:
    """`text` as one CSV field: quoted as RFC 4180 says when it holds a comma, a quote or a line
    end, as it is otherwise (MURA's paths never need quotes)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _split(text: str, what: str, error: type[ScoringError]) -> list[Row]:
    """Every line of the file (blank ones too) split into stripped fields by the csv module.
    A record over several lines is refused: no path holds a line break, it is always a quote
    left open, and it would shift every line number after it."""
    reader = _reader(text)
    try:
        rows = [Row(line, tuple(map(str.strip, record))) for line, record in enumerate(reader, 1)]
    except csv.Error:
        rows = None
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    if rows is None or len(rows) != lines:
        raise error(f"{what} {_first_problem(text)}")
    return rows


def _reader(text: str) -> Iterator[list[str]]:
    # Lines end at LF only (a CR before it ends the record too). As in RFC 4180 and pandas, a
    # quote opens a quoted field only as its first character: ` "a,b"` is two fields.
    return csv.reader(io.StringIO(text, newline="\n"))


def _first_problem(text: str) -> str:
    """Where and what the first record that cannot be split, or runs over lines, is."""
    reader = _reader(text)
    start = 1
    try:
        for _ in reader:
            if reader.line_num > start:
                break
            start = reader.line_num + 1
    except csv.Error as exc:
        if reader.line_num == start:
            return f"line {start}: {_csv_problem(exc)}"
    return (
        f"line {start}: a quoted field runs on to line {reader.line_num}; expected every field "
        'on its own line (no path holds a line break); close the quote (") on the line that opens it'
    )


def _csv_problem(exc: csv.Error) -> str:
    """What the csv module's error means, in the file's terms."""
    reason = str(exc)
    if reason.startswith("field larger than field limit"):
        return (
            f"a field of more than {csv.field_size_limit():,} characters; expected a study path "
            "and short values"
        )
    if reason.startswith("new-line character seen in unquoted field"):
        return "a carriage return (\\r) inside the line; expected LF or CRLF line endings only"
    return f"cannot be split into fields ({shorten(reason, FIELD_WIDTH)})"


def _lines(rows: Sequence[Row], limit: int = 5) -> str:
    return examples((str(row.line) for row in rows), limit)


def _shown(field: str) -> str:
    """A field of an organiser's file, as a message may show it: quoted, short, label-free."""
    return shorten(repr(hide_labels(field)), FIELD_WIDTH)


def _looks_like_header(row: Row) -> bool:
    """A first row whose values are not 0/1 and whose first field is not a study path."""
    return "/" not in row.fields[0] and any(value not in BINARY for value in row.fields[1:])


# --- the participant's predictions and probabilities -----------------------------------------


class Prediction(NamedTuple):  # a tuple, as Row: a 64 MiB file can hold ten million
    line: int
    study: str  # canonical key
    written: str  # the path as the participant wrote it
    value: float  # 0/1 for predictions, a probability for probabilities


@dataclass(frozen=True)
class SubmissionFile:
    """What a participant's two-column file holds: its name, form and value rule."""

    what: str
    form: str
    expected: str  # what the second field must be
    accept: Callable[[str], bool]
    hint: Callable[[list[str]], str]  # what to do, given the offending values


def _binary_hint(values: list[str]) -> str:
    if any(_is_number(v) for v in values):
        return "threshold probabilities first (abnormal = 1 when p > 0.5)"
    return "write 0 for normal and 1 for abnormal"


def _is_probability(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return 0.0 <= value <= 1.0  # False for NaN too


PREDICTIONS = SubmissionFile(
    "predictions file", PREDICTION_FORM, "0 or 1", lambda v: v in BINARY, _binary_hint
)
PROBABILITIES = SubmissionFile(
    "probabilities file",
    "`study_path/,probability`, e.g. `MURA-v1.1/valid/XR_WRIST/patient11185/study1/,0.8312`",
    "a probability of abnormality between 0 and 1",
    _is_probability,
    lambda values: "write each study's probability of abnormality as a number from 0 to 1",
)


def read_predictions(path: str | Path, kind: SubmissionFile = PREDICTIONS) -> list[Prediction]:
    """A submission's `output.csv` (`study_path/,0|1` per line, nothing else) or, with
    kind=PROBABILITIES, its per-study probabilities file (`study_path/,p`)."""
    what = kind.what
    rows = read_rows(path, what=what, participant=True)

    if len(rows[0].fields) == 2 and _looks_like_header(rows[0]) and not kind.accept(rows[0].fields[1]):
        header = shorten(repr(",".join(rows[0].fields)), FIELD_WIDTH)
        raise ParticipantError(
            f"{what} line 1 looks like a header ({header}); expected no header, every line "
            f"{kind.form}; delete the first line"
        )
    wrong = [row for row in rows if len(row.fields) != 2]
    if wrong:
        counts = sorted({len(row.fields) for row in wrong})
        raise ParticipantError(
            f"{what}: expected 2 comma-separated fields on every line, {kind.form}; "
            f"found {'/'.join(map(str, counts))} fields on {len(wrong)} of {len(rows)} lines "
            f"(lines {_lines(wrong)}); write exactly one study path and one value per line"
        )
    empty = [row for row in rows if not row.fields[0]]
    if empty:
        raise ParticipantError(
            f"{what}: expected a study path before the comma on every line; found none on "
            f"{len(empty)} lines (lines {_lines(empty)}); write {kind.form}"
        )
    bad = [row for row in rows if not kind.accept(row.fields[1])]
    if bad:
        values = list(dict.fromkeys(row.fields[1] for row in bad))
        raise ParticipantError(
            f"{what}: expected the second field to be {kind.expected} on every line; found other "
            f"values on {len(bad)} of {len(rows)} lines (lines {_lines(bad)}: "
            f"{examples(map(repr, values), width=FIELD_WIDTH)}); {kind.hint(values)}"
        )
    return [
        Prediction(row.line, normalize_study(row.fields[0]), row.fields[0], float(row.fields[1]))
        for row in rows
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- the organiser's gold file ----------------------------------------------------------------


@dataclass(frozen=True)
class RaterTable:
    """Studies and the 0/1 reads of one or more raters (or a single `label` column)."""

    path: str
    studies: tuple[str, ...]  # canonical keys, in file order
    types: tuple[str, ...]  # each study's type (ELBOW, ...)
    raters: tuple[str, ...]  # column names
    votes: np.ndarray  # (studies, raters), int8

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """Each study's label-blind key (paths.study_key), unique within the table."""
        return tuple(study_key(study) for study in self.studies)


def read_gold(path: str | Path, what: str = "gold file") -> RaterTable:
    """`study,label`, `study,Rad1,Rad2,Rad3` or `study,Rad1,...,RadK`; a header row is optional.

    Also reads a dataset's own `study,label` files (MURA's `*_labeled_studies.csv`)."""
    rows = read_rows(path, what=what, participant=False)

    header: tuple[str, ...] | None = None
    if _looks_like_header(rows[0]):
        header, rows = rows[0].fields[1:], rows[1:]
        if not rows:
            raise HostError(f"{what} {path} has a header but no studies; expected one row per study")
    widths = sorted({len(row.fields) for row in rows})
    if len(widths) > 1 or widths[0] < 2:
        counts = {w: sum(1 for row in rows if len(row.fields) == w) for w in widths}
        found = ", ".join(f"{n} rows with {w} fields" for w, n in counts.items())
        raise HostError(
            f"{what} {path}: expected the same number of fields on every row "
            "(`study,label` or `study,Rad1,...,RadK`); found " + found
        )
    k = widths[0] - 1
    if header is not None and len(header) != k:
        raise HostError(
            f"{what} {path}: the header names {len(header)} columns after the study, "
            f"the rows have {k}; make them agree"
        )
    raters = (
        header if header is not None else (("label",) if k == 1 else tuple(f"Rad{i + 1}" for i in range(k)))
    )
    if len(set(raters)) != len(raters) or not all(raters):
        raise HostError(
            f"{what} {path}: rater names in the header must be unique and non-empty, found {raters}"
        )

    votes_text = [row.fields[1:] for row in rows]
    bad = [] if set(chain.from_iterable(votes_text)) <= set(BINARY) else _rows_not_binary(rows)
    if bad:
        # Where, not what: the row's other values are votes.
        column = next(i for i, value in enumerate(bad[0].fields[1:]) if value not in BINARY)
        raise HostError(
            f"{what} {path}: expected 0 or 1 in every rater column; found other values on "
            f"{len(bad)} rows (lines {_lines(bad)}; first: line {bad[0].line}, column {column + 2}, "
            f"rater {raters[column]})"
        )
    studies = tuple(normalize_study(row.fields[0]) for row in rows)
    _check_unique([study_key(study) for study in studies], rows, what, path)
    types = tuple(study_type(study) for study in studies)
    untyped = [row for row, t in zip(rows, types) if t is None]
    if untyped:
        raise HostError(
            f"{what} {path}: expected every study path to contain its study type as an "
            f"XR_{{TYPE}} folder (e.g. MURA-v1.1/valid/XR_WRIST/patient11185/study1/); "
            f"found {len(untyped)} without one (lines {_lines(untyped)}, e.g. "
            f"{_shown(untyped[0].fields[0])})"
        )
    # Every vote is "0" or "1", one ASCII byte: the votes as bytes, less b"0".
    flat = np.frombuffer("".join(chain.from_iterable(votes_text)).encode("ascii"), dtype=np.uint8)
    votes = (flat - ord("0")).astype(np.int8).reshape(len(rows), k)
    return RaterTable(str(path), studies, tuple(types), tuple(raters), votes)  # type: ignore[arg-type]


def _rows_not_binary(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if any(value not in BINARY for value in row.fields[1:])]


def _check_unique(keys: Sequence[str], rows: Sequence[Row], what: str, path: str | Path) -> None:
    """Each study key (paths.study_key) once: two rows whose paths differ only in the
    `_positive`/`_negative` suffix are the same study to the scorer."""
    seen: dict[str, int] = {}
    repeated: list[str] = []
    for key, row in zip(keys, rows):
        if key in seen:
            repeated.append(f"{hide_labels(key)} (lines {seen[key]} and {row.line})")
        else:
            seen[key] = row.line
    if repeated:
        raise HostError(
            f"{what} {path}: expected each study once (paths that differ only in the study "
            f"folder's label suffix are one study); found {len(repeated)} repeated: "
            f"{examples(repeated)}; keep one row per study"
        )


# --- the organiser's strata file --------------------------------------------------------------

STRATUM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


def read_strata(path: str | Path, studies: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`study_path/,finding[;finding...]` per row (a header row is optional): each listed
    study's findings, keyed by the study as `studies` (the gold file's) spell it. Rows match
    gold studies on their label-blind keys; studies without a row are unstratified."""
    what = "strata file"
    rows = read_rows(path, what=what, participant=False)
    if "/" not in rows[0].fields[0]:
        rows = rows[1:]  # a header
        if not rows:
            raise HostError(f"{what} {path} has a header but no rows")
    wrong = [row for row in rows if len(row.fields) != 2]
    if wrong:
        raise HostError(
            f"{what} {path}: expected 2 fields on every row, `study_path/,finding[;finding...]`; "
            f"found other counts on {len(wrong)} rows (lines {_lines(wrong)})"
        )
    findings = [tuple(f.strip() for f in row.fields[1].split(";") if f.strip()) for row in rows]
    bad = [row for row, names in zip(rows, findings) if not names or not all(map(STRATUM_NAME.match, names))]
    if bad:
        raise HostError(
            f"{what} {path}: expected one or more finding names separated by ';' (letters, digits, "
            f"space, _ . + -) after the study; found {_shown(bad[0].fields[1])} on line {bad[0].line}"
            f"{f' and {len(bad) - 1} more rows' if len(bad) > 1 else ''}"
        )
    keys = [study_key(row.fields[0]) for row in rows]
    _check_unique(keys, rows, what, path)
    gold_study = {study_key(study): study for study in studies}
    unknown = [row for row, key in zip(rows, keys) if key not in gold_study]
    if unknown:
        raise HostError(
            f"{what} {path}: expected only studies of the gold file; found {len(unknown)} others "
            f"(lines {_lines(unknown)}, e.g. {_shown(unknown[0].fields[0])}); fix the paths "
            "or the gold file"
        )
    return {gold_study[key]: names for key, names in zip(keys, findings)}
