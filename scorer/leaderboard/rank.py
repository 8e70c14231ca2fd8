"""The board: which entries show, in what order, with what rank (the MURA page's rules, SPEC §5).

- Only scored submissions with a valid kappa (a number) at or above the threshold (0.5) show.
- Order: overall kappa at full precision, highest first; equal kappas, the earliest submission
  first (then the first recorded).
- Rank: equal kappas share a rank and the next lower kappa gets the previous rank plus one
  (1, 2, 3, 4, 5, 5, 6, ...), so two rows displayed as 0.764 may carry different ranks.
- keep: "all" (MURA's way: every submission), "best" (each submitter's highest kappa) or
  "latest" (each submitter's latest scored submission, shown only if it passes the threshold).
- The radiologist row, unranked and first: the best radiologist among the stored results'
  baselines (the highest overall kappa; a tie, the earliest recorded), or a kappa given by hand
  (a CodaLab import has no baselines; MURA's page showed 0.778).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scorer.errors import HostError
from scorer.leaderboard.schema import KIT, SCORE_COLUMNS

if TYPE_CHECKING:
    from scorer.leaderboard.store import Store

KEEP = ("all", "best", "latest")
DEFAULT_THRESHOLD = 0.5
RADIOLOGIST_LABEL = "Best Radiologist Performance"
_N_SCORES = len(SCORE_COLUMNS)


@dataclass(frozen=True, slots=True)
class Scored:
    """A scored submission as the board sees it."""

    id: int
    submitter: str | None  # None: anonymous (a CodaLab entry without a user name)
    model: str | None
    institution: str | None
    link: str | None
    submitted: str  # ISO 8601 UTC
    scores: tuple[float | None, ...]  # SCORE_COLUMNS order: kappa, lower, upper for each of GROUPS
    content_sha256: str | None = None
    note: str | None = None  # what followed the institution in a CodaLab description
    source: str = KIT  # where the scores and their intervals come from (schema.KIT or CODALAB)

    @property
    def kappa(self) -> float | None:
        return self.scores[0]

    @classmethod
    def from_row(cls, row: tuple) -> Scored:
        """A row of Store.scored (store.BOARD_COLUMNS)."""
        return cls(*row[:6], row[6 : 6 + _N_SCORES], *row[6 + _N_SCORES :])


@dataclass(frozen=True, slots=True)
class Radiologist:
    label: str
    scores: tuple[float | None, ...]  # as Scored.scores
    source: str | None = KIT  # a stored baseline's (`mura score`); None: given by hand, no interval

    @property
    def kappa(self) -> float | None:
        return self.scores[0]


@dataclass(frozen=True, slots=True)
class Row:
    rank: int
    entry: Scored


@dataclass(frozen=True)
class Board:
    rows: list[Row]
    radiologist: Radiologist | None  # the unranked first row
    radiologists: list[Radiologist]  # the baselines beside it (for the forest plot)
    threshold: float
    keep: str
    # How many were left off, by reason: invalid_kappa, below_threshold, not_kept (not the
    # submitter's best or latest), failed (not scored).
    left_off: dict[str, int] = field(default_factory=dict)


def valid(kappa: float | None) -> bool:
    return kappa is not None and math.isfinite(kappa)


def _order(entry: Scored) -> tuple:
    return (-entry.kappa, entry.submitted, entry.id)  # type: ignore[operator]


def keep_entries(entries: list[Scored], keep: str) -> list[Scored]:
    """All entries, or one per submitter: the best (valid) kappa or the latest submission. Each
    anonymous entry is a submitter of its own (nothing says two were the same person's)."""
    if keep == "all":
        return list(entries)
    chosen: dict[str | int, Scored] = {}
    for entry in entries:
        who = entry.id if entry.submitter is None else entry.submitter
        held = chosen.get(who)
        if keep == "best":
            if valid(entry.kappa) and (held is None or _order(entry) < _order(held)):
                chosen[who] = entry
        elif held is None or (entry.submitted, entry.id) > (held.submitted, held.id):  # latest
            chosen[who] = entry
    return list(chosen.values())


def rank(
    entries: list[Scored], threshold: float = DEFAULT_THRESHOLD, keep: str = "all"
) -> tuple[list[Row], dict]:
    """The ranked rows and how many entries were left off, by reason."""
    if keep not in KEEP:
        raise HostError(f"--keep: expected one of {', '.join(KEEP)}, found {keep!r}")
    if not (isinstance(threshold, (int, float)) and -1.0 <= threshold <= 1.0):
        raise HostError(f"--threshold: expected a kappa between -1 and 1, found {threshold!r}")
    kept = keep_entries(entries, keep)
    shown = [e for e in kept if valid(e.kappa) and e.kappa >= threshold]  # type: ignore[operator]
    invalid = sum(not valid(e.kappa) for e in kept)
    left_off = {
        "invalid_kappa": invalid,
        "below_threshold": len(kept) - len(shown) - invalid,
        "not_kept": len(entries) - len(kept),
    }
    shown.sort(key=_order)
    rows: list[Row] = []
    for entry in shown:
        if not rows:
            current = 1
        elif entry.kappa < rows[-1].entry.kappa:  # type: ignore[operator]
            current = rows[-1].rank + 1
        rows.append(Row(current, entry))
    return rows, {reason: n for reason, n in left_off.items() if n}


def build(
    store: Store,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    keep: str = "all",
    radiologist_kappa: float | None = None,
    radiologist_label: str | None = None,
) -> Board:
    """The board of a store, read in one snapshot."""
    with store.snapshot():
        entries = [Scored.from_row(row) for row in store.scored()]
        baselines = store.best_radiologists() if radiologist_kappa is None else None
        failed = store.counts()["failed"]
    rows, left_off = rank(entries, threshold, keep)
    if failed:
        left_off["failed"] = failed
    radiologists: list[Radiologist] = []
    best = None
    if radiologist_kappa is not None:
        if not (isinstance(radiologist_kappa, (int, float)) and -1.0 <= radiologist_kappa <= 1.0):
            raise HostError(
                f"--radiologist-kappa: expected a kappa between -1 and 1, found {radiologist_kappa!r}"
            )
        scores = (float(radiologist_kappa),) + (None,) * (_N_SCORES - 1)
        best = Radiologist(radiologist_label or RADIOLOGIST_LABEL, scores, None)
        radiologists = [best]
    elif baselines is not None:
        name, found = baselines
        radiologists = [Radiologist(rater, scores) for rater, scores in found.items()]
        best = Radiologist(radiologist_label or f"{RADIOLOGIST_LABEL} ({name})", found[name])
    return Board(rows, best, radiologists, threshold, keep, left_off)
