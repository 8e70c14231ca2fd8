"""Reading a MURA tree: the index files, the per-image samples and the paper's loss weights
(how an image becomes the network's input: reference_model.preprocess).

The index files are MURA's (SPEC §1): `{split}_image_paths.csv` and
`{split}_labeled_studies.csv`, no header, LF or CRLF, paths relative to the folder that holds
`MURA-v1.1/`. The CSV rules and the path grammar come from the scorer (scorer.formats,
scorer.paths), so the model reads the files exactly as the scorer does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference_model.preprocess import load_image, transform
from scorer.errors import ScoringError, examples
from scorer.formats import read_gold, read_rows
from scorer.paths import IMAGE_SUFFIXES, STUDY_TYPES, study_of_image, study_type


class DataError(Exception):
    """A dataset that cannot be used; the message says what was expected and what to do."""


@dataclass(frozen=True)
class ImageRecord:
    path: str  # as the index gives it, relative to the dataset root
    study: str
    study_type: str
    label: int


def index_path(root: Path, split: str, kind: str) -> Path:
    return Path(root) / "MURA-v1.1" / f"{split}_{kind}.csv"


def read_image_paths(path: Path, warn: Callable[[str], None] | None = None) -> list[str]:
    """The image paths of an index file (`{split}_image_paths.csv` or a predict input.csv): one
    path a line, split as the scorer splits every CSV (a quoted path is one path, commas and
    all). Also read: a header line (its first field is not an image path: `image_path`,
    `image_path,label`), and empty fields after a path (`path,` from a spreadsheet export; one
    warning through `warn`). A line with a second value is refused: it is not an image list."""
    try:
        rows = read_rows(path, what="image index", participant=False)
    except ScoringError as exc:
        raise DataError(exc.message) from None
    rows = [row for row in rows if any(row.fields)]  # `,,` is a spreadsheet's blank line
    if rows and is_header(rows[0].fields[0]):
        rows = rows[1:]
    wrong = [row for row in rows if not row.fields[0] or any(row.fields[1:])]
    if wrong:
        raise DataError(
            f"image index {path}: expected one image path per line, found {len(wrong[0].fields)} fields on "
            f"line {wrong[0].line}{f' and {len(wrong) - 1} more lines' if len(wrong) > 1 else ''}"
        )
    padded = [row for row in rows if len(row.fields) > 1]
    if padded and warn is not None:
        warn(
            f"{path}: {len(padded)} lines end in empty comma-separated fields "
            f"(first: line {padded[0].line}); read as one image path per line"
        )
    return [row.fields[0] for row in rows]


def is_header(first: str) -> bool:
    """A header names a column; an image path has a folder and an image suffix."""
    return "/" not in first and not first.lower().endswith(IMAGE_SUFFIXES)


def read_split(root: str | Path, split: str, *, check_files: bool = True) -> list[ImageRecord]:
    """Every image of a split with its study, study type and the study's label."""
    root = Path(root)
    images_csv, labels_csv = (
        index_path(root, split, "image_paths"),
        index_path(root, split, "labeled_studies"),
    )
    for path in (images_csv, labels_csv):
        if not path.is_file():
            raise DataError(
                f"expected MURA's index file {path.name} in {path.parent}, found none; pass the folder "
                "that holds MURA-v1.1/ (e.g. the output of `mura synth`)"
            )
    try:
        labels_table = read_gold(labels_csv, what=f"{split} labels file")
    except ScoringError as exc:
        raise DataError(exc.message) from None
    if labels_table.raters != ("label",) and len(labels_table.raters) != 1:
        raise DataError(
            f"{labels_csv}: expected `study_path/,label` rows, found {len(labels_table.raters)} labels"
        )
    labels = dict(zip(labels_table.studies, labels_table.votes[:, 0].tolist()))
    records, unlabelled, untyped = [], [], []
    for path in read_image_paths(images_csv):
        study = study_of_image(path)
        kind = study_type(path)
        if study not in labels:
            unlabelled.append(path)
        elif kind is None:
            untyped.append(path)
        else:
            records.append(ImageRecord(path, study, kind, int(labels[study])))
    if unlabelled:
        raise DataError(
            f"{images_csv}: {len(unlabelled)} images belong to studies without a label in {labels_csv.name} "
            f"({examples(unlabelled)}); the two index files must describe the same studies"
        )
    if untyped:
        raise DataError(
            f"{images_csv}: {len(untyped)} image paths have no XR_{{TYPE}} folder ({examples(untyped)})"
        )
    if not records:
        raise DataError(f"{images_csv} lists no images")
    if check_files:
        missing = [r.path for r in records if not (root / r.path).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of the {len(records)} images listed in {images_csv.name} "
                f"are not under {root} "
                f"({examples(missing)}); pass the folder that holds MURA-v1.1/"
            )
    return records


def loss_weights(records: Sequence[ImageRecord]) -> dict[str, tuple[float, float]]:
    """{study type: (w_abnormal, w_normal)} from IMAGE counts, as the MURA paper defines them:
    w_T1 = |N_T| / (|A_T| + |N_T|), w_T0 = |A_T| / (|A_T| + |N_T|), where A_T and N_T are the
    abnormal and normal training images of type T. A type with images of one class only gets
    (1, 1): there is nothing to balance.

    >>> r = [ImageRecord("a", "s1/", "HAND", 1)] + [ImageRecord("b", "s2/", "HAND", 0)] * 3
    >>> loss_weights(r)["HAND"]
    (0.75, 0.25)
    """
    abnormal = Counter(r.study_type for r in records if r.label == 1)
    normal = Counter(r.study_type for r in records if r.label == 0)
    weights = {}
    for kind in STUDY_TYPES:
        a, n = abnormal[kind], normal[kind]
        weights[kind] = (n / (a + n), a / (a + n)) if a and n else (1.0, 1.0)
    return weights


def sample_weights(records: Sequence[ImageRecord], weights: dict[str, tuple[float, float]]) -> np.ndarray:
    """Each image's weight in the loss: w_T1 if it is abnormal, else w_T0."""
    return np.array([weights[r.study_type][0 if r.label else 1] for r in records], dtype=np.float32)


class MuraImages:
    """A map-style dataset (what torch's DataLoader needs) of (image tensor, label, loss weight)
    per image. Defined without importing torch, so the module stays importable without it."""

    def __init__(
        self,
        root: str | Path,
        records: Sequence[ImageRecord],
        image_size: int,
        train: bool,
        weights: dict[str, tuple[float, float]],
    ) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.weights = sample_weights(self.records, weights)
        self.transform = transform(image_size, train)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        import torch

        record = self.records[i]
        image = self.transform(load_image(self.root / record.path))
        return image, torch.tensor(float(record.label)), torch.tensor(self.weights[i])
