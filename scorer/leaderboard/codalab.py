"""Importing a CodaLab Worksheets competition dump (the JSON the competition daemon wrote and
the MURA page rebuilt its table from, SPEC §5).

Each `leaderboard[]` item gives `submission.{user_name, description, created}` and
`scores.{overall_mean, overall_lower, ..., wrist_upper}`. The description is parsed as the MURA
page's script did: the model name before the last `(`, the institution inside it, a trailing
`http...` link. An item that cannot be read is skipped and reported with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import HostError
from scorer.leaderboard import records
from scorer.leaderboard.records import Record
from scorer.leaderboard.schema import GROUPS
from scorer.leaderboard.store import Entry

_LINK_AT_END = re.compile(r"(?:^|(?<=[\s)]))(https?://\S+)$")
_LATEST_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class Description:
    model: str | None
    institution: str | None
    link: str | None


class DescriptionError(ValueError):
    pass


def parse_description(text: str | None) -> Description:
    """`base-comb2-xuan-v3(ensemble) (jzhang Availink) http://x.ai` -> model
    `base-comb2-xuan-v3(ensemble)`, institution `jzhang Availink`, link `http://x.ai`.

    Without any parentheses the whole text is the model name (MURA's script showed the user
    name instead, losing the text). Raises DescriptionError for what it cannot split safely:
    an unclosed `(`, a stray `)`, nested parentheses at the end, or text after the `)`.
    """
    rest = " ".join((text or "").split())
    link = None
    match = _LINK_AT_END.search(rest)
    if match:
        link, rest = match.group(1), rest[: match.start()].rstrip()
    if not rest:
        return Description(None, None, link)
    opening, closing = rest.rfind("("), rest.rfind(")")
    if closing == -1 and opening == -1:
        return Description(rest, None, link)
    if closing < opening:
        raise DescriptionError(f"the last '(' is never closed in {text!r}")
    if closing != len(rest) - 1:
        after = rest[closing + 1 :].strip()
        raise DescriptionError(
            f"unexpected text {after!r} after the institution's ')' in {text!r}; expected "
            "`model (institution) http://link`"
        )
    if opening == -1:
        raise DescriptionError(f"a ')' without a '(' in {text!r}")
    institution = rest[opening + 1 : closing]
    if ")" in institution:
        raise DescriptionError(f"nested parentheses around the institution in {text!r}")
    return Description(rest[:opening].strip() or None, institution.strip() or None, link)


@dataclass(frozen=True)
class Skipped:
    index: int
    user: str | None
    reason: str

    def line(self, source: str) -> str:
        who = f" (user {self.user!r})" if self.user else ""
        return f"{source}: leaderboard[{self.index}]{who}: {self.reason}; skipped"


def _score(scores: dict, key: str) -> float | None:
    """A score as the dump holds it: NaN for an undefined kappa (an invalid kappa, left off the
    board); an interval bound as the official script's asymptotic interval left it, unclipped."""
    bound = not key.endswith("_mean")
    return records.kappa_value(scores.get(key), f"scores.{key}", nan_is_null=True, clip=bound)


def read_item(item: object) -> Record:
    """One `leaderboard[]` item as a row; a HostError names the field and the reason."""
    item = records.json_object(item, "item")
    submission = records.json_object(item.get("submission"), "submission")
    user = records.text(submission.get("user_name"), "submission.user_name")
    if not user:
        raise HostError("submission.user_name: expected the submitter's name, found nothing")
    description = records.text(submission.get("description"), "submission.description")
    try:
        parsed = parse_description(description)
    except DescriptionError as exc:
        raise HostError(f"submission.description: {exc}") from None
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
    return records.from_import(entry, values, what, scored=scored)


def read_dump(path: str | Path) -> tuple[list[Record], list[Skipped]]:
    """The dump's items as rows, and those skipped with the reason. A file that is not a dump
    at all is a HostError naming the file."""
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
    rows, skipped = [], []
    for index, item in enumerate(board):
        try:
            rows.append(read_item(item))
        except HostError as exc:
            submission = item.get("submission") if isinstance(item, dict) else None
            user = submission.get("user_name") if isinstance(submission, dict) else None
            skipped.append(Skipped(index, user if isinstance(user, str) else None, exc.message))
    return rows, skipped
