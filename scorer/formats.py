"""Reading the kit's CSV files, with the rules in one place.

All files are header-less, comma-separated text (MURA's official files), split into fields as
RFC 4180 says, by Python's csv module (pandas, which the official script read files with, splits
them the same way): a quoted field is one field, commas and all, and `"path",1` is the row
`path,1`. Fields are stripped of blanks; blank lines are skipped. No field holds a line break
(no study path does: a quote left open is reported on the line that opens it).

A million-row file is read in bulk: a plain file (ASCII, no quote, no blank but the line ends,
as many fields on every row: a file to the contract) is cut at its commas with str.split, which
gives the csv module's fields at C speed, and the readers check and convert a column at a time
(`Table`); any other file goes through the csv module. Each rule and message is written once:
a check runs on whole columns, and only when it fails are rows gone through to say where.

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
from typing import NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from scorer.errors import HostError, ParticipantError, ScoringError, examples, hide_labels, note, shorten
from scorer.files import MiB, read_file
from scorer.paths import normalize_studies, study_keys, study_types

BOM = b"\xef\xbb\xbf"
BINARY = ("0", "1")
BLANK = ((), ("",))  # the fields of a blank line
PREDICTION_FORM = "`study_path/,0|1`, e.g. `MURA-v1.1/valid/XR_WRIST/patient11185/study1/,1`"
# A participant's file: output.csv of MURA's 207 test studies is about 12 KB, of a million
# studies about 60 MB.
PARTICIPANT_FILE_LIMIT = 64 * MiB
TOO_LARGE_ADVICE = "write one short line per study and nothing else"
FIELD_WIDTH = 60  # characters of a file's value shown in a message


class Row(NamedTuple):
    line: int  # 1-based line number in the file (of the row's start)
    fields: tuple[str, ...]


class Table:
    """A CSV file's non-blank rows as the readers take them apart: the line each starts on and,
    when every row has as many fields (`width`; a file to the contract), all the fields row after
    row in one list, from which a reader takes a column at a time. Row objects (`rows`) are made
    for messages, and hold the rows when their widths differ (`width` 0)."""

    def __init__(self, lines: NDArray[np.intp], width: int, fields: list[str], rows: list[Row] | None = None):
        self.lines = lines  # 1-based, one per row
        self.width = width
        self.fields = fields  # fields[i * width + j]: field j of row i
        self._rows = rows

    @classmethod
    def of_rows(cls, rows: list[Row]) -> Table:
        lines = np.array([row.line for row in rows], dtype=np.intp)
        widths = {len(row.fields) for row in rows}
        if len(widths) != 1:
            return cls(lines, 0, [], rows)
        return cls(lines, widths.pop(), list(chain.from_iterable(row.fields for row in rows)), rows)

    def __len__(self) -> int:
        return len(self.lines)

    def column(self, j: int) -> list[str]:
        return self.fields[j :: self.width]

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = list(map(Row, self.lines.tolist(), zip(*[iter(self.fields)] * self.width)))
        return self._rows

    def first(self) -> Row:
        if self._rows is not None:
            return self._rows[0]
        return Row(int(self.lines[0]), tuple(self.fields[: self.width]))

    def rest(self) -> Table:
        """The rows after the first (a header)."""
        if not self.width:
            return Table.of_rows(self.rows[1:])
        return Table(self.lines[1:], self.width, self.fields[self.width :])

    def widths(self) -> list[int]:
        """The numbers of fields the rows have, smallest first."""
        return [self.width] if self.width else sorted({len(row.fields) for row in self.rows})


def read_rows(path: str | Path, *, what: str, participant: bool) -> list[Row]:
    """The non-blank lines of a CSV file split into stripped fields.

    `what` names the file in messages ("predictions file", "gold file").
    """
    return read_table(path, what=what, participant=participant).rows


def read_table(path: str | Path, *, what: str, participant: bool) -> Table:
    """read_rows as a Table."""
    error: type[ScoringError] = ParticipantError if participant else HostError
    path = Path(path)
    limit = PARTICIPANT_FILE_LIMIT if participant else None
    data = read_file(path, what, "a CSV file", error, limit=limit, advice=TOO_LARGE_ADVICE)

    bom = data.startswith(BOM)
    text = _decode(data[len(BOM) :] if bom else data, what, error)
    if "\x00" in text:
        raise error(f"{what} contains NUL bytes: it looks binary; expected a text CSV file")
    if participant:
        _note_windows_habits(what, bom, text.count("\r\n") if "\r" in text else 0)
    found = "0 bytes" if not data else "only blank lines"
    del data  # the text alone from here: a large file is held once

    table = _split_plain(text)
    if table is None:
        table = Table.of_rows([row for row in _split(text, what, error) if row.fields not in BLANK])
    if not len(table):
        raise error(f"{what} {path} is empty: expected one CSV line per entry, found {found}")
    return table


def _decode(data: bytes, what: str, error: type[ScoringError]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} cannot be "
            "decoded; expected UTF-8 (study paths are plain ASCII); re-save the file as UTF-8"
        ) from None


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


def _split_plain(text: str) -> Table | None:
    """What `_split` gives for a plain file, split at C speed: ASCII, no quote, no blank but the
    line ends (CRLF or LF), every row with as many fields. The csv module would cut each of its
    lines at every comma, a blank line is an empty one, and no field needs stripping. None for
    any other file (`_split` reads it)."""
    if not text.isascii() or '"' in text:
        return None
    if "\r" in text:  # CRLF endings; a CR anywhere else is for the csv module to judge
        text = text.replace("\r\n", "\n")
    shape = _shape(text.encode("ascii"))
    if shape is None:
        return None
    rows, width, lines = shape
    if not rows.size:
        return Table(rows, 1, [])
    fields = _fields(text if rows.size == lines else _without_empty_lines(text))
    if len(fields) != rows.size * width:
        return None
    return Table(rows, width, fields)


def _shape(data: bytes) -> tuple[NDArray[np.intp], int, int] | None:
    """The lines that are rows (not empty; 1-based), their number of fields and the number of
    lines, when every row has as many fields, no line is longer than a csv field may be, and no
    character is a blank (or any control character) but the line feeds; else None."""
    text = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(text == ord("\n"))
    if np.count_nonzero(text <= ord(" ")) != ends.size:
        return None
    if data and not data.endswith(b"\n"):
        ends = np.append(ends, len(data))
    if not ends.size:
        return ends, 1, 0
    starts = np.concatenate(([0], ends[:-1] + 1))
    if (ends - starts).max() > csv.field_size_limit():
        return None
    rows = np.flatnonzero(ends > starts)
    commas = np.diff(np.searchsorted(np.flatnonzero(text == ord(",")), ends), prepend=0)[rows]
    if rows.size and commas.min() != commas.max():
        return None
    return rows + 1, int(commas[0]) + 1 if rows.size else 1, ends.size


def _without_empty_lines(text: str) -> str:
    return re.sub("\n\n+", "\n", text).lstrip("\n")


CHUNK = 1 << 22  # characters split at a time


def _fields(text: str) -> list[str]:
    """Every field of `text` (non-empty lines, no quote), row after row, split a chunk of lines at
    a time (one copy of a chunk, not of the whole text)."""
    fields: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + CHUNK) + 1 or len(text)
        fields += text[start:end].replace(",", "\n").split("\n")
        if text[end - 1] == "\n":
            fields.pop()
        start = end
    return fields


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


class Submitted(Sequence[Prediction]):
    """A participant's file as read, a Prediction per row, kept column by column: what `align`
    matches a million rows with."""

    def __init__(
        self, lines: NDArray[np.intp], studies: list[str], written: list[str], values: NDArray[np.float64]
    ):
        self.lines = lines
        self.studies = studies  # canonical (paths.normalize_study)
        self.written = written
        self.values = values

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, i: int) -> Prediction: ...
    @overload
    def __getitem__(self, i: slice) -> list[Prediction]: ...
    def __getitem__(self, i: int | slice) -> Prediction | list[Prediction]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Prediction(int(self.lines[i]), self.studies[i], self.written[i], float(self.values[i]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Submitted):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class SubmissionFile:
    """What a participant's two-column file holds: its name, form and value rule."""

    what: str
    form: str
    expected: str  # what the second field must be
    parse: Callable[[Sequence[str]], NDArray[np.float64] | None]  # the values, or None if one is not allowed
    hint: Callable[[list[str]], str]  # what to do, given the offending values

    def accept(self, value: str) -> bool:
        return self.parse([value]) is not None


def _binary_hint(values: list[str]) -> str:
    if any(_is_number(v) for v in values):
        return "threshold probabilities first (abnormal = 1 when p > 0.5)"
    return "write 0 for normal and 1 for abnormal"


def _binary(values: Sequence[str]) -> NDArray[np.float64] | None:
    """0.0/1.0 for `0`/`1`; None if any value is something else."""
    if not set(values) <= set(BINARY):
        return None
    return (np.frombuffer("".join(values).encode("ascii"), dtype=np.uint8) - ord("0")).astype(np.float64)


def _probabilities(values: Sequence[str]) -> NDArray[np.float64] | None:
    """Each value as Python's float() reads it; None if one is not a number from 0 to 1."""
    try:
        numbers = np.array(list(map(float, values)), dtype=np.float64)
    except ValueError:
        return None
    return numbers if ((numbers >= 0.0) & (numbers <= 1.0)).all() else None  # NaN fails both


PREDICTIONS = SubmissionFile("predictions file", PREDICTION_FORM, "0 or 1", _binary, _binary_hint)
PROBABILITIES = SubmissionFile(
    "probabilities file",
    "`study_path/,probability`, e.g. `MURA-v1.1/valid/XR_WRIST/patient11185/study1/,0.8312`",
    "a probability of abnormality between 0 and 1",
    _probabilities,
    lambda values: "write each study's probability of abnormality as a number from 0 to 1",
)


def read_predictions(path: str | Path, kind: SubmissionFile = PREDICTIONS) -> Submitted:
    """A submission's `output.csv` (`study_path/,0|1` per line, nothing else) or, with
    kind=PROBABILITIES, its per-study probabilities file (`study_path/,p`)."""
    what = kind.what
    table = read_table(path, what=what, participant=True)

    first = table.first()
    if len(first.fields) == 2 and _looks_like_header(first) and not kind.accept(first.fields[1]):
        header = shorten(repr(",".join(first.fields)), FIELD_WIDTH)
        raise ParticipantError(
            f"{what} line 1 looks like a header ({header}); expected no header, every line "
            f"{kind.form}; delete the first line"
        )
    if table.widths() != [2]:
        wrong = [row for row in table.rows if len(row.fields) != 2]
        counts = sorted({len(row.fields) for row in wrong})
        raise ParticipantError(
            f"{what}: expected 2 comma-separated fields on every line, {kind.form}; "
            f"found {'/'.join(map(str, counts))} fields on {len(wrong)} of {len(table)} lines "
            f"(lines {_lines(wrong)}); write exactly one study path and one value per line"
        )
    written = table.column(0)
    if "" in written:
        empty = [row for row in table.rows if not row.fields[0]]
        raise ParticipantError(
            f"{what}: expected a study path before the comma on every line; found none on "
            f"{len(empty)} lines (lines {_lines(empty)}); write {kind.form}"
        )
    values = kind.parse(table.column(1))
    if values is None:
        bad = [row for row in table.rows if not kind.accept(row.fields[1])]
        shown = list(dict.fromkeys(row.fields[1] for row in bad))
        raise ParticipantError(
            f"{what}: expected the second field to be {kind.expected} on every line; found other "
            f"values on {len(bad)} of {len(table)} lines (lines {_lines(bad)}: "
            f"{examples(map(repr, shown), width=FIELD_WIDTH)}); {kind.hint(shown)}"
        )
    return Submitted(table.lines, normalize_studies(written), written, values)


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
        return tuple(study_keys(self.studies))


