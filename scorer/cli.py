"""`mura score`: the organisers' scoring command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import click

from scorer.errors import HostError, ScoringError
from scorer.files import write_together
from scorer.settings import DEFAULTS


def fail(exc: ScoringError) -> None:
    """Report a scoring error as one line on stderr and exit with its code (2 or 3)."""
    click.echo(exc.line(), err=True)
    sys.exit(exc.exit_code)


def check_targets(targets: Mapping[str, Path | None]) -> None:
    """Check the files the options (`--json` -> path) name before anything is scored, so a
    typo costs no scoring run and never leaves one file written and the next not."""
    given = {option: path for option, path in targets.items() if path is not None}
    seen: dict[Path, str] = {}
    for option, path in given.items():
        if path.resolve() in seen:
            raise HostError(f"{seen[path.resolve()]} and {option} both name {path}; give each its own file")
        seen[path.resolve()] = option
        if path.is_dir():
            raise HostError(f"{option} {path} is a folder; expected the name of a file to write")
        if path.exists() and not path.is_file():
            raise HostError(
                f"{option} {path} is not a regular file; expected a file to write (for stdout, use --format)"
            )
        folder = path.parent
        if not folder.is_dir():
            raise HostError(f"{option} {path}: the folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HostError(f"{option} {path}: the folder {folder} is not writable; choose another")


def write_outputs(files: Mapping[Path, Callable[[], str]]) -> None:
    """Render every file, then write them all or none (write_together). A failed write is a
    HostError."""
    texts = {path: render() for path, render in files.items()}
    try:
        write_together(texts)
    except OSError as exc:
        raise HostError(f"{', '.join(map(str, texts))} cannot be written ({exc.strerror or exc})") from None


# `--test DIR` of `mura evaluate` and `mura codabench bundle`.
HIDDEN_TEST_SET = click.option(
    "--test",
    "test_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The hidden test set: the folder that holds MURA-v1.1/ (each gold study's images).",
)


def settings_option(name: str, help: str | None = None) -> Callable:
    """The option (`--seed`, `--resamples`, `--confidence`) for the Settings field `name`, with
    the field's type and default (settings.DEFAULTS), so every command shows the same ones."""
    default = getattr(DEFAULTS, name)
    return click.option(f"--{name}", type=type(default), default=default, show_default=True, help=help)


@click.command()
@click.argument("gold", type=click.Path(path_type=Path))
@click.argument("predictions", type=click.Path(path_type=Path))
@click.option(
    "--gold-raters",
    metavar="R1,R2,R3",
    help="The raters whose majority is the gold standard (e.g. Rad1,Rad4,Rad5); the "
    "others are scored as radiologists. Default: all raters when there are three "
    "or fewer, else three drawn with --seed.",
)
@settings_option("seed", "Seed for the bootstrap and for drawing the gold raters.")
@settings_option("resamples", "Bootstrap resamples.")
@settings_option("confidence", "Confidence level of the intervals.")
@click.option(
    "--probabilities",
    type=click.Path(path_type=Path),
    help="The submission's per-study probabilities (`study_path/,p`): adds AUC with its interval, "
    "the ROC curve and the radiologists' operating points.",
)
@click.option(
    "--strata",
    type=click.Path(path_type=Path),
    help="The organiser's `study_path/,finding[;finding...]` file: adds each stratum's sensitivity "
    "(or specificity) and flags hidden stratification.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="What to print on stdout.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON result to this file.",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an HTML report to this file.",
)
def score(
    gold: Path,
    predictions: Path,
    gold_raters: str | None,
    seed: int,
    resamples: int,
    confidence: float,
    probabilities: Path | None,
    strata: Path | None,
    fmt: str,
    json_out: Path | None,
    html_out: Path | None,
) -> None:
    """Score PREDICTIONS (a submission's output.csv) against GOLD (the organisers' labels).

    GOLD is `study,label`, `study,Rad1,Rad2,Rad3` (gold = their majority) or
    `study,Rad1,...,Rad6` (gold = the majority of three; the rest are scored as radiologists);
    no header, or one header row. Prints Cohen's kappa per study type and overall with bootstrap
    and asymptotic intervals. Exit 2: the submission is invalid (nothing scored); exit 3: the
    gold file or an option is invalid.

    With --format json this is a drop-in for the official `python evaluate.py test.csv
    predictions.csv`: the top-level keys Elbow_Mean, Elbow_Lower, ..., Overall_Upper come first.
    """
    from scorer import report
    from scorer.pipeline import score_files
    from scorer.settings import Settings, rater_names

    settings = Settings(rater_names(gold_raters), seed, resamples, confidence)
    try:
        check_targets({"--json": json_out, "--html": html_out})
        result = score_files(
            gold, predictions, settings, probabilities_path=probabilities, strata_path=strata
        )
        text = report.to_json(result)
        outputs = {json_out: lambda: text, html_out: lambda: report.to_html(result)}
        write_outputs({path: render for path, render in outputs.items() if path is not None})
    except ScoringError as exc:
        fail(exc)
    click.echo(text if fmt == "json" else report.to_table(result), nl=False)


@click.command("audit-labels")
@click.argument("labels", type=click.Path(path_type=Path))
@click.argument("gold", type=click.Path(path_type=Path))
@click.option(
    "--strata",
    type=click.Path(path_type=Path),
    help="`study_path/,finding[;finding...]`: the audit per finding, too.",
)
@click.option("--gold-raters", metavar="R1,R2,R3", help="As for `mura score`.")
@settings_option("seed")
@settings_option("resamples")
@settings_option("confidence")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path))
def audit_labels(
    labels: Path,
    gold: Path,
    strata: Path | None,
    gold_raters: str | None,
    seed: int,
    resamples: int,
    confidence: float,
    fmt: str,
    json_out: Path | None,
    html_out: Path | None,
) -> None:
    """How good are a dataset's own labels? Sensitivity and specificity of LABELS (a
    `study,label` file such as MURA's valid_labeled_studies.csv) against GOLD (radiologists'
    reads, as for `mura score`), per study type and per stratum, with bootstrap intervals."""
    from scorer import report
    from scorer.audit import audit_files
    from scorer.settings import Settings, rater_names

    settings = Settings(rater_names(gold_raters), seed, resamples, confidence)
    try:
        check_targets({"--json": json_out, "--html": html_out})
        result = audit_files(labels, gold, settings, strata)
        text = report.to_json(result)
        outputs = {json_out: lambda: text, html_out: lambda: report.audit_to_html(result)}
        write_outputs({path: render for path, render in outputs.items() if path is not None})
    except ScoringError as exc:
        fail(exc)
    click.echo(text if fmt == "json" else report.audit_to_table(result), nl=False)
