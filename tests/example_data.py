"""Example gold files and submissions (test and benchmark fixtures), without MURA's hidden test set.

write_examples writes a 207-study gold file read by six simulated radiologists and a few
submissions: a strong one, a weak one, one that leaves out the studies it got wrong -- the trick
the official script's inner join rewarded -- and one with probabilities instead of 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scorer.paths import STUDY_TYPES

TEST_STUDIES = 207


@dataclass(frozen=True)
class ExampleTest:
    studies: list[str]
    truth: np.ndarray  # (n,) the true state, which raters and models see through noise
    votes: np.ndarray  # (n, raters)


def make_test(
    n: int = TEST_STUDIES, raters: int = 6, rater_accuracy: float = 0.9, seed: int = 0
) -> ExampleTest:
    """A MURA-shaped test set: study paths under all seven types (folder names colliding across
    types, as in MURA) and `raters` independent noisy reads of each study."""
    rng = np.random.default_rng(seed)
    types = [STUDY_TYPES[i % len(STUDY_TYPES)] for i in range(n)]
    truth = (rng.random(n) < 0.45).astype(np.int8)
    studies = []
    for i, (study_type, label) in enumerate(zip(types, truth)):
        patient = 11_500 + i // 3  # three studies per patient id, across different types
        suffix = "positive" if label else "negative"
        studies.append(f"MURA-v1.1/test/XR_{study_type}/patient{patient:05d}/study1_{suffix}/")
    flips = rng.random((n, raters)) > rater_accuracy
    votes = np.where(flips, 1 - truth[:, None], truth[:, None]).astype(np.int8)
    return ExampleTest(studies, truth, votes)


def noisy_predictions(test: ExampleTest, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flips = rng.random(len(test.truth)) > accuracy
    return np.where(flips, 1 - test.truth, test.truth).astype(np.int8)


def write_gold(path: Path, test: ExampleTest) -> None:
    lines = (f"{s}," + ",".join(map(str, v)) for s, v in zip(test.studies, test.votes))
    path.write_text("".join(line + "\n" for line in lines))


def write_predictions(path: Path, studies: list[str], values: list) -> None:
    path.write_text("".join(f"{s},{v}\n" for s, v in zip(studies, values)))


def write_examples(out: Path, seed: int = 0) -> dict[str, Path]:
    """The gold file and the example submissions; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    test = make_test(seed=seed)
    gold = out / "gold.csv"
    write_gold(gold, test)
    strong = noisy_predictions(test, 0.9, seed + 1)
    weak = noisy_predictions(test, 0.75, seed + 2)
    right = strong == test.truth
    files = {"gold": gold}
    for name, studies, values in [
        ("strong", test.studies, strong),
        ("weak", test.studies, weak),
        ("skips-hard-studies", [s for s, r in zip(test.studies, right) if r], strong[right]),
        ("probabilities", test.studies, np.round(np.clip(strong * 0.8 + 0.1, 0, 1), 2)),
    ]:
        files[name] = out / f"{name}.csv"
        write_predictions(files[name], studies, list(values))
    return files
