"""The hidden test set as a submission sees it: no label, no patient, nothing to map back.

MURA's folder names are labels (`study1_positive`), so the test input is rebuilt (SPEC §3):
every gold study's images are copied into a fresh tree

    DATA/test/XR_{TYPE}/case{NNNN}/image{M}.png      and DATA/input.csv listing them

with the cases numbered in a shuffled order drawn from a secret seed (so neither the gold
file's order nor the numbering says anything), files and folders created in case order with
one fixed mtime and fixed permissions (so directory order, inode numbers and times say
nothing either). The files are copied, never hard-linked: a hard link would show the
original's inode, mtime and link count. The map back (anonymised study -> real study, and the
seed) is written to the organiser's private folder only, which is never mounted.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scorer.errors import HostError, examples
from scorer.formats import RaterTable, csv_field
from scorer.harness.sandbox import DATA_MOUNT
from scorer.paths import IMAGE_SUFFIXES

FIXED_MTIME = 1_500_000_000  # every staged file and folder: July 2017
MAP_NAME = "map.csv"


@dataclass(frozen=True)
class Anonymised:
    data: Path  # the tree mounted read-only at DATA_MOUNT
    studies: tuple[str, ...]  # the anonymised study keys, as the submission must write them
    real: dict[str, str]  # anonymised study -> real study (the gold file's key)
    images: int
    seed: int


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def study_images(test_dir: Path, table: RaterTable) -> dict[str, list[Path]]:
    """Each gold study's image files under `test_dir`, in natural order (image2 before image10)."""
    found: dict[str, list[Path]] = {}
    missing: list[str] = []
    for study in table.studies:
        folder = test_dir / study
        images = (
            sorted(
                (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda p: _natural(p.name),
            )
            if folder.is_dir()
            else []
        )
        if not images:
            missing.append(study)
        found[study] = images
    if missing:
        raise HostError(
            f"test folder {test_dir}: found none for {len(missing)} of {len(table.studies)} studies: "
            f"{examples(missing, 2)}; expected the images of every gold study under it (e.g. "
            f"{test_dir / table.studies[0]}*.png); pass the folder that holds MURA-v1.1/"
        )
    return found


def anonymise(
    test_dir: Path, table: RaterTable, data: Path, private: Path, seed: int | None = None
) -> Anonymised:
    """Build the anonymised tree in `data` (new) and write the map back to `private`."""
    seed = secrets.randbits(63) if seed is None else seed
    images = study_images(test_dir, table)
    order = np.random.default_rng(seed).permutation(len(table.studies))
    width = max(4, len(str(len(order))))
    data.mkdir(parents=True)
    lines: list[str] = []
    real: dict[str, str] = {}
    made: list[Path] = []
    # Case k is the k-th study of the shuffled order; cases are created in case order.
    for case, index in enumerate(order, start=1):
        study = table.studies[index]
        folder = Path("test") / f"XR_{table.types[index]}" / f"case{case:0{width}d}"
        (data / folder).mkdir(parents=True, exist_ok=True)
        key = f"{DATA_MOUNT}/{folder.as_posix()}/"
        real[key] = study
        for view, source in enumerate(images[study], start=1):
            target = data / folder / f"image{view}{source.suffix.lower()}"
            shutil.copyfile(source, target)
            made.append(target)
            lines.append(f"{DATA_MOUNT}/{folder.as_posix()}/{target.name}")
    (data / "input.csv").write_text("".join(f"{line}\n" for line in lines))
    made.append(data / "input.csv")
    for path in made:
        path.chmod(0o444)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    for folder in sorted((p for p in data.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [data]:
        folder.chmod(0o555)
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))

    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    (private / MAP_NAME).write_text(map_text(real, seed))
    return Anonymised(data, tuple(real), real, len(lines), seed)


def map_text(real: Mapping[str, str], seed: int) -> str:
    """The map back, the organiser's private file: each anonymised study and its real one."""
    rows = "".join(f"{csv_field(anon)},{csv_field(study)}\n" for anon, study in real.items())
    return f"# anonymisation seed {seed}\nanonymised_study,study\n{rows}"


def remove_tree(path: Path) -> None:
    """Delete a tree whose folders may be read-only (the staged data, or whatever a submission
    left in its /output): each folder is opened up before it is entered; links are removed,
    never followed."""
    if path.is_symlink() or not path.exists():
        path.unlink(missing_ok=True)
        return
    path.chmod(0o700)
    for root, folders, _ in os.walk(path):
        for name in folders:
            folder = os.path.join(root, name)
            if not os.path.islink(folder):
                os.chmod(folder, 0o700)
    shutil.rmtree(path)
