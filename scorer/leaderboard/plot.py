"""The leaderboard page's forest plot: the top entries' overall kappa with its interval, beside
the radiologists. matplotlib is imported only here, only when a page is drawn."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

from scorer.leaderboard.rank import Board, Scored

ENTRY_COLOUR = "#1f5fa8"
RADIOLOGIST_COLOUR = "#c0392b"
LABEL_CHARS = 48


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def forest_png(board: Board, top: int, entry_label: Callable[[Scored], str]) -> bytes:
    """A PNG (same board, same bytes): one line per radiologist, then the top `top` entries."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    lines = [(r.label, r.scores[:3], RADIOLOGIST_COLOUR) for r in board.radiologists]
    lines += [
        (f"#{row.rank} {entry_label(row.entry)}", row.entry.scores[:3], ENTRY_COLOUR)
        for row in board.rows[:top]
    ]
    fig = Figure(figsize=(9, 1.4 + 0.28 * max(len(lines), 1)), dpi=100)
    ax = fig.add_subplot()
    ys = list(range(len(lines), 0, -1))
    for y, (_, (kappa, lower, upper), colour) in zip(ys, lines):
        if kappa is None:
            continue
        if lower is not None and upper is not None:
            ax.plot([lower, upper], [y, y], color=colour, lw=1.6, solid_capstyle="butt")
        ax.plot([kappa], [y], "s", color=colour, ms=5)
    if board.radiologist is not None and board.radiologist.kappa is not None:
        ax.axvline(board.radiologist.kappa, color=RADIOLOGIST_COLOUR, lw=1, ls="--")
    ax.set_yticks(ys, [_label(text) for text, _, _ in lines], parse_math=False, fontsize=8)
    ax.set_ylim(0.3, len(lines) + 0.7)
    ax.set_xlabel("Overall Cohen's kappa with its interval")
    ax.grid(axis="x", color="#ddd", lw=0.6)
    ax.set_axisbelow(True)
    fig.subplots_adjust(left=0.42, right=0.97, top=0.97, bottom=1.0 / fig.get_figheight())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph DejaVu Sans lacks is drawn as a box, not an error
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
