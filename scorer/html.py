"""The kit's HTML pages (the score report, the participants' view, the label audit, the
leaderboard): one skeleton, one Content-Security-Policy, the style they share, and the way a
number and an interval are written.

Standard library only: the leaderboard renders without numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["CSP", "escape", "interval", "number", "page", "table"]

# No script, nothing fetched, no image: plots are inline SVG, the only style is inline.
CSP = "default-src 'none'; style-src 'unsafe-inline'"
# Every page's style is these rules around its own (its tables differ).
_STYLE_FIRST = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
"""
_STYLE_LAST = """figure { margin: 2rem 0; }
svg { max-width: 100%; height: auto; }
"""


def number(value: float | None) -> str:
    """`0.812`; `—` for an undefined value."""
    return "—" if value is None else f"{value:.3f}"


def interval(lower: float | None, upper: float | None) -> str:
    """`[0.750, 0.861]`; `—` when either bound is undefined."""
    return "—" if lower is None or upper is None else f"[{lower:.3f}, {upper:.3f}]"


def table(head: Sequence[str], rows: Sequence[str], table_id: str | None = None) -> str:
    """A table: `head` is its header cells' text, `rows` its <tr> elements (HTML), one a line."""
    th = "".join(f"<th>{escape(cell)}</th>" for cell in head)
    opening = "<table>" if table_id is None else f'<table id="{escape(table_id)}">'
    return f"{opening}<thead><tr>{th}</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table>"


def page(title: str, parts: Sequence[str], style: str) -> str:
    """A whole page: the title as its <h1>, then `parts` (HTML), one a line; `style` holds the
    page's own rules (one a line)."""
    head = (
        '<meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE_FIRST}{style}{_STYLE_LAST}</style>"
    )
    body = "\n".join([f"<h1>{escape(title)}</h1>", *parts])
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>{body}\n</body></html>\n'
