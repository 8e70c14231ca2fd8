"""`mura codabench bundle | scoring-program`: host the competition on Codabench."""

from __future__ import annotations

from pathlib import Path

import click

from scorer.cli import HIDDEN_TEST_SET, fail, settings_option
from scorer.codabench.bundle import (
    IMAGE,
    MAX_PER_DAY,
    MAX_SUBMISSIONS,
    TIME_LIMIT,
    TITLE,
    Options,
    build,
    scoring_program_zip,
)
from scorer.errors import ScoringError
from scorer.settings import Settings, rater_names


@click.group("codabench")
def group() -> None:
    """Host the competition on Codabench: one zip with competition.yaml, the pages, the
    ingestion and scoring programs, the anonymised hidden test set and its reference data; its
    compute workers (yours, GPU ones included) run the submissions.

    \b
    mura codabench bundle --test DIR --gold GOLD.csv --out competition.zip [--valid DIR --valid-gold F ...]
    mura codabench scoring-program scoring_program.zip
    """


@group.command("bundle")
@HIDDEN_TEST_SET
@click.option(
    "--gold",
    required=True,
    type=click.Path(path_type=Path),
    help="Its gold file, as for `mura score` (e.g. test_radiologists.csv).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The competition zip to write (new); its .private folder is written beside it.",
)
@click.option(
    "--strata",
    type=click.Path(path_type=Path),
    help="The test set's strata, as for `mura score`: written to the .private folder in the "
    "anonymised names, for `mura score --strata` on Codabench's outputs.",
)
@click.option(
    "--valid",
    type=click.Path(path_type=Path),
    help="Adds a development phase before the test phase, scored on this folder's studies.",
)
@click.option(
    "--valid-gold",
    type=click.Path(path_type=Path),
    help="The development phase's gold file (e.g. valid_labeled_studies.csv).",
)
@click.option("--test-start", help="With --valid: when the test phase begins (ISO 8601, UTC).")
@click.option("--title", default=TITLE, show_default=True)
@click.option(
    "--image",
    default=IMAGE,
    show_default=True,
    help="The competition's docker image (`make codabench-image`, pushed where workers pull from).",
)
@click.option("--start", help="When the first phase begins (ISO 8601, UTC). Default: today.")
@click.option("--end", help="When the test phase ends (ISO 8601, UTC). Default: never.")
@click.option(
    "--time-limit",
    type=int,
    default=TIME_LIMIT,
    show_default=True,
    help="Seconds each submission may run (the phase's execution_time_limit).",
)
@click.option(
    "--max-submissions",
    type=int,
    default=MAX_SUBMISSIONS,
    show_default=True,
    help="Per participant and phase.",
)
@click.option("--max-submissions-per-day", "max_per_day", type=int, default=MAX_PER_DAY, show_default=True)
@click.option(
    "--solution",
    type=click.Path(path_type=Path),
    help="A ready submission folder (predict.py at its root) to add as the tasks' solution.",
)
@click.option(
    "--data-on-worker",
    is_flag=True,
    help="Leave the images out of the zip: each worker holds them in its own data folder "
    "(the bundle's README says which).",
)
@click.option(
    "--queue", metavar="VHOST", help="Your compute-worker queue's vhost (Codabench: Queue Management)."
)
@click.option("--gold-raters", metavar="R1,R2,R3", help="As for `mura score`.")
@settings_option("seed", "Seed of the bootstrap and of drawing the gold raters.")
@settings_option("resamples", "Bootstrap resamples.")
def bundle(
    test_dir: Path,
    gold: Path,
    out: Path,
    strata: Path | None,
    valid: Path | None,
    valid_gold: Path | None,
    test_start: str | None,
    title: str,
    image: str,
    start: str | None,
    end: str | None,
    time_limit: int,
    max_submissions: int,
    max_per_day: int,
    solution: Path | None,
    data_on_worker: bool,
    queue: str | None,
    gold_raters: str | None,
    seed: int,
    resamples: int,
) -> None:
    """Write the Codabench competition: --out competition.zip (upload it as it is), and beside it
    competition.private/ (the map back to the real studies, never in the zip) and, with
    --data-on-worker, competition.worker-data/ (what each worker's data folder must hold).

    The hidden test set is anonymised as `mura evaluate` does it; the ingestion program runs
    `predict.py input.csv output.csv` on a compute worker and checks the answer; the scoring
    program scores it. Exit 3 on the organiser's errors, found before anything is written.
    """
    options = Options(
        test=test_dir,
        gold=gold,
        out=out,
        strata=strata,
        valid=valid,
        valid_gold=valid_gold,
        title=title,
        image=image,
        start=start,
        test_start=test_start,
        end=end,
        time_limit=time_limit,
        max_submissions=max_submissions,
        max_per_day=max_per_day,
        solution=solution,
        data_on_worker=data_on_worker,
        queue=queue,
        settings=Settings(rater_names(gold_raters), seed, resamples),
    )
    try:
        made = build(options)
    except ScoringError as exc:
        fail(exc)
    for warning in made.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {made.zip}: upload it to Codabench as it is")
    click.echo(f"wrote {made.private}/: the map back to the real studies, gold and strata (keep it private)")
    if made.worker_data is not None:
        click.echo(f"wrote {made.worker_data}/: copy its folders into HOST_DIRECTORY/data/ of every worker")
    if image == IMAGE:
        click.echo(
            f"note: --image {IMAGE} is the local name `make codabench-image` gives; push the image where "
            "your workers can pull it and bundle with --image REGISTRY/NAME:TAG",
            err=True,
        )


@group.command("scoring-program")
@click.argument("out", type=click.Path(path_type=Path))
def scoring_program(out: Path) -> None:
    """Write the scoring program alone to OUT (a zip: metadata.yaml and the scorer's modules it
    imports), for CodaLab Competitions or a competition bundle written by hand. The platform runs
    `python3 -m scorer.codabench INPUT OUTPUT` (README.md, "Scoring")."""
    try:
        scoring_program_zip(out)
    except ScoringError as exc:
        fail(exc)
    click.echo(f"wrote {out}")
