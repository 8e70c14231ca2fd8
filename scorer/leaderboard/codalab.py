"""Importing a CodaLab Worksheets competition dump (the JSON the competition daemon wrote and
the MURA page rebuilt its table from, SPEC §5).

Each `leaderboard[]` item gives `submission.{user_name, description, created}` and
`scores.{overall_mean, overall_lower, ..., wrist_upper}`. The description is split as the MURA
page's script did: the model name before the last `(`, the text inside it, a trailing link; what
the script dropped (text after the `)`) is kept, and a split that had to guess says why. An item
that cannot be read (no Unix time, no overall score, a score that is not a number) is skipped and
reported with the reason; a null user name is an anonymous entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import HostError
from scorer.leaderboard import records
from scorer.leaderboard.records import Entry, Record
from scorer.leaderboard.schema import CODALAB
from scorer.paths import GROUPS

# A link at the end, after a space or the `)` (the MURA page's script took the text from the
# last `http`); a `www.` address counts too and gets `http://` in front.
_LINK_AT_END = re.compile(r"(?:^|(?<=[\s)]))((?:https?://|www\.)\S+)$", re.IGNORECASE)
# What participants put in the parentheses instead of an institution: the model's kind.
_KIND = re.compile(r"(?:single|ensemble)(?:[ _-]?model)?", re.IGNORECASE)
_LEADING_SEPARATORS = " -–—,;:/|"  # `Densenet DI-MT (Single)-AI Squared-G4`
_LATEST_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z
_SHOWN = 60  # characters of a description quoted in a message


@dataclass(frozen=True)
class Description:
    model: str | None
    institution: str | None
    link: str | None
    note: str | None = None  # text after the institution's `)`
    guess: str | None = None  # why the split is a guess; None when it is the MURA page's own


def parse_description(text: str | None) -> Description:
    """`base-comb2-xuan-v3(ensemble) (jzhang Availink) http://x.ai` -> model
    `base-comb2-xuan-v3(ensemble)`, institution `jzhang Availink`, link `http://x.ai`: the text
    before the last parenthesised group, the text inside it (as the MURA page's script did, even
    when that is the model's kind, `(ensemble)`), and a trailing link.

    Nothing is dropped; where the page's split lost text or was ambiguous, `guess` says what was
    done instead:
    - text after the `)`: the institution when the parentheses hold the model's kind
      (`ty101(single model)CCLab` -> `ty101(single model)`, `CCLab`), else a note;
    - no parentheses, or unbalanced ones: all of it is the model name (the page showed the user
      name for `densenet169_v2/single model`);
    - nested parentheses: the outer ones hold the institution;
    - a `www.` link: taken as `http://www.`.
    """
    rest = " ".join((text or "").split())
    guesses = []
    link = None
    match = _LINK_AT_END.search(rest)
    if match:
        link, rest = match.group(1), rest[: match.start()].rstrip()
        if not link.lower().startswith("http"):
            guesses.append(f"{_quoted(link)} taken as the link http://{link}")
            link = f"http://{link}"
    if not rest:
        return Description(None, None, link, None, _joined(guesses))
    closing = rest.rfind(")")
    opening = _matching_open(rest, closing)
    if opening is None or "(" in rest[closing + 1 :]:
        balanced = "(" not in rest and ")" not in rest
        guesses.insert(
            0, f"{'no' if balanced else 'unbalanced'} parentheses: all of it taken as the model name"
        )
        return Description(rest, None, link, None, _joined(guesses))
    model = rest[:opening].strip() or None
    inside = rest[opening + 1 : closing].strip() or None
    after = rest[closing + 1 :].lstrip(_LEADING_SEPARATORS).rstrip() or None
    if inside and "(" in inside:
        guesses.insert(0, "nested parentheses: the outer ones taken as the institution's")
    if after is None:
        return Description(model, inside, link, None, _joined(guesses))
    if inside and _KIND.fullmatch(inside):
        guesses.insert(0, f"the parentheses hold the model's kind: {_quoted(after)} taken as the institution")
        return Description(rest[: closing + 1].strip(), after, link, None, _joined(guesses))
    guesses.insert(0, f"{_quoted(after)} after the institution's ')' kept as a note")
    return Description(model, inside, link, after, _joined(guesses))


def _matching_open(text: str, closing: int) -> int | None:
    """Where the `(` is that the `)` at `closing` closes; None for no `)` (-1) or no such `(`."""
    depth = 0
    for i in range(closing, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def _joined(guesses: list[str]) -> str | None:
    return "; ".join(guesses) or None


def _quoted(text: str) -> str:
    """A participant's text in a message, cut short: messages stay short whatever the input."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


@dataclass(frozen=True)
class Skipped:
    index: int
    user: str | None
    reason: str

    def line(self, source: str) -> str:
        who = f" (user {self.user!r})" if self.user else ""
        return f"{source}: leaderboard[{self.index}]{who}: {self.reason}; skipped"


@dataclass(frozen=True)
class Guessed:
    """An imported entry whose description was split by a guess (Description.guess)."""

    index: int
    record: Record
    description: str
    reason: str

    def line(self, source: str) -> str:
        r = self.record
        who = f" (user {r.submitter!r})" if r.submitter else " (anonymous)"
        parts = [("model", r.model), ("institution", r.institution), ("note", r.note), ("link", r.link)]
        split = ", ".join(f"{name} {_quoted(value)}" for name, value in parts if value is not None)
        return (
            f"{source}: leaderboard[{self.index}]{who}: guessed the split of {_quoted(self.description)}: "
            f"{self.reason}; read as {split}"
        )


def _score(scores: dict, key: str) -> float | None:
    """A score as the dump holds it: NaN for an undefined kappa (an invalid kappa, left off the
    board); an interval bound as the official script's asymptotic interval left it, unclipped."""
    bound = not key.endswith("_mean")
    return records.kappa_value(scores.get(key), f"scores.{key}", nan_is_null=True, clip=bound)


def read_item(item: object, index: int = 0) -> tuple[Record, Guessed | None]:
    """`leaderboard[index]` as a row, and how its description's split was guessed (None when it
    was not); a HostError names the field and the reason. A null or empty user name is an
    anonymous entry (the MURA page showed it)."""
    item = records.json_object(item, "item")
    submission = records.json_object(item.get("submission"), "submission")
    user = records.text(submission.get("user_name"), "submission.user_name")
    description = records.text(submission.get("description"), "submission.description")
    parsed = parse_description(description)
    created = submission.get("created")
    if (
        isinstance(created, bool)
        or not isinstance(created, (int, float))
        or not 0 <= created <= _LATEST_UNIX_TIME
    ):
        raise HostError(
            f"submission.created: expected a Unix time in seconds, found {records.shown(created)}"
        )
    scores = records.json_object(item.get("scores"), "scores")
    if "overall_mean" not in scores:
        raise HostError("scores.overall_mean: missing")
    values = tuple(
        _score(scores, f"{group.lower()}_{part}") for group in GROUPS for part in ("mean", "lower", "upper")
    )
    # When it was scored: the evaluation bundle's creation, when the dump has it.
    bundle = item.get("bundle")
    metadata = bundle.get("metadata") if isinstance(bundle, dict) else None
    ran = metadata.get("created") if isinstance(metadata, dict) else None
    submitted = records.unix_iso(created)
    ran_ok = isinstance(ran, (int, float)) and not isinstance(ran, bool) and 0 <= ran <= _LATEST_UNIX_TIME
    scored = records.unix_iso(ran) if ran_ok else submitted
    what = {"codalab": values, "description": submission.get("description")}  # the scores as read (NaN: null)
    entry = Entry(user, parsed.model, parsed.institution, parsed.link, submitted)
    record = records.from_import(entry, values, what, scored=scored, note=parsed.note, source=CODALAB)
    return record, None if parsed.guess is None else Guessed(index, record, description or "", parsed.guess)


def read_dump(path: str | Path) -> tuple[list[Record], list[Skipped], list[Guessed]]:
    """The dump's items as rows, those skipped with the reason, and those whose description's
    split is a guess. A file that is not a dump at all is a HostError naming the file."""
    document = records.load_json(path, "CodaLab dump")
    if not isinstance(document, dict):
        raise HostError(
            f"CodaLab dump {path}: expected a JSON object with a 'leaderboard' list, "
            f"found {records.shown(document)}"
        )
    board = document.get("leaderboard")
    if not isinstance(board, list):
        raise HostError(
            f"CodaLab dump {path}: leaderboard: expected a list of entries, found {records.shown(board)}"
        )
    rows, skipped, guessed = [], [], []
    for index, item in enumerate(board):
        try:
            row, guess = read_item(item, index)
        except HostError as exc:
            submission = item.get("submission") if isinstance(item, dict) else None
            user = submission.get("user_name") if isinstance(submission, dict) else None
            skipped.append(Skipped(index, user if isinstance(user, str) else None, exc.message))
            continue
        rows.append(row)
        if guess is not None:
            guessed.append(guess)
    return rows, skipped, guessed
