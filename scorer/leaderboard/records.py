"""What the store records: a scored result or a failure, checked field by field and turned into
one row. Every problem is a HostError naming the field (and, from the CLI, the file)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from scorer.errors import HostError
from scorer.files import read_file
from scorer.leaderboard.schema import GROUPS

if TYPE_CHECKING:
    from scorer.leaderboard.store import Entry

SCORED, FAILED = "scored", "failed"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LINK = re.compile(r"https?://\S+")
Scores = tuple[float | None, ...]  # kappa, lower, upper for each of GROUPS, in schema.SCORE_COLUMNS order


@dataclass(frozen=True)
class Record:
    """One row of the store, ready to insert."""

    identity: str
    submitter: str
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


NO_SCORES: Scores = (None,) * (3 * len(GROUPS))


# --- the entry: who submitted what, and when ----------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_iso(value: object, field: str) -> str:
    """An ISO 8601 date or datetime as `YYYY-MM-DDTHH:MM:SSZ` in UTC (no zone: taken as UTC)."""
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
        raise HostError(
            f"{field}: expected an ISO 8601 date or datetime such as 2018-11-30 or "
            f"2018-11-30T19:48:12Z, found {value!r}"
        )
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HostError(f"{field}: expected text, found {type(value).__name__} {value!r}")
    return " ".join(value.split()) or None  # one line: a table cell


def check_entry(entry: Entry) -> tuple[str, str | None, str | None, str | None, str | None, str | None]:
    """(submitter, model, institution, link, submitted or None, content_sha256 or None), tidied."""
    submitter = _text(entry.submitter, "submitter")
    if not submitter:
        raise HostError("submitter: expected the submitter's name, found nothing")
    link = _text(entry.link, "link")
    if link is not None and not _LINK.fullmatch(link):
        raise HostError(f"link: expected an http:// or https:// address without spaces, found {link!r}")
    submitted = None if entry.submitted is None else utc_iso(entry.submitted, "submission date")
    return (
        submitter,
        _text(entry.model, "model"),
        _text(entry.institution, "institution"),
        link,
        submitted,
        _sha256(entry.content_sha256, "content_sha256"),
    )


def _sha256(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value.strip().lower()):
        raise HostError(f"{field}: expected a SHA-256 digest (64 hexadecimal digits), found {value!r}")
    return value.strip().lower()


def identity(status: str, submitter: str, content: str | None, submitted: str | None, what: object) -> str:
    """What makes two records the same submission: who, which content (the bundle or predictions
    hash) and what came of it (the scores, or the failure's reason). Without a content hash the
    submission date stands in for it, so two different undated failures stay apart only by date."""
    key = [status, submitter, content, submitted if content is None else None, what]
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- a scored result ----------------------------------------------------------------------------


def _path(*parts: str) -> str:
    return ".".join(parts)


def kappa_value(value: object, field: str) -> float | None:
    """A kappa or interval bound: a number in [-1, 1], or null (undefined)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HostError(f"{field}: expected a number between -1 and 1 or null, found {value!r}")
    number = float(value)
    if not math.isfinite(number) or not -1.0 <= number <= 1.0:
        raise HostError(f"{field}: expected a number between -1 and 1 or null, found {value!r}")
    return number


def _object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        found = "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise HostError(f"{field}: expected a JSON object, found {found}")
    return value


def _field(document: dict, key: str, where: str) -> object:
    if key not in document:
        raise HostError(f"{_path(where, key) if where else key}: missing")
    return document[key]


def from_result(result: object, entry: Entry, *, source: str = "result", scored: str | None = None) -> Record:
    """A `mura score --json` result as a row. `source` names the result in messages."""
    from scorer.pipeline import RESULT_FORMAT  # imported here: only recording needs the scorer

    def fail(exc: HostError) -> HostError:
        return HostError(f"{source}: {exc.message}")

    if not isinstance(result, dict):
        raise HostError(f"{source}: expected a JSON object written by `mura score --json`, "
                        f"found {type(result).__name__}")  # fmt: skip
    try:
        found = result.get("format")
        if found != RESULT_FORMAT:
            raise HostError(
                f"format: expected {RESULT_FORMAT!r} (a result written by `mura score --json FILE`), "
                f"found {'nothing' if found is None else repr(found)}"
            )
        scores = tuple(
            kappa_value(_field(result, f"{group}_{part}", ""), f"{group}_{part}")
            for group in GROUPS
            for part in ("Mean", "Lower", "Upper")
        )
        gold = _object(_field(result, "gold", ""), "gold")
        raters = _field(gold, "gold_raters", "gold")
        if not isinstance(raters, list) or not all(isinstance(r, str) and r for r in raters):
            raise HostError(f"gold.gold_raters: expected a list of rater names, found {raters!r}")
        radiologists = []
        for name, groups in _object(_field(result, "radiologists", ""), "radiologists").items():
            groups = _object(groups, _path("radiologists", name))
            for group in GROUPS:
                where = _path("radiologists", name, group)
                record = _object(_field(groups, group, _path("radiologists", name)), where)
                radiologists.append((name, group, *(
                    kappa_value(_field(record, key, where), _path(where, key))
                    for key in ("kappa", "kappa_lower", "kappa_upper")
                )))  # fmt: skip
        inputs = _object(result.get("inputs", {}), "inputs")
        hashes = {}
        for name in ("gold", "predictions"):
            if name in inputs:
                item = _object(inputs[name], _path("inputs", name))
                hashes[name] = _sha256(item.get("sha256"), _path("inputs", name, "sha256"))
        submitter, model, institution, link, submitted, content = check_entry(entry)
    except HostError as exc:
        raise fail(exc) from None
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
    return Record(
        identity=identity(SCORED, submitter, content, submitted, what),
        submitter=submitter,
        model=model,
        institution=institution,
        link=link,
        submitted=submitted or now_iso(),
        scored=scored or now_iso(),
        status=SCORED,
        reason=None,
        scores=scores,
        radiologists=tuple(radiologists),
        gold_raters=tuple(raters),
        gold_sha256=hashes.get("gold"),
        content_sha256=content,
        result_json=body,
    )


def from_failure(reason: object, entry: Entry, *, scored: str | None = None) -> Record:
    """A submission that could not be scored, with the reason (one line)."""
    text = _text(reason, "reason")
    if not text:
        raise HostError("reason: expected why the submission failed, found nothing")
    submitter, model, institution, link, submitted, content = check_entry(entry)
    return Record(
        identity=identity(FAILED, submitter, content, submitted, text),
        submitter=submitter,
        model=model,
        institution=institution,
        link=link,
        submitted=submitted or now_iso(),
        scored=scored or now_iso(),
        status=FAILED,
        reason=text,
        scores=NO_SCORES,
        content_sha256=content,
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
