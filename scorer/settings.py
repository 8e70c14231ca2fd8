"""The knobs of a scoring run."""

from __future__ import annotations

from dataclasses import dataclass

from scorer.errors import HostError


@dataclass(frozen=True)
class Settings:
    gold_raters: tuple[str, ...] | None = None  # None: all, the label, or 3 drawn with `seed`
    seed: int = 0
    resamples: int = 10_000
    confidence: float = 0.95

    def check(self) -> None:
        if self.resamples < 1:
            raise HostError(f"--resamples must be at least 1, found {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise HostError(f"--confidence must lie strictly between 0 and 1, found {self.confidence}")
        if self.seed < 0:
            raise HostError(f"--seed must be a non-negative integer, found {self.seed}")


def rater_names(settings_value: str | None) -> tuple[str, ...] | None:
    """`Rad1,Rad4,Rad5` -> ('Rad1', 'Rad4', 'Rad5')."""
    if not settings_value:
        return None
    names = tuple(name.strip() for name in settings_value.split(",") if name.strip())
    return names or None
