"""A study's answer from its views (SPEC §2): the one rule of training's validation, predict and
CAM. A study's probability is the arithmetic mean of its views' probabilities (summed in the
order the views come); the study is abnormal iff that probability is above the threshold: 0.5
(the MURA paper's) unless a bundle's manifest sets another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

AGGREGATIONS = ("mean",)  # the manifest's `aggregation`; the only one so far
DEFAULT_THRESHOLD = 0.5


@dataclass
class StudyMean:
    """A study's running mean: a sum and a count, so a long input holds no list of views."""

    total: float = 0.0
    views: int = 0

    def add(self, probability: float) -> None:
        self.total += probability
        self.views += 1

    @property
    def probability(self) -> float:
        return self.total / self.views


def study_probability(views: Iterable[float]) -> float:
    """The mean of a study's view probabilities."""
    mean = StudyMean()
    for probability in views:
        mean.add(float(probability))
    return mean.probability


def study_label(probability: float, threshold: float = DEFAULT_THRESHOLD) -> int:
    """1 (abnormal) iff `probability` > `threshold`, else 0 (normal)."""
    return int(probability > threshold)
