"""`mura leaderboard add | render | import-codalab`: the organisers' leaderboard commands."""

from __future__ import annotations

from pathlib import Path

import click

from scorer.cli import fail
from scorer.errors import HostError, ScoringError
from scorer.files import write_atomic
from scorer.leaderboard.render import PLOT_TOP, RENDERERS, TITLE, Options, left_off_text, render_board
from scorer.leaderboard.store import DEFAULT_DB, ENV_VAR

db_option = click.option(
    "--db",
    type=click.Path(path_type=Path),
    default=DEFAULT_DB,
    show_default=True,
    help=f"The store (an SQLite file; add and import-codalab create it when absent). Default: ${ENV_VAR}, "
    "else leaderboard.sqlite in the current folder.",
)

# The `add` option that sets each Entry field (records.EntryError.field): its errors name it.
ENTRY_OPTIONS = {
    "submitter": "--submitter",
    "model": "--model",
    "institution": "--institution",
    "link": "--link",
    "submitted": "--date",
    "content_sha256": "--sha256",
}


GROUP_HELP = f"""Keep the leaderboard: record every scored (and failed) submission in a store, import a
CodaLab dump, and render the table the way the MURA page did.

\b
mura leaderboard add RESULT.json --submitter NAME [--model M --institution I --link URL --date D]
mura leaderboard add --failed REASON --submitter NAME [--sha256 HEX]
mura leaderboard import-codalab DUMP.json
mura leaderboard import-codabench RESULTS.json [--submissions SUBMISSIONS.csv]
mura leaderboard render [--format {"|".join(RENDERERS)}] [--out FILE] [--keep all|best|latest]
"""


@click.group("leaderboard", help=GROUP_HELP)
def group() -> None:
    pass


@group.command("add")
@click.argument("result", required=False, type=click.Path(path_type=Path))
@click.option(
    "--failed", "reason", metavar="REASON", help="Record a failed submission with this reason instead."
)
@click.option("--submitter", required=True, help="Who submitted (the fallback for the Model cell).")
@click.option("--model", help="The model's name.")
@click.option("--institution", help="The submitter's institution.")
@click.option("--link", help="An http(s) link for the model (a paper, a repository).")
@click.option(
    "--date", help="The submission date, ISO 8601 (2018-11-30 or 2018-11-30T19:48:12Z). Default: now."
)
@click.option(
    "--sha256",
    "content",
    metavar="HEX",
    help="SHA-256 of the submitted bundle or predictions. Default: the predictions file's, from RESULT.json.",
)
@db_option
def add(
    result: Path | None,
    reason: str | None,
    submitter: str,
    model: str | None,
    institution: str | None,
    link: str | None,
    date: str | None,
    content: str | None,
    db: Path,
) -> None:
    """Record RESULT.json (written by `mura score --json RESULT.json`), or a failure with
    --failed. Recording the same result again adds nothing and says so; with a different
    --model, --institution or --link, it corrects those on the recorded row (an empty value
    clears one; one not given is kept) and says what changed."""
    from scorer.leaderboard import records
    from scorer.leaderboard.store import ADDED, UPDATED, Entry, open_store

    try:
        if (result is None) == (reason is None):
            raise HostError("give either RESULT.json (a `mura score --json` result) or --failed REASON")
        entry = Entry(submitter, model, institution, link, date, content)
        try:
            records.check_entry(entry)
        except records.EntryError as exc:
            raise HostError(f"{ENTRY_OPTIONS[exc.field]}: {exc.message}") from None
        # Everything is checked before the store is opened (or created).
        if result is not None:
            document = records.load_json(result, "result file")
            record = records.from_result(document, entry, source=str(result))
        else:
            record = records.from_failure(reason, entry)
        with open_store(db) as store:
            done = store.record(record)
    except ScoringError as exc:
        fail(exc)
    what = "failure" if result is None else "result"
    if done.status == ADDED:
        click.echo(f"recorded {what} as submission {done.id} in {db}")
        return
    line = f"already recorded as submission {done.id} in {db}"
    if done.status == UPDATED:
        changes = ", ".join(
            f"{name} {_shown(was)} -> {_shown(now)}" for name, (was, now) in done.changes.items()
        )
        line += f"; updated its {changes}"
    else:
        line += "; nothing added"
    if date is not None and record.submitted != done.submitted:
        line += f" (its submission date stays {done.submitted}: a recorded submission keeps its date)"
    click.echo(line)


def _shown(value: str | None) -> str:
    return "none" if value is None else repr(value)


