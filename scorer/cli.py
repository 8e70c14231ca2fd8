"""`mura score`: the organisers' scoring command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from scorer.errors import ScoringError


def fail(exc: ScoringError) -> None:
    """Report a scoring error as one line on stderr and exit with its code (2 or 3)."""
    click.echo(exc.line(), err=True)
    sys.exit(exc.exit_code)


def write_text(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for the bootstrap and for drawing the gold raters.",
)
@click.option("--resamples", type=int, default=10_000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--confidence", type=float, default=0.95, show_default=True, help="Confidence level of the intervals."
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
    from scorer.pipeline import Settings, rater_names, score_files

    settings = Settings(rater_names(gold_raters), seed, resamples, confidence)
    try:
        result = score_files(gold, predictions, settings)
    except ScoringError as exc:
        fail(exc)
    text = report.to_json(result)
    if json_out is not None:
        write_text(json_out, text)
    if html_out is not None:
        write_text(html_out, report.to_html(result))
    click.echo(text if fmt == "json" else report.to_table(result), nl=False)
