"""The two kinds of error a scoring run can end in.

A participant may see a ParticipantError's message (it is the last line on stderr of a
CodaLab/Codabench scoring program), so it must say what to fix and must never carry anything
from the reference labels. A HostError is the organiser's problem (a broken gold file, a wrong
option) and is reported with a different prefix and exit code.

Whatever the input's size, a message stays short: at most MESSAGE_LIMIT characters (`shorten`
at the sinks: these errors, the leaderboard's failure reasons), at most five examples of
EXAMPLE_WIDTH characters each (`examples`, for the producers).

A FormatNote is neither: a participant's file that breaks the contract in a way the official
script accepted (a byte-order mark, CRLF endings) is read, and the commands say so in one line
on stderr. Readers raise it through `warnings` and never print; the commands show it
(`notes_on_stderr`).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_LABEL_SUFFIX = re.compile(r"(study\d*)_(positive|negative)", re.IGNORECASE)
MESSAGE_LIMIT = 500  # characters in a message or failure reason a participant may see
EXAMPLE_WIDTH = 80  # characters of one example in a message (a MURA study path is about 55)
ELLIPSIS = "\u2026"


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text`, or when it is longer than `limit` characters its start and its end joined by `…`:
    a message's start says what was expected, its end what to do."""
    if len(text) <= limit:
        return text
    tail = (limit - len(ELLIPSIS)) // 2
    head = limit - len(ELLIPSIS) - tail
    return f"{text[:head]}{ELLIPSIS}{text[len(text) - tail :]}"


class ScoringError(Exception):
    exit_code = 1
    prefix = "error"

    def __init__(self, message: str) -> None:
        # One short line: the last line of stderr is all a participant may get to see.
        super().__init__(shorten(" ".join(message.split()), MESSAGE_LIMIT - len(f"{self.prefix}: ")))

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


def examples(items: Iterable[object], limit: int = 5, width: int = EXAMPLE_WIDTH) -> str:
    """`a, b, c, d, e and 7 more`: up to `limit` examples of a list for a one-line message, each
    shortened to `width` characters."""
    items = list(items)
    shown = ", ".join(shorten(str(item), width) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest:,} more" if rest > 0 else shown


class FormatNote(UserWarning):
    """A participant's file read although it breaks the contract (see the module's notes)."""


NOTE_PREFIX = "note: "


def note(message: str) -> None:
    """Send a FormatNote (one short line, never a label) to whichever command shows notes."""
    text = shorten(" ".join(message.split()), MESSAGE_LIMIT - len(NOTE_PREFIX))
    warnings.warn(FormatNote(text), stacklevel=2)


@contextmanager
def notes_on_stderr() -> Iterator[None]:
    """While the block runs, each FormatNote is a line `note: ...` on stderr (every one, not
    once per place as Python shows warnings); other warnings are shown as before."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", FormatNote)
        show_others = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, FormatNote):
                print(f"{NOTE_PREFIX}{message}", file=sys.stderr, flush=True)
            else:
                show_others(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