@group.command("render")
@click.option("--format", "fmt", type=click.Choice(tuple(RENDERERS)), default="md", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (default: stdout)."
)
@click.option(
    "--keep",
    type=click.Choice(["all", "best", "latest"]),
    default="all",
    show_default=True,
    help="Every entry (MURA's way), or only each submitter's best or latest.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Entries with a kappa below this are left off.",
)
@click.option(
    "--radiologist-kappa",
    type=float,
    help="The radiologist row's kappa, given by hand (e.g. 0.778 for MURA after a CodaLab import). "
    "Default: the best radiologist among the stored results' baselines.",
)
@click.option("--radiologist-label", help="The radiologist row's Model cell.")
@click.option("--title", default=TITLE, show_default=True, help="The HTML page's title.")
@click.option(
    "--plot-top",
    type=click.IntRange(min=0),
    default=PLOT_TOP,
    show_default=True,
    help="How many top entries the HTML page's forest plot shows.",
)
@db_option
def render(
    fmt: str,
    out: Path | None,
    keep: str,
    threshold: float,
    radiologist_kappa: float | None,
    radiologist_label: str | None,
    title: str,
    plot_top: int,
    db: Path,
) -> None:
    """Render the table from the store: Rank | Date | Model | Kappa, highest kappa first (see
    README.md, "Leaderboard", for the rules). The same store gives the same bytes."""
    from scorer.leaderboard import rank
    from scorer.leaderboard.store import open_store

    try:
        with open_store(db, read_only=True) as store:
            board = rank.build(
                store,
                threshold=threshold,
                keep=keep,
                radiologist_kappa=radiologist_kappa,
                radiologist_label=radiologist_label,
            )
        text = render_board(fmt, board, Options(title, plot_top))
        if out is not None:
            try:
                write_atomic(out, text)
            except OSError as exc:
                raise HostError(f"cannot write --out {out} ({exc.strerror})") from None
    except ScoringError as exc:
        fail(exc)
    if out is None:
        click.echo(text, nl=False)
    summary = f"{len(board.rows)} entries on the board"
    if board.radiologist is None:
        summary += "; no radiologist row (no stored baselines; give --radiologist-kappa)"
    if board.left_off:
        summary += f"; left off: {left_off_text(board)}"
    click.echo(summary + (f"; written to {out}" if out else ""), err=True)


def record_import(rows: list, skipped: int, source: Path, strict: bool, db: Path) -> int:
    """Record an import's rows (how many were new), or with --strict nothing if `skipped` of the
    source's entries could not be read."""
    from scorer.leaderboard.store import open_store

    if skipped and strict:
        raise HostError(f"{skipped} entries of {source} cannot be read (listed above); nothing recorded")
    with open_store(db) as store:
        return sum(new for _, new in store.add_many(rows))


@group.command("import-codalab")
@click.argument("dump", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Record nothing (and exit 3) if any entry cannot be read.")
@db_option
def import_codalab(dump: Path, strict: bool, db: Path) -> None:
    """Record the entries of a CodaLab Worksheets competition dump (DUMP.json: the
    `leaderboard[]` the competition daemon wrote). Each description is split into model,
    institution, note and link as the MURA page did; a split that had to guess is listed on
    stderr with what was guessed. An entry that cannot be read (no overall score, no Unix time)
    is listed on stderr with the reason and skipped. Importing the same dump again adds nothing."""
    from scorer.leaderboard.codalab import read_dump

    try:
        rows, skipped, guessed = read_dump(dump)
        for _, line in sorted((n.index, n.line(str(dump))) for n in [*skipped, *guessed]):
            click.echo(line, err=True)
        added = record_import(rows, len(skipped), dump, strict, db)
    except ScoringError as exc:
        fail(exc)
    line = (
        f"imported {len(rows)} entries from {dump} into {db}: {added} new, {len(rows) - added} already there"
    )
    unscored = sum(row.scores[0] is None for row in rows)
    if unscored:
        line += f"; {unscored} without an overall score (left off the board)"
    if guessed:
        line += f"; {len(guessed)} split by a guess (listed on stderr)"
    if skipped:
        line += f"; {len(skipped)} skipped (listed on stderr)"
    click.echo(line)


@group.command("import-codabench")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--submissions",
    type=click.Path(path_type=Path),
    help="Codabench's submissions export (CSV, /api/submissions/?phase=N&format=csv): the submission "
    "dates. Without it every entry is dated today.",
)
@click.option("--phase", help="The phase whose leaderboard to import. Default: the only one, else Test.")
@click.option("--strict", is_flag=True, help="Record nothing (and exit 3) if any entry cannot be read.")
@db_option
def import_codabench(
    results: Path, submissions: Path | None, phase: str | None, strict: bool, db: Path
) -> None:
    """Record the entries of a Codabench competition's results export (RESULTS.json, from
    /api/competitions/<id>/results.json) made by `mura codabench bundle`: the overall and per-type
    kappas from its columns, model, institution and link from the fact sheet answers. An entry that
    cannot be read is listed on stderr and skipped; importing the same export again adds nothing."""
    from scorer.leaderboard.codabench import read_results

    try:
        rows, skipped, title = read_results(results, phase=phase, submissions=submissions)
        for item in skipped:
            click.echo(item.line(str(results)), err=True)
        added = record_import(rows, len(skipped), results, strict, db)
    except ScoringError as exc:
        fail(exc)
    line = (
        f"imported {len(rows)} entries of {title!r} from {results} into {db}: {added} new, "
        f"{len(rows) - added} already there"
    )
    if skipped:
        line += f"; {len(skipped)} skipped (listed on stderr)"
    if submissions is None and rows:
        line += "; dated today (give --submissions for their dates)"
    click.echo(line)
