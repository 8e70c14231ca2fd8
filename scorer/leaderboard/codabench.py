"""Importing a Codabench competition's results export (`GET /api/competitions/<id>/results.json`,
as an admin) written for a competition made by `mura codabench bundle`.

The export holds one leaderboard per phase, `"<leaderboard> - <phase>(<phase id>)"`; in it each
submission on the board, `"<owner>-<submission id>"`, has `fact_sheet_answers` (model,
institution, link: scorer.codabench.layout.FACT_SHEET) and one value per column,
`"<task>(<task id>)-<column title>"`: a number, a number as text (Codabench keeps scores as
decimals), or "" where the scoring program wrote no score (an undefined kappa). The export has no
dates; the submissions export (`GET /api/submissions/?phase=<id>&format=csv`) has each one's
`created_when`. The rules are import-codalab's: an entry that cannot be read is skipped and
reported, and a second import adds nothing.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from scorer.codabench.layout import COLUMNS, FACT_SHEET, PARTS, TEST
from scorer.errors import HostError
from scorer.files import read_file
from scorer.leaderboard import records
from scorer.leaderboard.codalab import Skipped
from scorer.leaderboard.records import Entry, EntryError, Record
from scorer.paths import GROUPS

_BOARD = re.compile(r"^(?P<board>.*) - (?P<phase>.*)\((?P<id>\d+)\)$")
_SUBMISSION = re.compile(r"^(?P<owner>.+)-(?P<id>\d+)$")
_COLUMN = re.compile(r"^(?P<task>.*)\((?P<id>\d+)\)-(?P<title>[^-]*)$")
FACT_SHEET_ANSWERS = "fact_sheet_answers"
TITLES = {c.title: c.key for c in COLUMNS}


def choose_board(document: object, path: Path, phase: str | None) -> tuple[str, dict]:
    """The leaderboard of `phase` (default: the only one, else the test phase)."""
    if not isinstance(document, dict) or not document:
        raise HostError(
            f"Codabench results {path}: expected a JSON object with one leaderboard per phase "
            f'("Results - Test(12)": {{...}}), found {records.shown(document)}'
        )
    boards = {}
    for title, board in document.items():
        match = _BOARD.match(title)
        if match is None or not isinstance(board, dict):
            raise HostError(
                f'Codabench results {path}: {title!r}: expected "<leaderboard> - <phase>(<phase id>)" '
                f"holding an object of submissions, found {records.shown(board)}"
            )
        boards[match["phase"]] = (title, board)
    wanted = phase or (next(iter(boards)) if len(boards) == 1 else TEST)
    if wanted not in boards:
        raise HostError(
            f"Codabench results {path}: no leaderboard of the phase {wanted!r}; its phases are "
            f"{', '.join(map(repr, boards))}: choose one with --phase"
        )
    return boards[wanted]


def read_dates(path: Path) -> dict[str, str]:
    """Codabench's submissions export (CSV): submission id -> its `created_when`, stored form."""
    data = read_file(path, "submissions export", "a CSV file")
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HostError(f"submissions export {path}: not a readable CSV file ({exc})") from None
    if not rows or not {"id", "created_when"} <= set(rows[0]):
        found = ", ".join(rows[0]) if rows else "no rows"
        raise HostError(
            f"submissions export {path}: expected the columns id and created_when (Codabench's "
            f"/api/submissions/?phase=N&format=csv), found {found}"
        )
    dates = {}
    for line, row in enumerate(rows, start=2):
        dates[row["id"].strip()] = records.utc_iso(row["created_when"], f"{path} line {line}: created_when")
    return dates


def columns(item: dict, key: str) -> dict[str, object]:
    """An entry's values by the kit's column key; a column of another task twice is an error."""
    found: dict[str, object] = {}
    for name, value in item.items():
        match = _COLUMN.match(name) if name != FACT_SHEET_ANSWERS else None
        if match is None or match["title"] not in TITLES:
            continue
        column = TITLES[match["title"]]
        if column in found:
            raise HostError(f"{key}: two tasks' {match['title']!r} columns; import a phase with one task")
        found[column] = value
    return found


def score(value: object, field: str) -> float | None:
    """A column's value: a number or decimal text; "" or null is no score (an undefined kappa)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise HostError(f"{field}: expected a number, found {value[:40]!r}") from None
    return records.kappa_value(value, field, nan_is_null=True)


def read_item(key: str, item: object, dates: dict[str, str] | None, scored: str) -> Record:
    """One submission of the board as a row; a HostError names the field and the reason."""
    match = _SUBMISSION.match(key)
    if match is None:
        raise HostError(f"{key!r}: expected <owner>-<submission id>")
    owner, sid = match["owner"], match["id"]
    item = records.json_object(item, key)
    values = columns(item, key)
    if COLUMNS[0].key not in values:
        raise HostError(f"{key}: no {COLUMNS[0].title!r} column")
    scores = tuple(
        score(values.get(f"{group}_{part}"), f"{key}: {group}_{part}") for group in GROUPS for part in PARTS
    )
    answers = item.get(FACT_SHEET_ANSWERS) or {}
    answers = records.json_object(answers, f"{key}: {FACT_SHEET_ANSWERS}")
    details = [records.text(answers.get(q), f"{key}: {FACT_SHEET_ANSWERS}.{q}") for q in FACT_SHEET]
    if dates is not None and sid not in dates:
        raise HostError(f"{key}: submission {sid} is not in the submissions export")
    entry = Entry(owner, *details, submitted=None if dates is None else dates[sid])
    what = {"codabench": int(sid), "scores": scores}
    try:
        # The Codabench submission id marks it: its date (absent without --submissions) need not.
        return records.from_import(entry, scores, what, scored=scored, dated=False)
    except EntryError as exc:
        field = FACT_SHEET_ANSWERS + "." + exc.field if exc.field in FACT_SHEET else exc.field
        raise HostError(f"{key}: {field}: {exc.message}") from None


def read_results(
    path: str | Path, *, phase: str | None = None, submissions: Path | None = None
) -> tuple[list[Record], list[Skipped], str]:
    """The chosen phase's entries as rows, those skipped with the reason, and the board's title.
    A file that is not such an export (or has none of the kit's columns) is a HostError."""
    path = Path(path)
    title, board = choose_board(records.load_json(path, "Codabench results"), path, phase)
    dates = read_dates(submissions) if submissions is not None else None
    if board and not any(columns(item, key) for key, item in board.items() if isinstance(item, dict)):
        raise HostError(
            f"Codabench results {path}: {title!r} has none of the columns `mura codabench bundle` "
            f"writes ({COLUMNS[0].title!r}, ...); export the results of a competition it made"
        )
    scored = records.now_iso()
    rows, skipped = [], []
    for index, (key, item) in enumerate(board.items()):
        try:
            rows.append(read_item(key, item, dates, scored))
        except HostError as exc:
            owner = _SUBMISSION.match(key)
            skipped.append(Skipped(index, owner["owner"] if owner else None, exc.message))
    return rows, skipped, title