def read_gold(path: str | Path, what: str = "gold file") -> RaterTable:
    """`study,label`, `study,Rad1,Rad2,Rad3` or `study,Rad1,...,RadK`; a header row is optional.

    Also reads a dataset's own `study,label` files (MURA's `*_labeled_studies.csv`)."""
    table = read_table(path, what=what, participant=False)

    header: tuple[str, ...] | None = None
    if _looks_like_header(table.first()):
        header, table = table.first().fields[1:], table.rest()
        if not len(table):
            raise HostError(f"{what} {path} has a header but no studies; expected one row per study")
    widths = table.widths()
    if len(widths) > 1 or widths[0] < 2:
        counts = {w: sum(1 for row in table.rows if len(row.fields) == w) for w in widths}
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

    votes = [_votes(table.column(j)) for j in range(1, k + 1)]
    if any(rater is None for rater in votes):
        bad = [row for row in table.rows if any(value not in BINARY for value in row.fields[1:])]
        # Where, not what: the row's other values are votes.
        column = next(i for i, value in enumerate(bad[0].fields[1:]) if value not in BINARY)
        raise HostError(
            f"{what} {path}: expected 0 or 1 in every rater column; found other values on "
            f"{len(bad)} rows (lines {_lines(bad)}; first: line {bad[0].line}, column {column + 2}, "
            f"rater {raters[column]})"
        )
    written = table.column(0)
    table = Table(table.lines, 1, written)  # the paths alone, for messages: the rest is in `votes`
    studies = normalize_studies(written)
    _check_unique(study_keys(studies), table, what, path)
    types = study_types(studies)
    if None in types:
        untyped = [row for row, t in zip(table.rows, types) if t is None]
        raise HostError(
            f"{what} {path}: expected every study path to contain its study type as an "
            f"XR_{{TYPE}} folder (e.g. MURA-v1.1/valid/XR_WRIST/patient11185/study1/); "
            f"found {len(untyped)} without one (lines {_lines(untyped)}, e.g. "
            f"{_shown(untyped[0].fields[0])})"
        )
    return RaterTable(str(path), tuple(studies), tuple(types), tuple(raters), np.stack(votes, axis=1))  # type: ignore[arg-type]


def _votes(column: list[str]) -> NDArray[np.int8] | None:
    """A rater's votes as 0/1; None if one is another value. Each is "0" or "1", one character:
    the votes joined, as bytes, less b"0"."""
    values = _binary(column)
    return None if values is None else values.astype(np.int8)


def _check_unique(keys: Sequence[str], table: Table, what: str, path: str | Path) -> None:
    """Each study key (paths.study_key) once: two rows whose paths differ only in the
    `_positive`/`_negative` suffix are the same study to the scorer."""
    hashes = np.sort(np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)))
    if not (hashes[1:] == hashes[:-1]).any():
        return  # no two hashes alike: no two keys alike
    seen: dict[str, int] = {}
    repeated: list[str] = []
    for key, line in zip(keys, table.lines.tolist()):
        if key in seen:
            repeated.append(f"{hide_labels(key)} (lines {seen[key]} and {line})")
        else:
            seen[key] = line
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
    table = read_table(path, what=what, participant=False)
    if "/" not in table.first().fields[0]:
        table = table.rest()  # a header
        if not len(table):
            raise HostError(f"{what} {path} has a header but no rows")
    if table.widths() != [2]:
        wrong = [row for row in table.rows if len(row.fields) != 2]
        raise HostError(
            f"{what} {path}: expected 2 fields on every row, `study_path/,finding[;finding...]`; "
            f"found other counts on {len(wrong)} rows (lines {_lines(wrong)})"
        )
    column = table.column(1)
    parsed = {text: _findings(text) for text in set(column)}  # a few distinct values
    findings = list(map(parsed.__getitem__, column))
    if not all(map(_named, parsed.values())):
        bad = [row for row, names in zip(table.rows, findings) if not _named(names)]
        raise HostError(
            f"{what} {path}: expected one or more finding names separated by ';' (letters, digits, "
            f"space, _ . + -) after the study; found {_shown(bad[0].fields[1])} on line {bad[0].line}"
            f"{f' and {len(bad) - 1} more rows' if len(bad) > 1 else ''}"
        )
    keys = study_keys(table.column(0))
    _check_unique(keys, table, what, path)
    gold_study = dict(zip(study_keys(studies), studies))
    if not all(map(gold_study.__contains__, keys)):
        unknown = [row for row, key in zip(table.rows, keys) if key not in gold_study]
        raise HostError(
            f"{what} {path}: expected only studies of the gold file; found {len(unknown)} others "
            f"(lines {_lines(unknown)}, e.g. {_shown(unknown[0].fields[0])}); fix the paths "
            "or the gold file"
        )
    return {gold_study[key]: names for key, names in zip(keys, findings)}


def _findings(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(";") if f.strip())


def _named(findings: tuple[str, ...]) -> bool:
    return bool(findings) and all(map(STRATUM_NAME.match, findings))
