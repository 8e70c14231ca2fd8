"""The knobs of a scoring run. Their defaults are written once, here (Settings' fields): every
command (`mura score`, `audit-labels`, `evaluate`, `codabench bundle`) and Codabench's
scoring.json read them from DEFAULTS."""

from __future__ import annotations

from dataclasses import dataclass

from scorer.errors import HostError

# 100 times the paper's 10,000; each resample costs a few hundred bytes per group while it is
# scored (bootstrap.resample_cells), so this bounds the memory too.
MAX_RESAMPLES = 1_000_000
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Settings:
    gold_raters: tuple[str, ...] | None = None  # None: all, the label, or 3 drawn with `seed`
    seed: int = 0
    resamples: int = 10_000
    confidence: float = 0.95
    # Where the knobs came from, so messages name them as the organiser wrote them: the
    # command line (--gold-raters) or a settings file (Codabench's scoring.json).
    source: str = COMMAND_LINE

    def option(self, name: str) -> str:
        """How messages name the knob `name`: `--gold-raters` or `scoring.json field "gold_raters"`."""
        if self.source == COMMAND_LINE:
            return "--" + name.replace("_", "-")
        return f'{self.source} field "{name}"'

    def check(self) -> None:
        if not 1 <= self.resamples <= MAX_RESAMPLES:
            raise HostError(
                f"{self.option('resamples')} must be from 1 to {MAX_RESAMPLES:,}, found {self.resamples}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise HostError(
                f"{self.option('confidence')} must lie strictly between 0 and 1, found {self.confidence}"
            )
        if self.seed < 0:
            raise HostError(f"{self.option('seed')} must be a non-negative integer, found {self.seed}")


DEFAULTS = Settings()


def rater_names(settings_value: str | None) -> tuple[str, ...] | None:
    """`Rad1,Rad4,Rad5` -> ('Rad1', 'Rad4', 'Rad5')."""
    if not settings_value:
        return None
    names = tuple(name.strip() for name in settings_value.split(",") if name.strip())
    return names or None
