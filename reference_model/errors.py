"""Predict's "no answer" (PredictError, exit 2 in reference_model.cli), and how what a user
gave shows in a one-line message: warnings, paths, counts.
"""

from __future__ import annotations

import re
import sys

from scorer.errors import shorten

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PRINTABLE_WIDTH = 120  # characters of a path or a library's reason inside a one-line message


class PredictError(Exception):
    """Predict cannot produce an answer (unreadable input CSV, broken bundle, bad option); exit 2."""


def printable(text: str, limit: int = PRINTABLE_WIDTH) -> str:
    """`text` (a path from the input, a library's reason) as a piece of a one-line message:
    control characters (a line break, a terminal escape) shown as `\\xNN`, and at most `limit`
    characters, its start and its end (a path's file name) kept (scorer.errors.shorten), so a
    message stays one short line whatever the input held (a path of megabytes)."""
    return shorten(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), limit)


def counted(n: int, one: str, many: str | None = None) -> str:
    """`1 image`, `2 images`; `many` where the plural is not `one` + s (`studies`)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def print_warning(message: str) -> None:
    """A warning of predict's: one line on stderr, at once (a long run shows them as they come)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
