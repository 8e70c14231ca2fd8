"""How the reference model's commands (synth, train, bundle, cam) end on a user error.

The house rule: exit 1 is a bug, 2 a submission's (or predict's) "no answer", 3 the caller's
input or command line. click's own ClickException exits 1, so every user error of these
commands is a UserError: one line on stderr, exit 3.
"""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """The caller's input, options or output folder cannot be used; exit code 3."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said
