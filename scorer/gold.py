"""The gold standard: the majority vote of a chosen group of raters.

MURA's hidden test set was read by six radiologists; three chosen at random form the gold
standard (their majority) and the other three are scored against it as the human baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scorer.errors import HostError
from scorer.formats import RaterTable

GOLD_GROUP_SIZE = 3


@dataclass(frozen=True)
class Panel:
    gold: tuple[str, ...]  # raters whose majority is the gold standard
    radiologists: tuple[str, ...]  # the others, scored against it as the human baseline
    choice: str  # how the gold raters were chosen: label | all | given | random


def choose_panel(
    table: RaterTable, requested: Sequence[str] | None, seed: int, option: str = "--gold-raters"
) -> Panel:
    """Split the gold file's raters into the gold group and the radiologists to score.

    `option` is how messages name the setting that gave `requested` (Settings.option)."""
    raters = table.raters
    if requested:
        by_name = {name.lower(): name for name in raters}
        unknown = [name for name in requested if name.lower() not in by_name]
        if unknown:
            raise HostError(
                f"{option} names {', '.join(unknown)}, which the gold file does not have; "
                f"its raters are {', '.join(raters)}"
            )
        chosen = [by_name[name.lower()] for name in requested]
        if len(set(chosen)) != len(chosen):
            raise HostError(f"{option} names a rater twice: {', '.join(requested)}")
        if len(chosen) % 2 == 0:
            raise HostError(
                f"{option} names {len(chosen)} raters; a majority vote needs an odd number (MURA used 3)"
            )
        gold = tuple(name for name in raters if name in chosen)  # file order
        return Panel(gold, tuple(r for r in raters if r not in gold), "given")
    if len(raters) == 1:
        return Panel(raters, (), "label")
    if len(raters) <= GOLD_GROUP_SIZE:
        if len(raters) % 2 == 0:
            raise HostError(
                f"the gold file has {len(raters)} raters; a majority vote needs an odd number: "
                f"add a rater or name the gold group with {option}"
            )
        return Panel(raters, (), "all")
    picked = np.sort(np.random.default_rng(seed).choice(len(raters), GOLD_GROUP_SIZE, replace=False))
    gold = tuple(raters[i] for i in picked)
    return Panel(gold, tuple(r for r in raters if r not in gold), "random")


def majority(table: RaterTable, raters: Sequence[str]) -> np.ndarray:
    """1 where more than half of `raters` read the study as abnormal."""
    columns = [table.raters.index(name) for name in raters]
    votes = table.votes[:, columns].sum(axis=1)
    return (2 * votes > len(columns)).astype(np.int8)


def reads(table: RaterTable, rater: str) -> np.ndarray:
    return table.votes[:, table.raters.index(rater)].astype(np.int8)
