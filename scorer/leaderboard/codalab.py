"""Importing a CodaLab Worksheets competition dump (the JSON the competition daemon wrote and
the MURA page rebuilt its table from, SPEC §5).

Each `leaderboard[]` item gives `submission.{user_name, description, created}` and
`scores.{overall_mean, overall_lower, ..., wrist_upper}`. The description is parsed as the MURA
page's script did: the model name before the last `(`, the institution inside it, a trailing
`http...` link. An item that cannot be read is skipped and reported with the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import HostError
from scorer.leaderboard import records
from scorer.leaderboard.records import SCORED, Record
from scorer.leaderboard.schema import GROUPS

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


class _Bad(Exception):
    pass


def _object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise _Bad(f"{field}: expected an object, found {_shown(value)}")
    return value


def _shown(value: object) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _score(scores: dict, key: str, *, bound: bool) -> float | None:
    value = scores.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"scores.{key}: expected a number or null, found {_shown(value)}")
    number = float(value)
    if not math.isfinite(number):
        return None  # NaN: an invalid kappa, left off the board
    if bound:
        # The official script's asymptotic interval is not clipped; a kappa cannot leave [-1, 1].
        return min(1.0, max(-1.0, number))
    if not -1.0 <= number <= 1.0:
        raise _Bad(f"scores.{key}: expected a kappa between -1 and 1, found {value!r}")
    return number


def read_item(item: object) -> Record:
    """One `leaderboard[]` item as a row; raises _Bad with the field and the reason."""
    item = _object(item, "item")
    submission = _object(item.get("submission"), "submission")
    user = submission.get("user_name")
    if not isinstance(user, str) or not user.strip():
        raise _Bad(f"submission.user_name: expected the submitter's name, found {_shown(user)}")
    description = submission.get("description")
    if description is not None and not isinstance(description, str):
        raise _Bad(f"submission.description: expected text, found {_shown(description)}")
    try:
        parsed = parse_description(description)
    except DescriptionError as exc:
        raise _Bad(f"submission.description: {exc}") from None
    created = submission.get("created")
    if (
        isinstance(created, bool)
        or not isinstance(created, (int, float))
        or not 0 <= created <= _LATEST_UNIX_TIME
    ):
        raise _Bad(f"submission.created: expected a Unix time in seconds, found {_shown(created)}")
    scores = _object(item.get("scores"), "scores")
    if "overall_mean" not in scores:
        raise _Bad("scores.overall_mean: missing")
    values = tuple(
        _score(scores, f"{group.lower()}_{part}", bound=part != "mean")
        for group in GROUPS
        for part in ("mean", "lower", "upper")
    )
    # When it was scored: the evaluation bundle's creation, when the dump has it.
    bundle = item.get("bundle")
    metadata = bundle.get("metadata") if isinstance(bundle, dict) else None
    ran = metadata.get("created") if isinstance(metadata, dict) else None
    submitted = records.unix_iso(created)
    ran_ok = isinstance(ran, (int, float)) and not isinstance(ran, bool) and 0 <= ran <= _LATEST_UNIX_TIME
    scored = records.unix_iso(ran) if ran_ok else submitted
    submitter = " ".join(user.split())
    what = {"codalab": values, "description": description}  # the scores as read (NaN: null)
    return Record(
        identity=records.identity(SCORED, submitter, None, submitted, what),
        submitter=submitter,
        model=parsed.model,
        institution=parsed.institution,
        link=parsed.link,
        submitted=submitted,
        scored=scored,
        status=SCORED,
        reason=None,
        scores=values,
    )


def read_dump(path: str | Path) -> tuple[list[Record], list[Skipped]]:
    """The dump's items as rows, and those skipped with the reason. A file that is not a dump
    at all is a HostError naming the file."""
    document = records.load_json(path, "CodaLab dump")
    if not isinstance(document, dict):
        raise HostError(
            f"CodaLab dump {path}: expected a JSON object with a 'leaderboard' list, found {_shown(document)}"
        )
    board = document.get("leaderboard")
    if not isinstance(board, list):
        raise HostError(
            f"CodaLab dump {path}: leaderboard: expected a list of entries, found {_shown(board)}"
        )
    rows, skipped = [], []
    for index, item in enumerate(board):
        try:
            rows.append(read_item(item))
        except _Bad as exc:
            submission = item.get("submission") if isinstance(item, dict) else None
            user = submission.get("user_name") if isinstance(submission, dict) else None
            skipped.append(Skipped(index, user if isinstance(user, str) else None, str(exc)))
    return rows, skipped
