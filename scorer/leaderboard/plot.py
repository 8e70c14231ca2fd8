"""The leaderboard page's forest plot: the top entries' overall kappa with its interval, beside
the radiologists, as inline SVG drawn by the kit (scorer.svg says why).
"""

from __future__ import annotations

import html
from collections.abc import Callable

from scorer.leaderboard.rank import Board, Scored
from scorer.leaderboard.schema import CODALAB
from scorer.svg import MODEL_COLOUR, RADIOLOGIST_COLOUR, Scale, coordinate, svg, text, ticks, x_axis

ENTRY_COLOUR = MODEL_COLOUR
LABEL_CHARS = 48
CODALAB_MARK = "†"  # an interval imported from CodaLab (the official script's, too narrow)

WIDTH = 900
LEFT = 380  # the labels' column
RIGHT = 24
TOP = 10
ROW = 22
BOTTOM = 46  # tick labels and the axis title

# A line of the plot: its label, (kappa, lower, upper), its colour, whether its interval is CodaLab's.
Line = tuple[str, tuple, str, bool]


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _lines(board: Board, top: int, entry_label: Callable[[Scored], str]) -> list[Line]:
    """One line per radiologist, then the top `top` entries."""
    lines = [(r.label, r.scores[:3], RADIOLOGIST_COLOUR, False) for r in board.radiologists]
    lines += [
        (
            f"#{row.rank} {entry_label(row.entry)}",
            row.entry.scores[:3],
            ENTRY_COLOUR,
            row.entry.source == CODALAB,
        )
        for row in board.rows[:top]
    ]
    return lines


def _kappa_axis(lines: list[Line], best: float | None) -> tuple[Scale, list[float]]:
    """The kappa axis: every value drawn with a little room, widened to round ticks."""
    values = [v for _, scores, _, _ in lines for v in scores if v is not None]
    values += [best] if best is not None else []
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max((high - low) * 0.05, 0.01)
    low, high = max(-1.0, low - pad), min(1.0, high + pad)
    marks = ticks(low, high)
    return Scale(min(low, marks[0]), max(high, marks[-1]), LEFT, WIDTH - RIGHT), marks


def _line(i: int, line: Line, x: Scale) -> str:
    """A line's label, its interval (dotted when imported) and its kappa's square."""
    name, (kappa, lower, upper), colour, imported = line
    y = TOP + ROW * i + ROW / 2
    label = html.escape(_label(name) + (f" {CODALAB_MARK}" if imported else ""))
    parts = [text(LEFT - 10, f"{y + 4:.1f}", label, "end")]
    if kappa is None:
        return parts[0]
    if lower is not None and upper is not None:
        style = 'class="interval codalab-interval" stroke-dasharray="2 2"' if imported else 'class="interval"'
        parts.append(
            f'<line {style} x1="{x.at(lower)}" y1="{y}" x2="{x.at(upper)}" y2="{y}" '
            f'stroke="{colour}" stroke-width="3" shape-rendering="crispEdges"/>'
        )
    left = coordinate(float(x.at(kappa)) - 4.5)  # from the centre as written, as the line's ends are
    parts.append(
        f'<rect class="kappa" x="{left}" y="{y - 4.5:.1f}" width="9" height="9" fill="{colour}" '
        f'shape-rendering="crispEdges"><title>{kappa:.3f}</title></rect>'
    )
    return "".join(parts)


def forest_svg(board: Board, top: int, entry_label: Callable[[Scored], str], alt: str) -> str:
    """An <svg> element (same board, same bytes): one line per radiologist, then the top `top`
    entries; `alt` is its accessible name. An interval imported from CodaLab is dotted and its
    label marked."""
    lines = _lines(board, top, entry_label)
    best = board.radiologist.kappa if board.radiologist is not None else None
    x, marks = _kappa_axis(lines, best)
    plot_bottom = TOP + ROW * max(len(lines), 1)
    height = plot_bottom + BOTTOM
    parts = [x_axis(x, marks, TOP, plot_bottom, "Overall Cohen's kappa with its interval", height - 6)]
    if best is not None:
        at = x.at(best)
        parts.append(
            f'<line class="best-radiologist" x1="{at}" y1="{TOP}" x2="{at}" y2="{plot_bottom}" '
            f'stroke="{RADIOLOGIST_COLOUR}" stroke-width="1.5" stroke-dasharray="5 4"/>'
        )
    parts += [_line(i, line, x) for i, line in enumerate(lines)]
    return svg(WIDTH, height, alt, parts)
