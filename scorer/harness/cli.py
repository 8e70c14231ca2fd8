"""`mura evaluate`: run a submission in a sandbox on the hidden test set, score it, record it."""

from __future__ import annotations

import re
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from scorer.cli import HIDDEN_TEST_SET, fail, settings_option
from scorer.errors import HostError, ScoringError
from scorer.harness.docker_runner import EVALUATION_IMAGE
from scorer.harness.runners import RUNNERS, choose_runner
from scorer.harness.sandbox import GiB, Limits, MiB

if TYPE_CHECKING:
    from scorer.harness.evaluate import Verdict

# Turned into an exception, so that the runners' cleanup (`finally`) runs: Python's default for
# SIGTERM and SIGHUP ends the process at once and would leave the sandbox running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str, option: str) -> int:
    """`512m`, `8g`, `1.5G`, `4096` (bytes) -> bytes, as docker spells sizes."""
    match = _SIZE.match(text)
    if match is None:
        raise HostError(f"{option} {text!r}: expected a size such as 512m, 8g or 1.5G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Stopped(BaseException):
    """A stop signal arrived (BaseException: no `except Exception` may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    for other in STOP_SIGNALS:  # the cleanup that follows must not be cut short by a second one
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def raise_on_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)


@click.command("evaluate")
@click.argument("submission", type=click.Path(path_type=Path))
@HIDDEN_TEST_SET
@click.option(
    "--gold",
    required=True,
    type=click.Path(path_type=Path),
    help="The gold file, as for `mura score` (e.g. test.csv or test_radiologists.csv).",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    help="The leaderboard store to record the result or failure in. Default: the "
    "leaderboard's default store.",
)
@click.option("--no-record", is_flag=True, help="Record nothing on the leaderboard.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="The run folder (new or empty). Default: evaluations/SUBMITTER-TIME.",
)
@click.option("--strata", type=click.Path(path_type=Path), help="As for `mura score`: hidden strata.")
@click.option(
    "--runner",
    type=click.Choice(RUNNERS),
    default="auto",
    show_default=True,
    help="The sandbox: docker when an engine answers, else bubblewrap.",
)
@click.option(
    "--image",
    default=EVALUATION_IMAGE,
    show_default=True,
    help="The docker runner's image (docker/evaluation.Dockerfile; `make image`).",
)
@click.option("--gpus", default=None, help="Pass GPUs to the docker runner (docker's --gpus: all, device=0).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Wall-clock limit, seconds.")
@click.option("--memory", default="8g", show_default=True, help="Memory limit (no swap), e.g. 512m, 8g.")
@click.option("--cpus", type=float, default=2.0, show_default=True)
@click.option("--pids", type=int, default=256, show_default=True, help="Process and thread limit.")
@click.option("--log-cap", default="1m", show_default=True, help="Log bytes kept (first and last half).")
@click.option("--submitter", help="Who submitted it. Default: the submission folder's name.")
@click.option("--model", help="The model's name on the leaderboard.")
@click.option("--institution")
@click.option("--link", help="A link to the paper or code.")
@click.option("--submitted", help="When it was submitted (ISO 8601). Default: now.")
@click.option("--gold-raters", metavar="R1,R2,R3", help="As for `mura score`.")
@settings_option("seed", "Seed of the bootstrap and gold raters.")
@settings_option("resamples")
@click.option(
    "--anonymise-seed",
    type=int,
    default=None,
    help="Seed of the anonymised case order (default: a secret random one, kept in the run's private map).",
)
@click.option(
    "--require-memory-cap",
    is_flag=True,
    help="Refuse to run where --memory cannot be capped for the whole run (only per process).",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Say only the final line (and warnings), not each stage nor the live line.",
)
def evaluate(
    submission: Path,
    test_dir: Path,
    gold: Path,
    db: Path | None,
    no_record: bool,
    out: Path | None,
    strata: Path | None,
    runner: str,
    image: str,
    gpus: str | None,
    timeout: float,
    memory: str,
    cpus: float,
    pids: int,
    log_cap: str,
    submitter: str | None,
    model: str | None,
    institution: str | None,
    link: str | None,
    submitted: str | None,
    gold_raters: str | None,
    seed: int,
    resamples: int,
    anonymise_seed: int | None,
    require_memory_cap: bool,
    quiet: bool,
) -> None:
    """Evaluate SUBMISSION (a folder with predict.py) on the hidden test set, as CodaLab did:
    the test images are copied under anonymised paths, `python3 predict.py input.csv
    output.csv` runs in a sandbox (network off, data read-only, the gold file out of reach,
    memory/CPU/process/time limits), its answer is mapped back, scored like `mura score`, and
    the result -- or the failure and its reason -- is recorded on the leaderboard.

    Each stage is said on stderr as it happens (on a terminal, with a live line while the
    submission runs); --quiet says only the final line.

    Exit codes: 0 scored; 2 the submission failed (recorded, with its reason); 3 the
    organiser's input is invalid (nothing recorded); 128+N stopped by signal N (SIGTERM, SIGHUP,
    SIGINT), after stopping and removing the sandbox.
    """
    from scorer.harness.evaluate import Submission
    from scorer.harness.evaluate import evaluate as run_evaluation
    from scorer.harness.progress import Progress
    from scorer.settings import Settings, rater_names

    raise_on_stop_signals()
    try:
        limits = Limits(
            timeout=timeout,
            memory=parse_size(memory, "--memory"),
            cpus=cpus,
            pids=pids,
            log_cap=parse_size(log_cap, "--log-cap"),
            gpus=gpus,
        )
        name = submitter or submission.resolve().name
        out = out or default_run_folder(name)
        db = None if no_record else (db or default_store())
        verdict = run_evaluation(
            Submission(submission, name, model, institution, link, submitted),
            test_dir,
            gold,
            out,
            choose_runner(runner, image),
            limits,
            Settings(rater_names(gold_raters), seed, resamples),
            strata=strata,
            db=db,
            seed=anonymise_seed,
            progress=Progress(sys.stderr, quiet=quiet),
            require_memory_cap=require_memory_cap,
        )
    except ScoringError as exc:
        fail(exc)
    except Stopped as stop:
        say_stopped(stop.signum, out)
    say_verdict(verdict, out, db)


def default_run_folder(submitter: str) -> Path:
    """evaluations/SUBMITTER-TIME (UTC, to the second)."""
    return Path("evaluations") / f"{submitter}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def default_store() -> Path:
    from scorer.leaderboard.store import DEFAULT_DB

    return Path(DEFAULT_DB)


def say_stopped(signum: int, out: Path | None) -> NoReturn:
    """A stop signal ended the evaluation (after the runner stopped and removed the sandbox):
    exit 128 + its number."""
    where = f" (run folder {out})" if out is not None else ""
    click.echo(
        f"mura evaluate: stopped by {signal.Signals(signum).name}; the sandbox was stopped and removed; "
        f"the evaluation is incomplete{where}: run it again",
        err=True,
    )
    sys.exit(128 + signum)


def say_verdict(verdict: Verdict, out: Path, db: Path | None) -> None:
    """The scored table and a last line on stdout (exit 0), or the failure's reason on stderr
    (exit 2)."""
    from scorer import report

    run = verdict.outcome
    ran = f" ({run.runner} sandbox, {run.seconds:.1f} s)" if run is not None else ""
    where = f"; recorded on {db}" if verdict.recorded is not None else ""
    if not verdict.ok:
        click.echo(f"submission failed{ran}: {verdict.reason}{where}", err=True)
        click.echo(f"run folder: {out}", err=True)
        sys.exit(2)
    click.echo(report.to_table(verdict.result), nl=False)
    click.echo(f"scored{ran}{where}; run folder: {out}")
