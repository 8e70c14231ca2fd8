"""The two kinds of error a scoring run can end in.

A participant may see a ParticipantError's message (it is the last line on stderr of a
CodaLab/Codabench scoring program), so it must say what to fix and must never carry anything
from the reference labels. A HostError is the organiser's problem (a broken gold file, a wrong
option) and is reported with a different prefix and exit code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LABEL_SUFFIX = re.compile(r"(study\d*)_(positive|negative)", re.IGNORECASE)


class ScoringError(Exception):
    exit_code = 1
    prefix = "error"

    def __init__(self, message: str) -> None:
        # One line: the last line of stderr is all a participant may get to see.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)

    def line(self) -> str:
        return f"{self.prefix}: {self.message}"


class ParticipantError(ScoringError):
    """The submission is invalid; nothing was scored. Exit code 2."""

    exit_code = 2
    prefix = "submission error"


class HostError(ScoringError):
    """The organiser's input (gold file, options, strata) is invalid. Exit code 3."""

    exit_code = 3
    prefix = "organiser error"


def hide_labels(text: str) -> str:
    """Blank out `_positive`/`_negative` study-folder suffixes, which are labels in MURA paths."""
    return _LABEL_SUFFIX.sub(r"\1_*", text)


def examples(items: Iterable[object], limit: int = 5) -> str:
    """`a, b, c, d, e and 7 more`: up to `limit` examples of a list for a one-line message."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown
