"""The kit's plots as inline SVG: the leaderboard's forest plot and the score report's ROC curve
share these axes, scales and colours.

Drawn by the kit rather than with matplotlib: a plot here is a few dozen elements, and importing
matplotlib alone took longer (about 1 s on the 2-core VM) than the rest of `mura score --html`
or of rendering 10,000 leaderboard entries (bench/README.md). SVG text also stays sharp,
searchable and selectable, and a page needs no image, so its Content-Security-Policy allows
none. Standard library only: the leaderboard renders without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

MODEL_COLOUR = "#1f5fa8"  # a submission: a leaderboard entry, the model's ROC curve
RADIOLOGIST_COLOUR = "#c0392b"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
GRID = 'stroke="#ddd" stroke-width="1"'
AXIS = 'stroke="#555"'


def coordinate(value: float) -> str:
    """How a position is written: to 0.1 px."""
    return f"{value:.1f}"


@dataclass(frozen=True)
class Scale:
    """A linear axis: data values from `low` to `high` onto positions from `start` to `end`
    (`end` < `start` for a vertical axis, whose values grow upwards)."""

    low: float
    high: float
    start: int
    end: int

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def at(self, value: float) -> str:
        return coordinate(self(value))


def ticks(low: float, high: float) -> list[float]:
    """Round steps (0.01, 0.02, 0.05, 0.1, ...) giving 4 to 10 ticks between low and high."""
    span = max(high - low, 1e-9)
    step = 10.0 ** math.floor(math.log10(span / 4))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 10:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 10) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def svg(width: int, height: int, alt: str, parts: Iterable[str]) -> str:
    """An <svg> element of `parts`; `alt` is its accessible name."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(alt)}"><title>{escape(alt)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def line(x1: object, y1: object, x2: object, y2: object, style: str) -> str:
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style}/>'


def text(x: object, y: object, content: str, anchor: str = "start", extra: str = "") -> str:
    """A <text> of `content` (HTML: escape what is not the kit's own) at (x, y)."""
    extra = f" {extra}" if extra else ""
    return f'<text x="{x}" y="{y}"{extra} text-anchor="{anchor}" {FONT}>{content}</text>'


def x_axis(x: Scale, marks: Sequence[float], top: int, bottom: int, title: str, title_y: int) -> str:
    """A horizontal axis at `bottom`: a grid line from `top` and a label at each of `marks`, the
    axis line, and its title at `title_y`."""
    grid = "".join(
        line(x.at(tick), top, x.at(tick), bottom, GRID) + text(x.at(tick), bottom + 16, f"{tick:g}", "middle")
        for tick in marks
    )
    middle = coordinate((x.start + x.end) / 2)
    return grid + line(x.start, bottom, x.end, bottom, AXIS) + text(middle, title_y, escape(title), "middle")


def y_axis(y: Scale, marks: Sequence[float], left: int, right: int, title: str, title_x: int) -> str:
    """A vertical axis at `left`: a grid line to `right` and a label at each of `marks`, the
    axis line, and its title (turned to read upwards) at `title_x`."""
    grid = "".join(
        line(left, y.at(tick), right, y.at(tick), GRID)
        + text(left - 6, coordinate(y(tick) + 4), f"{tick:g}", "end")
        for tick in marks
    )
    middle = coordinate((y.start + y.end) / 2)
    turned = f'transform="rotate(-90 {title_x} {middle})"'
    return (
        grid + line(left, y.start, left, y.end, AXIS) + text(title_x, middle, escape(title), "middle", turned)
    )
