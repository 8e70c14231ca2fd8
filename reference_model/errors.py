"""How the reference model's commands (synth, train, bundle, cam) end on a user error, and
how their messages stay short.

The house rule: exit 1 is a bug, 2 a submission's (or predict's) "no answer", 3 the caller's
input or command line. click's own ClickException exits 1, so every user error of these
commands is a UserError: one line on stderr, exit 3.
"""

from __future__ import annotations

import re

import click

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UserError(click.ClickException):
    """The caller's input, options or output folder cannot be used; exit code 3."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said


def shorten(text: str, limit: int = 120) -> str:
    """`text` for a one-line message: control characters (a line break, a terminal escape) shown
    as `\\xNN`, and at most `limit` characters, its start and its end (a path's file name) around
    `...`, so that a message stays one short line whatever the input held (a path of megabytes)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head) :]}"
