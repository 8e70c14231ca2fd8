"""One CLI, `mura`, whose subcommands live with their side and are imported lazily."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from mura import __version__
from scorer.errors import notes_on_stderr

# name -> (module, attribute, extra that provides its dependencies or None, one-line help).
# The help text lives here so `mura --help` lists commands without importing any of them.
COMMANDS: dict[str, tuple[str, str, str | None, str]] = {
    "score": ("scorer.cli", "score", None, "Score a submission's predictions against the gold standard."),
    "audit-labels": ("scorer.cli", "audit_labels", None, "Audit a dataset's labels against radiologists."),
    "leaderboard": (
        "scorer.leaderboard.cli",
        "group",
        None,
        "Keep the leaderboard: record results, import a CodaLab dump, render the table.",
    ),
    "codabench": (
        "scorer.codabench.cli",
        "group",
        None,
        "Host the competition on Codabench: write the whole competition bundle.",
    ),
    "evaluate": (
        "scorer.harness.cli",
        "evaluate",
        None,
        "Run a submission in a sandbox on the hidden test set; score and record it.",
    ),
    "synth": ("reference_model.cli", "synth", "model", "Generate MURA-shaped synthetic X-rays."),
    "train": ("reference_model.cli", "train", "model", "Train the reference DenseNet (the paper's recipe)."),
    "bundle": ("reference_model.cli", "bundle", "model", "Assemble an ensemble bundle from checkpoints."),
    "predict": ("reference_model.cli", "predict", "model", "Predict studies with an ensemble bundle."),
    "cam": ("reference_model.cli", "cam", "model", "Class activation maps of a study's views."),
}

# The modules each extra brings; a command whose extra is missing says which one to install.
EXTRA_MODULES = {"model": ("torch", "torchvision", "PIL")}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, extra, _ = COMMANDS[name]
        if extra is not None:
            missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
            if missing:
                raise click.ClickException(
                    f"`mura {name}` needs the '{extra}' extra, but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not installed; "
                    f"install it with: pip install 'mura-kit[{extra}]'"
                )
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][3]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mura")
def cli() -> None:
    """The MURA competition kit: score submissions, keep the leaderboard, run the reference model.

    Exit codes: 0 success; 1 an unexpected internal error (a bug: please report it);
    2 the submission (or a participant's input) is invalid; 3 the organiser's input or the
    command line is invalid.
    """


def main() -> None:
    try:
        with notes_on_stderr():  # e.g. a submission's CRLF endings, read as the official script did
            code = cli.main(prog_name="mura", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:
        # A wrong command line is the caller's (host's) error: exit 3, keeping 2 for submissions.
        exc.show()
        sys.exit(3)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    # Without standalone mode click hands back ctx.exit()'s code (for --help, --version, ...).
    sys.exit(code if isinstance(code, int) else 0)
