"""What predict reads: the input CSV's images, grouped in studies, and the decoded batches the
engine runs on.

Image paths are read up front (a few bytes each); images are decoded a few batches ahead of
the network by a small thread pool (reference_model.preprocess.decode), so memory stays flat
however long the input is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference_model.aggregation import StudyMean
from reference_model.data import DataError, read_image_paths
from reference_model.errors import PredictError, counted, print_warning, printable
from reference_model.preprocess import ImageError
from scorer.errors import examples
from scorer.paths import study_of_image


@dataclass
class Study:
    key: str  # the study's folder with a trailing slash: the output's first column
    images: list[int] = field(default_factory=list)  # indices into the run's image list
    mean: StudyMean = field(default_factory=StudyMean)  # of the views that were read


def read_input(
    path: str | Path, cwd: Path | None = None, warn: Callable[[str], None] = print_warning
) -> tuple[list[str], list[Study]]:
    """The input's image paths and its studies in order of first appearance.

    Accepts a header line (also `image_path,label`), CRLF, blank lines, blanks around a path,
    empty fields after it, a quoted path (RFC 4180: one path, commas and all), and absolute
    paths: written relative to the working directory when they lie under it (so the output
    keeps the contract's form), however the directory is spelled -- $PWD through a symlink, or
    the resolved path; a path that has to stay absolute gets a warning."""
    try:
        paths = read_image_paths(Path(path), warn)
    except DataError as exc:
        raise PredictError(f"cannot read the input CSV: {exc}") from None
    if not paths:
        raise PredictError(
            f"input CSV {path} lists no images; expected one image path per line "
            "(e.g. MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png)"
        )
    bases, real = _working_directories(cwd)
    outside = []
    for i, image in enumerate(paths):
        if os.path.isabs(image):
            relative = _relative_path(image, bases, real)
            if relative is None:
                outside.append(image)
            else:
                paths[i] = image = relative
    if outside:
        warn(
            f"{len(outside)} absolute image paths are not under the working directory "
            f"{printable(str(real))} ({examples(map(printable, outside), 2)}); their studies keep "
            "absolute paths in the output, where the contract expects paths relative to it (MURA-v1.1/...)"
        )
    return group_studies(paths, warn)


def group_studies(paths: list[str], warn: Callable[[str], None]) -> tuple[list[str], list[Study]]:
    """Each image once (the first time it is listed) and the studies in order of first
    appearance. An image listed again (the same path, as read_input made it and spelled
    plainly: an absolute path under the working directory is the same as its relative form,
    `./a/x.png` the same as `a/x.png`) would count twice in its
    study's mean; it counts once, with one warning for all such repeats."""
    images: dict[str, int] = {}
    studies: dict[str, Study] = {}
    repeated: dict[str, None] = {}
    for listed in paths:
        image = os.path.normpath(listed)  # `./a/x.png` and `a//x.png` name the file `a/x.png` does
        if image in images:
            repeated[listed] = None
            continue
        images[image] = len(images)
        key = study_of_image(image)
        studies.setdefault(key, Study(key)).images.append(images[image])
    if repeated:
        warn(
            f"{counted(len(repeated), 'image is', 'images are')} listed more than once "
            f"({examples(map(printable, repeated))}); each counts once in its study's mean"
        )
    return list(images), list(studies.values())


def _working_directories(cwd: Path | None) -> tuple[list[Path], Path]:
    """How an absolute path under the working directory may start (the shell's $PWD, which may
    go through a symlink, when it names the same folder; the given and the resolved path), and
    the resolved path."""
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    real = Path(os.path.realpath(here))
    bases = [Path(here), real]
    pwd = os.environ.get("PWD", "")
    try:
        if os.path.isabs(pwd) and os.path.samefile(pwd, real):
            bases.insert(0, Path(os.path.normpath(pwd)))
    except OSError:
        pass
    return bases, real


def _relative_path(image: str, bases: list[Path], real: Path) -> str | None:
    """`image` relative to the working directory, or None when it does not lie under it."""
    lexical = Path(os.path.normpath(image))
    for base in bases:
        if lexical.is_relative_to(base):
            return str(lexical.relative_to(base))
    resolved = Path(os.path.realpath(image))  # e.g. /link/MURA-v1.1/... with cwd /real
    return str(resolved.relative_to(real)) if resolved.is_relative_to(real) else None


def batches(
    images: Sequence[str], load: Callable[[str], np.ndarray], batch_size: int, threads: int, ahead: int = 2
) -> Iterator[tuple[np.ndarray | None, list[int], list[tuple[int, str]]]]:
    """(batch NHWC, the image indices in it, [(index, reason)] for images that failed), in
    input order. At most `ahead` + 1 batches are decoded or waiting at any time. Whatever
    `load` raises for one image (an ImageError, a MemoryError while resizing under an
    address-space limit, any other exception) fails that image only."""
    pending: deque[tuple[list[int], list[Future]]] = deque()

    def collect(indices: list[int], futures: list[Future]):
        arrays, kept, failed = [], [], []
        for index, future in zip(indices, futures):
            try:
                arrays.append(future.result())
                kept.append(index)
            except ImageError as exc:
                failed.append((index, str(exc)))
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                failed.append((index, f"{printable(images[index])} cannot be decoded ({printable(reason)})"))
        return (np.stack(arrays) if arrays else None), kept, failed

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        for start in range(0, len(images), batch_size):
            indices = list(range(start, min(start + batch_size, len(images))))
            pending.append((indices, [pool.submit(load, images[i]) for i in indices]))
            if len(pending) > ahead:
                yield collect(*pending.popleft())
        while pending:
            yield collect(*pending.popleft())
