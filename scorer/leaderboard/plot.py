"""The leaderboard page's forest plot: the top entries' overall kappa with its interval, beside
the radiologists, as inline SVG.

Drawn by hand rather than with matplotlib: twenty lines, squares and labels are a few dozen
elements, and importing matplotlib alone took longer (about 1 s on the 2-core VM) than the
whole rest of rendering 10,000 entries. SVG text also stays sharp, searchable and selectable,
and the page needs no image at all.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from scorer.leaderboard.rank import Board, Scored
from scorer.leaderboard.schema import CODALAB

ENTRY_COLOUR = "#1f5fa8"
RADIOLOGIST_COLOUR = "#c0392b"
LABEL_CHARS = 48
CODALAB_MARK = "†"  # an interval imported from CodaLab (the official script's, too narrow)

WIDTH = 900
LEFT = 380  # the labels' column
RIGHT = 24
TOP = 10
ROW = 22
BOTTOM = 46  # tick labels and the axis title
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _ticks(low: float, high: float) -> list[float]:
    """Round steps (0.01, 0.02, 0.05, 0.1, ...) giving 4 to 10 ticks between low and high."""
    span = max(high - low, 1e-9)
    step = 10.0 ** math.floor(math.log10(span / 4))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 10:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 10) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def forest_svg(board: Board, top: int, entry_label: Callable[[Scored], str], alt: str) -> str:
    """An <svg> element (same board, same bytes): one line per radiologist, then the top `top`
    entries; `alt` is its accessible name. An interval imported from CodaLab is dotted and its
    label marked."""
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
    best = board.radiologist.kappa if board.radiologist is not None else None
    values = [v for _, scores, _, _ in lines for v in scores if v is not None]
    values += [best] if best is not None else []
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max((high - low) * 0.05, 0.01)
    low, high = max(-1.0, low - pad), min(1.0, high + pad)
    ticks = _ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])
    plot_bottom = TOP + ROW * max(len(lines), 1)
    height = plot_bottom + BOTTOM

    def x(value: float) -> str:
        return f"{LEFT + (value - low) / (high - low) * (WIDTH - LEFT - RIGHT):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-label="{html.escape(alt)}"><title>{html.escape(alt)}</title>'
    ]
    for tick in ticks:  # grid and tick labels
        parts.append(
            f'<line x1="{x(tick)}" y1="{TOP}" x2="{x(tick)}" y2="{plot_bottom}" stroke="#ddd" '
            'stroke-width="1"/>'
            f'<text x="{x(tick)}" y="{plot_bottom + 16}" text-anchor="middle" {FONT}>{tick:g}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{plot_bottom}" x2="{WIDTH - RIGHT}" y2="{plot_bottom}" stroke="#555"/>'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{height - 6}" text-anchor="middle" {FONT}>'
        "Overall Cohen&#x27;s kappa with its interval</text>"
    )
    if best is not None:
        parts.append(
            f'<line class="best-radiologist" x1="{x(best)}" y1="{TOP}" x2="{x(best)}" y2="{plot_bottom}" '
            f'stroke="{RADIOLOGIST_COLOUR}" stroke-width="1.5" stroke-dasharray="5 4"/>'
        )
    for i, (text, (kappa, lower, upper), colour, imported) in enumerate(lines):
        y = TOP + ROW * i + ROW / 2
        label = html.escape(_label(text) + (f" {CODALAB_MARK}" if imported else ""))
        parts.append(f'<text x="{LEFT - 10}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{label}</text>')
        if kappa is None:
            continue
        if lower is not None and upper is not None:
            style = (
                'class="interval codalab-interval" stroke-dasharray="2 2"' if imported else 'class="interval"'
            )
            parts.append(
                f'<line {style} x1="{x(lower)}" y1="{y}" x2="{x(upper)}" y2="{y}" '
                f'stroke="{colour}" stroke-width="3" shape-rendering="crispEdges"/>'
            )
        parts.append(
            f'<rect class="kappa" x="{float(x(kappa)) - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" '
            f'fill="{colour}" shape-rendering="crispEdges"><title>{kappa:.3f}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)
