"""What the store records: a scored result or a failure, checked field by field and turned into
one row. Every problem is a HostError naming the field (and, from the CLI, the file or the option)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TypeVar

from scorer.errors import HostError, shorten
from scorer.files import read_file
from scorer.leaderboard.schema import CODALAB, KIT
from scorer.paths import GROUPS

SCORED, FAILED = "scored", "failed"
DETAILS = ("model", "institution", "link")  # what re-adding the same record may correct
_SHA256 = re.compile(r"[0-9a-f]{64}")
LINK = re.compile(r"https?://\S+")
# Text a table cell can hold: no control characters (terminal escapes, NUL) and no lone
# surrogates (not UTF-8: SQLite cannot store them). Whitespace is folded to single spaces first.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
T = TypeVar("T")
Scores = tuple[float | None, ...]  # kappa, lower, upper for each of GROUPS, in schema.SCORE_COLUMNS order

# Submission dates are stored as `YYYY-MM-DDTHH:MM:SSZ`, UTC, within these years: a date outside
# them is a typo (0500 for 2005), and a four-digit year keeps the text sortable.
FIRST_YEAR, LAST_YEAR = 1970, 9999
STORED_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Record:
    """One row of the store, ready to insert."""

    identity: str
    submitter: str | None  # None: anonymous (only a CodaLab entry without a user name)
    model: str | None
    institution: str | None
    link: str | None
    submitted: str  # ISO 8601 UTC
    scored: str  # ISO 8601 UTC
    status: str  # SCORED or FAILED
    reason: str | None
    scores: Scores
    radiologists: tuple[tuple[str, str, float | None, float | None, float | None], ...] = ()
    gold_raters: tuple[str, ...] | None = None
    gold_sha256: str | None = None
    content_sha256: str | None = None
    result_json: str | None = None
    # Which of DETAILS the entry gave (None: not given): recording the same submission again
    # sets these on the stored row (an empty one clears it) and keeps the others.
    given: frozenset[str] = frozenset(DETAILS)
    note: str | None = None  # what followed the institution in a CodaLab description
    source: str = KIT  # where the scores come from: schema.KIT (`mura score`) or schema.CODALAB


NO_SCORES: Scores = (None,) * (3 * len(GROUPS))


class EntryError(HostError):
    """A field of an Entry is invalid; `field` names it (an Entry attribute), so that the CLI
    can name its option instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# --- the entry: who submitted what, and when ----------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Who submitted, what and when; everything but the submitter is optional. Recording the
    same submission again sets the model, institution and link given (an empty one clears it)
    and keeps those that are None."""

    submitter: str | None  # None only for an anonymous CodaLab entry (from_import)
    model: str | None = None
    institution: str | None = None
    link: str | None = None
    submitted: str | None = None  # ISO 8601 date or datetime of the submission; None: now (UTC)
    content_sha256: str | None = None  # hash of the submitted bundle / predictions; None: taken
    # from result["inputs"]["predictions"]["sha256"] when present


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime(STORED_TIME)


def utc_iso(value: object, field: str) -> str:
    """An ISO 8601 date or datetime as `YYYY-MM-DDTHH:MM:SSZ` in UTC (no zone: taken as UTC),
    within FIRST_YEAR..LAST_YEAR."""
    expected = (
        f"{field}: expected an ISO 8601 date or datetime from {FIRST_YEAR} to {LAST_YEAR} (such as "
        "2018-11-30 or 2018-11-30T19:48:12Z)"
    )
    text = value.strip() if isinstance(value, str) else None
    parsed: datetime | None = None
    if text:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                parsed = datetime(day.year, day.month, day.day)
            else:  # Python 3.10's fromisoformat does not read a trailing Z
                parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
        except ValueError:
            parsed = None
    if parsed is None:
        raise HostError(f"{expected}, found {value!r}")
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            beyond = "after year 9999" if parsed.year > 1 else "before year 1"
            raise HostError(f"{expected}, found {value!r}, which is {beyond} in UTC") from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise HostError(f"{expected}, found {value!r} (year {parsed.year} in UTC)")
    return parsed.isoformat(timespec="seconds") + "Z"


def stored_time(text: object) -> datetime | None:
    """A stored `YYYY-MM-DDTHH:MM:SSZ` time, or None when the text is not one (a store edited by
    hand, or written by an older kit)."""
    if not isinstance(text, str) or len(text) != 20 or text[10] != "T" or text[-1] != "Z":
        return None
    try:
        return datetime.fromisoformat(text[:-1])
    except ValueError:
        return None


def unix_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(STORED_TIME)


def shown(value: object) -> str:
    """How an unexpected JSON value reads in a message: its type and the start of its repr."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def text(value: object, field: str, *, lenient: bool = False) -> str | None:
    """Participant- or organiser-typed text for one table cell: whitespace folded to single
    spaces; None for nothing. Refuses what a cell cannot show (control characters, lone
    surrogates); `lenient` replaces them with U+FFFD instead (a failure's reason, which may quote
    a participant's output, is recorded whatever it holds)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise HostError(f"{field}: expected text, found {shown(value)}")
    folded = " ".join(value.split())
    bad = _UNPRINTABLE.search(folded)
    if bad and lenient:
        return _UNPRINTABLE.sub("\ufffd", folded)
    if bad:
        raise HostError(
            f"{field}: expected printable text, found the control character or invalid "
            f"character U+{ord(bad.group()):04X} in {folded[:80]!r}"
        )
    return folded or None


def check_entry(
    entry: Entry, *, anonymous: bool = False
) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None]:
    """(submitter, model, institution, link, submitted or None, content_sha256 or None), tidied.
    A bad field is an EntryError (a HostError) naming it. With `anonymous` (a CodaLab entry
    without a user name) the submitter may be None."""
    submitter = _entry_field("submitter", text, entry.submitter, "submitter")
    if not submitter and not anonymous:
        raise EntryError("submitter", "submitter: expected the submitter's name, found nothing")
    link = _entry_field("link", text, entry.link, "link")
    if link is not None and not LINK.fullmatch(link):
        raise EntryError(
            "link", f"link: expected an http:// or https:// address without spaces, found {link!r}"
        )
    submitted = entry.submitted
    return (
        submitter,
        _entry_field("model", text, entry.model, "model"),
        _entry_field("institution", text, entry.institution, "institution"),
        link,
        None if submitted is None else _entry_field("submitted", utc_iso, submitted, "submission date"),
        _entry_field("content_sha256", _sha256, entry.content_sha256, "content_sha256"),
    )


def _entry_field(field: str, check: Callable[[object, str], T], value: object, label: str) -> T:
    try:
        return check(value, label)
    except HostError as exc:
        raise EntryError(field, exc.message) from None


def given(entry: Entry) -> frozenset[str]:
    """The DETAILS an entry gives (an empty text counts: it clears the field)."""
    return frozenset(name for name in DETAILS if getattr(entry, name) is not None)


def _sha256(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value.strip().lower()):
        raise HostError(f"{field}: expected a SHA-256 digest (64 hexadecimal digits), found {value!r}")
    return value.strip().lower()


def identity(
    status: str, submitter: str | None, content: str | None, submitted: str | None, what: object
) -> str:
    """What makes two records the same submission: who, which content (the bundle or predictions
    hash) and what came of it (the scores, or the failure's reason). Without a content hash the
    submission date stands in for it, so two different undated failures stay apart only by date.
    The model, institution and link are not part of it: they may be corrected."""
    key = [status, submitter, content, submitted if content is None else None, what]
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- a scored result ----------------------------------------------------------------------------


def _path(*parts: str) -> str:
    return ".".join(parts)


def kappa_value(value: object, field: str, *, nan_is_null: bool = False, clip: bool = False) -> float | None:
    """A kappa or interval bound: a number in [-1, 1], or null (undefined). As a CodaLab dump
    holds them: `nan_is_null` reads NaN (or infinity) as undefined; `clip` brings a bound outside
    [-1, 1] inside (the official script's asymptotic interval is not clipped; a kappa cannot
    leave [-1, 1])."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HostError(f"{field}: expected a number between -1 and 1 or null, found {_repr(value)}")
    if isinstance(value, float) and not math.isfinite(value) and nan_is_null:
        return None
    if clip and (not isinstance(value, float) or math.isfinite(value)):
        value = min(1, max(-1, value))
    # Compared before float(): an int of 400 digits has no float. NaN fails it too.
    if not -1 <= value <= 1:
        raise HostError(f"{field}: expected a number between -1 and 1 or null, found {_repr(value)}")
    return float(value)


def _repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def json_object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise HostError(f"{field}: expected a JSON object, found {shown(value)}")
    return value


def _field(document: dict, key: str, where: str) -> object:
    if key not in document:
        raise HostError(f"{_path(where, key) if where else key}: missing")
    return document[key]


def _name(value: object, field: str) -> str:
    name = text(value, field)
    if not name:
        raise HostError(f"{field}: expected a name, found nothing")
    return name


def from_result(result: object, entry: Entry, *, source: str = "result", scored: str | None = None) -> Record:
    """A `mura score --json` result as a row. `source` names the result in messages about it
    (an EntryError, about the entry, does not)."""
    submitter, model, institution, link, submitted, content = check_entry(entry)
    if not isinstance(result, dict):
        raise HostError(
            f"{source}: expected a JSON object written by `mura score --json`, found {type(result).__name__}"
        )
    try:
        _check_format(result)
        scores = tuple(
            kappa_value(_field(result, f"{group}_{part}", ""), f"{group}_{part}")
            for group in GROUPS
            for part in ("Mean", "Lower", "Upper")
        )
        raters = _gold_raters(result)
        radiologists = _radiologists(result)
        inputs = json_object(result.get("inputs", {}), "inputs")
        hashes = _input_hashes(inputs)
    except HostError as exc:
        raise HostError(f"{source}: {exc.message}") from None
    content = content or hashes.get("predictions")
    # Where the files were is not what was scored: leave the paths out of the identity.
    what = {
        **result,
        "inputs": {k: {"sha256": v.get("sha256")} for k, v in inputs.items() if isinstance(v, dict)},
    }
    try:
        body = json.dumps(result, separators=(",", ":"), allow_nan=False)
    except ValueError:  # `mura score` writes null for what is undefined, never NaN
        raise HostError(f"{source}: holds NaN or Infinity, which `mura score --json` never writes") from None
    checked = (submitter, model, institution, link, submitted, content)
    return _row(
        SCORED,
        checked,
        what,
        scored=scored,
        scores=scores,
        radiologists=radiologists,
        gold_raters=raters,
        gold_sha256=hashes.get("gold"),
        result_json=body,
        given=given(entry),
    )


def _check_format(result: dict) -> None:
    """The result says it was written by this kit's `mura score --json`, in its format."""
    from scorer.pipeline import RESULT_FORMAT  # imported here: only recording needs the scorer

    found = result.get("format")
    if found != RESULT_FORMAT:
        raise HostError(
            f"format: expected {RESULT_FORMAT!r} (a result written by `mura score --json FILE`), "
            f"found {'nothing' if found is None else _repr(found)}"
        )


def _gold_raters(result: dict) -> tuple[str, ...]:
    """The raters whose majority was the gold standard (result["gold"]["gold_raters"])."""
    gold = json_object(_field(result, "gold", ""), "gold")
    raters = _field(gold, "gold_raters", "gold")
    if not isinstance(raters, list) or not all(isinstance(r, str) and r for r in raters):
        raise HostError(f"gold.gold_raters: expected a list of rater names, found {_repr(raters)}")
    return tuple(_name(r, "gold.gold_raters") for r in raters)


def _radiologists(result: dict) -> tuple[tuple[str, str, float | None, float | None, float | None], ...]:
    """(name, group, kappa, lower, upper) of each radiologist scored against the gold standard,
    for every group."""
    rows = []
    for key, groups in json_object(_field(result, "radiologists", ""), "radiologists").items():
        name = _name(key, "radiologists")
        groups = json_object(groups, _path("radiologists", name))
        for group in GROUPS:
            where = _path("radiologists", name, group)
            record = json_object(_field(groups, group, _path("radiologists", name)), where)
            kappas = (
                kappa_value(_field(record, key, where), _path(where, key))
                for key in ("kappa", "kappa_lower", "kappa_upper")
            )
            rows.append((name, group, *kappas))
    return tuple(rows)


def _input_hashes(inputs: dict) -> dict[str, str | None]:
    """The sha256 of the gold and predictions files the result names (those it names)."""
    hashes = {}
    for name in ("gold", "predictions"):
        if name in inputs:
            item = json_object(inputs[name], _path("inputs", name))
            hashes[name] = _sha256(item.get("sha256"), _path("inputs", name, "sha256"))
    return hashes


def from_failure(reason: object, entry: Entry, *, scored: str | None = None) -> Record:
    """A submission that could not be scored, with the reason (one short line: the participant
    reads it)."""
    checked = check_entry(entry)
    why = shorten(text(reason, "reason", lenient=True) or "")
    if not why:
        raise HostError("reason: expected why the submission failed, found nothing")
    return _row(FAILED, checked, why, scored=scored, reason=why, scores=NO_SCORES, given=given(entry))


def from_import(
    entry: Entry,
    scores: Scores,
    what: object,
    *,
    scored: str,
    dated: bool = True,
    note: str | None = None,
    source: str = KIT,
) -> Record:
    """A scored entry of another platform's leaderboard export (a CodaLab dump, Codabench's
    results), checked like an `add` entry. `what` is what was scored, as the export holds it;
    with `dated` the submission date is part of the identity too (the export has no other mark
    of the submission). An import states every detail: a second one corrects (or clears) them.
    `source` says whose intervals these are (schema.CODALAB: the official script's); only a
    CodaLab entry may be anonymous (the MURA page showed entries without a user name)."""
    submitter, model, institution, link, submitted, content = check_entry(entry, anonymous=source == CODALAB)
    checked = (submitter, model, institution, link, submitted or now_iso(), content)
    return _row(SCORED, checked, what, scored=scored, dated=dated, scores=scores, note=note, source=source)


def _row(
    status: str,
    checked: tuple[str | None, str | None, str | None, str | None, str | None, str | None],
    what: object,
    *,
    scored: str | None,
    dated: bool = True,
    **fields,
) -> Record:
    """A row from check_entry's fields and the rest of its `fields`: its identity is the status,
    the submitter, the content hash, the submission date (with `dated`) and `what` was scored
    (or why it failed)."""
    submitter, model, institution, link, submitted, content = checked
    fields.setdefault("reason", None)
    return Record(
        identity=identity(status, submitter, content, submitted if dated else None, what),
        submitter=submitter,
        model=model,
        institution=institution,
        link=link,
        submitted=submitted or now_iso(),
        scored=scored or now_iso(),
        status=status,
        content_sha256=content,
        **fields,
    )


# --- reading the organiser's JSON files ---------------------------------------------------------


def load_json(path: str | Path, what: str) -> object:
    """A JSON file's content; a HostError naming the file when it cannot be read or parsed."""
    path = Path(path)
    data = read_file(path, what, "a JSON file")
    if not data.strip():
        raise HostError(f"{what} {path} is empty; expected a JSON document")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HostError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HostError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # arrays or objects nested thousands deep: no result or dump is
        raise HostError(f"{what} {path} nests JSON too deeply to read; expected a JSON document") from None
