"""The board as Markdown (the MURA page's table), HTML (a page with per-type columns and a
forest plot), CSV and JSON (every column at full precision). The same board gives the same bytes.

An entry imported from CodaLab carries the official script's interval, about 30 times too narrow
(SPEC §4 (b)): every format that shows intervals says so (`interval_source`, a † on the page).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from scorer.html import escape, interval, number, page, table
from scorer.leaderboard.plot import CODALAB_MARK
from scorer.leaderboard.rank import Board, Radiologist, Scored
from scorer.leaderboard.schema import CODALAB, SCORE_COLUMNS
from scorer.paths import GROUPS

JSON_FORMAT = "mura-kit leaderboard v2"
TITLE = "MURA leaderboard"  # the HTML page's title unless --title gives one
PLOT_TOP = 20  # how many top entries the HTML page's forest plot shows unless --plot-top says
ANONYMOUS = "anonymous"  # the Model cell of an entry with neither a model name nor a submitter
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# What Markdown would read as markup, and an & that could start an entity (`&lt;` shows as `<`).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~]|&(?=[#A-Za-z0-9]))")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): such
# text gets a leading single quote, as OWASP advises, so it shows as typed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def display_date(iso: str) -> str:
    """`2018-11-30T19:48:12Z` -> `Nov 30, 2018` (the UTC date; English whatever the locale)."""
    return f"{MONTHS[int(iso[5:7]) - 1]} {iso[8:10]}, {iso[:4]}"


def safe_link(link: str) -> str:
    # Percent-encode what could end a Markdown autolink, an HTML attribute or a table cell.
    return quote(link, safe=":/?#[]@!$&'()*+,;=%~-._")


def entry_name(entry: Scored) -> str:
    """The model's name; the submitter's when there is none; `anonymous` without either."""
    return entry.model or entry.submitter or ANONYMOUS


def _model(entry: Scored, esc: Callable[[str], str], link: Callable[[str], str]) -> str:
    parts = [esc(entry_name(entry))]
    if entry.institution:
        parts.append(f"({esc(entry.institution)})")
    if entry.note:
        parts.append(esc(entry.note))
    if entry.link:
        parts.append(link(entry.link))
    return " ".join(parts)


def model_cell(entry: Scored) -> str:
    return _model(entry, str, safe_link)


def _md(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _md_model(entry: Scored) -> str:
    return _model(entry, _md, lambda link: f"<{safe_link(link)}>")


def to_markdown(board: Board) -> str:
    lines = ["| Rank | Date | Model | Kappa |", "|---|---|---|---|"]
    if board.radiologist is not None:
        lines.append(f"|  |  | {_md(board.radiologist.label)} | {number(board.radiologist.kappa)} |")
    lines += [
        f"| {r.rank} | {display_date(r.entry.submitted)} | {_md_model(r.entry)} | {r.entry.kappa:.3f} |"
        for r in board.rows
    ]
    return "\n".join(lines) + "\n"


# --- CSV and JSON: every column, full precision -------------------------------------------------

COLUMNS = (
    "kind",
    "rank",
    "date",
    "entry",
    "submitter",
    "model",
    "institution",
    "note",
    "link",
    "submitted",
    *SCORE_COLUMNS,
    "interval_source",
    "id",
    "content_sha256",
)


def _records(board: Board) -> tuple[dict | None, list[dict]]:
    radiologist = None
    if board.radiologist is not None:
        r = board.radiologist
        radiologist = dict.fromkeys(COLUMNS)
        radiologist.update(
            kind="radiologist", entry=r.label, **dict(zip(SCORE_COLUMNS, r.scores)), interval_source=r.source
        )
    entries = []
    for row in board.rows:
        e = row.entry
        entries.append(
            {
                "kind": "submission",
                "rank": row.rank,
                "date": display_date(e.submitted),
                "entry": model_cell(e),
                "submitter": e.submitter,
                "model": e.model,
                "institution": e.institution,
                "note": e.note,
                "link": e.link,
                "submitted": e.submitted,
                **dict(zip(SCORE_COLUMNS, e.scores)),
                "interval_source": e.source,
                "id": e.id,
                "content_sha256": e.content_sha256,
            }
        )
    return radiologist, entries


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value  # a number: its shortest exact repr (a negative kappa stays a number)


def to_csv(board: Board) -> str:
    """Every column; text that a spreadsheet would run as a formula starts with a `'`."""
    radiologist, entries = _records(board)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in ([radiologist] if radiologist else []) + entries:
        writer.writerow([_csv_cell(v) for v in record.values()])
    return buffer.getvalue()


def to_json(board: Board) -> str:
    """One entry a line: readable, diffable, and written by json's C encoder (an indent would
    make it fall back to the pure-Python one, several times slower)."""
    radiologist, entries = _records(board)
    head = {
        "format": JSON_FORMAT,
        "threshold": board.threshold,
        "keep": board.keep,
        "left_off": board.left_off,
    }

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    lines = [f' "{key}": {dump(value)},' for key, value in head.items()]
    lines.append(f' "radiologist": {dump(radiologist)},')
    body = ",\n".join(f"  {dump(entry)}" for entry in entries)
    lines.append(f' "entries": [\n{body}\n ]' if entries else ' "entries": []')
    return "{\n" + "\n".join(lines) + "\n}\n"


# --- HTML ---------------------------------------------------------------------------------------

# The page's own rules, beside those every page has (scorer.html).
_STYLE = """\
th, td { padding: .25rem .55rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:nth-child(3), td:nth-child(3), th:nth-child(2), td:nth-child(2) { text-align: left; }
td:nth-child(3) { white-space: normal; max-width: 32rem; overflow-wrap: anywhere; }
thead th { background: #f3f3f3; position: sticky; top: 0; }
tr.radiologist td { background: #fbeeee; font-style: italic; }
td.codalab-interval { color: #777; }
.rules, figcaption, .left-off, .codalab-note { color: #555; max-width: 60rem; }
"""


# What the page says of an interval imported from CodaLab (marked CODALAB_MARK).
CODALAB_NOTE = (
    f"{CODALAB_MARK} Imported from a CodaLab dump: the interval is the one the official MURA evaluation "
    "script wrote. That script used the variance of kappa, p_a(1 − p_a) / (n(1 − p_e)²), as its standard "
    "error, leaving out the square root, so its intervals are about 30 times too narrow: they are not "
    "comparable with `mura score`'s intervals (the 95% percentile bootstrap)."
)


def _score_cells(scores: tuple[float | None, ...], source: str | None) -> str:
    """Kappa, its interval, and each type's kappa (its interval on hover); an imported interval
    is marked as CodaLab's."""
    imported = source == CODALAB
    overall = interval(scores[1], scores[2])
    if imported and overall != "—":
        cells = [f'<td>{number(scores[0])}</td><td class="codalab-interval">{overall}{CODALAB_MARK}</td>']
    else:
        cells = [f"<td>{number(scores[0])}</td><td>{overall}</td>"]
    for i in range(3, len(scores), 3):
        kappa, lower, upper = scores[i : i + 3]
        hover = interval(lower, upper) + (f"{CODALAB_MARK} CodaLab's, too narrow" if imported else "")
        title = "" if lower is None or upper is None else f' title="{escape(hover)}"'
        cells.append(f"<td{title}>{number(kappa)}</td>")
    return "".join(cells)


def _html_model(entry: Scored) -> str:
    def anchor(link: str) -> str:
        link = escape(safe_link(link))
        return f'<a href="{link}" rel="nofollow noopener">{link}</a>'

    return _model(entry, escape, anchor)


def _radiologist_row(r: Radiologist) -> str:
    label = escape(r.label)
    return (
        f'<tr class="radiologist"><td></td><td></td><td>{label}</td>{_score_cells(r.scores, r.source)}</tr>'
    )


def to_html(board: Board, *, title: str = TITLE, plot_top: int = PLOT_TOP) -> str:
    head = ["Rank", "Date", "Model", "Kappa", "Interval", *GROUPS[1:]]
    rows = [_radiologist_row(board.radiologist)] if board.radiologist is not None else []
    rows += [
        f"<tr><td>{row.rank}</td><td>{display_date(row.entry.submitted)}</td><td>{_html_model(row.entry)}</td>"
        f"{_score_cells(row.entry.scores, row.entry.source)}</tr>"
        for row in board.rows
    ]
    parts = [f'<p class="rules">{escape(_rules(board))}</p>', table(head, rows, "leaderboard")]
    if any(row.entry.source == CODALAB for row in board.rows):
        parts.append(f'<p class="codalab-note" id="codalab-intervals">{escape(CODALAB_NOTE)}</p>')
    if board.rows or board.radiologists:
        parts.append(_figure(board, plot_top))
    if board.left_off:
        parts.append(f'<p class="left-off">Left off: {escape(left_off_text(board))}.</p>')
    return page(title, parts, _STYLE)


def _rules(board: Board) -> str:
    keep = {"all": "every submission", "best": "each submitter's best", "latest": "each submitter's latest"}
    return (
        f"{len(board.rows)} entries ({keep[board.keep]}), ranked by overall Cohen's kappa against the gold "
        "standard at full precision, shown to three decimals; equal kappas share a rank, listed earliest "
        f"submission first. Entries with an invalid kappa or one below {board.threshold:g} are left off. "
        "Per-type columns: kappa for each study type (hover for its interval)."
    )


def left_off_text(board: Board) -> str:
    """`3 with a kappa below 0.5; 1 failed to score`."""
    phrases = {
        "invalid_kappa": "with an invalid kappa",
        "below_threshold": f"with a kappa below {board.threshold:g}",
        "not_kept": f"not the submitter's {board.keep}",
        "failed": "failed to score",
    }
    return "; ".join(f"{n} {phrases[reason]}" for reason, n in board.left_off.items())


def plot_label(entry: Scored) -> str:
    return f"{entry_name(entry)} ({entry.institution})" if entry.institution else entry_name(entry)


def _figure(board: Board, top: int) -> str:
    from scorer.leaderboard.plot import forest_svg

    shown = min(top, len(board.rows))
    alt = f"Forest plot: overall kappa with its interval for the top {shown} entries beside the radiologists"
    caption = (
        f"The top {shown} entries' overall kappa (square) with its interval (line), beside the radiologists "
        "(red; the dashed line is the best radiologist's kappa). Intervals are as scored: for `mura score` "
        "results, the 95% percentile bootstrap"
    )
    if any(row.entry.source == CODALAB for row in board.rows[:top]):
        caption += (
            f"; for entries imported from CodaLab ({CODALAB_MARK}, dotted), the official script's, about 30 "
            "times too narrow"
        )
    caption += "."
    return (
        f'<figure id="forest">{forest_svg(board, top, plot_label, alt)}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


@dataclass(frozen=True)
class Options:
    """What `mura leaderboard render` asks of every format beside the board (the HTML page's
    title and how many entries its forest plot shows; the other formats have no use for them)."""

    title: str = TITLE
    plot_top: int = PLOT_TOP


# Every format, by the name `--format` takes: a new format is one entry here.
RENDERERS: dict[str, Callable[[Board, Options], str]] = {
    "md": lambda board, _: to_markdown(board),
    "html": lambda board, options: to_html(board, title=options.title, plot_top=options.plot_top),
    "csv": lambda board, _: to_csv(board),
    "json": lambda board, _: to_json(board),
}


def render_board(fmt: str, board: Board, options: Options = Options()) -> str:
    """The board in the format named `fmt` (a key of RENDERERS)."""
    return RENDERERS[fmt](board, options)
