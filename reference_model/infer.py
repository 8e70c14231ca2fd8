"""Batched ensemble inference: the work behind `predict.py` and `mura predict`.

The run streams: the input's image paths and studies are read up front (reference_model.inputs),
images are decoded a few batches ahead of the network, and each study keeps only a running
sum, so memory stays flat however long the input is.

- Each image is decoded once (reference_model.preprocess: as in training) and every ensemble
  member runs on the same batch (reference_model.engines: ONNX Runtime or torch); batches span
  studies.
- A view's probability is the mean over the members (and over the mirror image with the
  manifest's `tta_hflip`); a study's is the mean over its readable views; abnormal iff it is
  > the manifest's threshold (reference_model.aggregation: the MURA paper's rule).
- A bad image (missing, empty, truncated, not an image, far too large: whatever fails while it
  is decoded, a MemoryError too) is a warning and its study is predicted from its other views;
  so is a view for which an ensemble member returns NaN or infinity. An image listed twice
  counts once. A study with no readable view gets the FALLBACK: normal (0, the majority class)
  with probability 0.0, and a warning. Every study gets exactly one row. Warnings are one short
  line each, whatever the input holds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference_model.aggregation import study_label
from reference_model.bundle import BundleError, Manifest, read_manifest
from reference_model.cpus import available_cpus, cpu_kind
from reference_model.engines import Engine, choose_engine
from reference_model.errors import PredictError, counted, print_warning, printable
from reference_model.inputs import Study, batches, read_input
from reference_model.outputs import OutputError, check_output_file
from reference_model.preprocess import decode
from scorer.files import write_together
from scorer.formats import csv_field

FALLBACK_LABEL = 0
FALLBACK_PROBABILITY = 0.0


@dataclass(frozen=True)
class Summary:
    studies: int
    images: int
    unreadable: int
    fallback: int
    seconds: float
    backend: str  # the engine's name
    why: str = ""  # why this engine: `chosen for this AVX512-BF16 CPU` when --backend auto chose

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        backend = f"{self.backend}, {self.why}" if self.why else self.backend
        return (
            f"predicted {self.studies} studies from {self.images} images in {self.seconds:.1f} s "
            f"({rate:.1f} images/s, {backend}); {counted(self.unreadable, 'unreadable image')}, "
            f"{counted(self.fallback, 'study', 'studies')} given the fallback"
        )


def predict(
    input_csv: str | Path,
    output_csv: str | Path,
    bundle: str | Path,
    *,
    probabilities: str | Path | None = None,
    device: str | None = None,
    precision: str = "fp32",
    backend: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Predict every study of `input_csv` into `output_csv` (`study_path/,0|1`, no header, in
    order of first appearance) and, if asked, `probabilities` (`study_path/,p`). The targets are
    checked before any work; both files are written after everything else has succeeded, each
    to a temporary file first, and renamed together: both or neither."""
    warn = warn or print_warning
    start = time.perf_counter()
    if batch_size is not None and batch_size < 1:
        raise PredictError(f"--batch-size must be at least 1, found {batch_size}")
    targets = check_targets(Path(output_csv), None if probabilities is None else Path(probabilities))
    bundle_path = Path(bundle)
    with _broken_bundle():
        manifest = read_manifest(bundle_path)
    images, studies = read_input(input_csv, warn=warn)
    cpus = available_cpus()
    with _broken_bundle():
        engine = choose_engine(
            bundle_path, manifest, backend=backend, device=device, precision=precision, threads=cpus
        )
    on_gpu = engine.name.startswith("torch cuda")
    # On CPU one decoding thread keeps ahead of the network: a 512 px MURA view decodes in about
    # 3 ms, so at 26 images/s (OpenVINO bf16, 2 cores) it is busy 8% of the time, and a second
    # thread measured no faster (bench/README.md, "the split"). A GPU needs several.
    threads = min(8, cpus) if on_gpu else 1
    bar = _progress_bar(len(images), progress)
    unreadable = predict_views(
        engine, manifest, images, studies, batch_size or engine.batch_size, threads, bar, warn
    )
    bar.close()
    labels, probs, fallback = study_rows(studies, manifest.threshold, warn)
    write_answers(dict(zip(targets, (labels, probs))))
    why = f"chosen for this {cpu_kind()} CPU" if backend == "auto" and not on_gpu else ""
    seconds = time.perf_counter() - start
    return Summary(len(studies), len(images), unreadable, fallback, seconds, engine.name, why)


def check_targets(output_csv: Path, probabilities: Path | None) -> list[Path]:
    """The files to write (the output, then the probabilities if asked), checked before any work."""
    targets = {output_csv: "output file"}
    if probabilities is not None:
        if probabilities.absolute() == output_csv.absolute():
            raise PredictError(f"--probabilities {probabilities} is the output file; choose another path")
        targets[probabilities] = "probabilities file"
    try:
        for target, what in targets.items():
            check_output_file(target, what)
    except OutputError as exc:
        raise PredictError(str(exc)) from None
    return list(targets)


@contextmanager
def _broken_bundle() -> Iterator[None]:
    try:
        yield
    except BundleError as exc:
        raise PredictError(f"broken bundle: {exc}") from None


def predict_views(
    engine: Engine,
    manifest: Manifest,
    images: list[str],
    studies: list[Study],
    batch_size: int,
    threads: int,
    bar,
    warn: Callable[[str], None],
) -> int:
    """Add each readable view's probability to its study's mean; return how many images were
    unreadable (each with a warning naming its study). Each batch is started before the one
    before it is waited for, so an engine that runs in the background (OpenVINO) never idles
    between batches; warnings still come in input order."""
    owner = np.empty(len(images), dtype=np.int64)  # image index -> study index
    for s, study in enumerate(studies):
        owner[study.images] = s
    size, mean, std = manifest.input_size, manifest.mean, manifest.std
    unreadable = 0

    def finish(waits: list, kept: list[int], failed: list[tuple[int, str]]) -> None:
        nonlocal unreadable
        if waits:
            views, unfinished = view_probabilities([wait() for wait in waits])
            for index, p, members in zip(kept, views.tolist(), unfinished):
                if members:
                    failed.append((index, f"{printable(images[index])}: {_not_finite(members)}"))
                else:
                    studies[owner[index]].mean.add(p)
        for index, reason in failed:
            unreadable += 1
            warn(f"{reason}; study {printable(studies[owner[index]].key)} is predicted from its other views")
        bar.update(len(kept) + len(failed))

    previous = None
    for batch, kept, failed in batches(images, lambda p: decode(p, size, mean, std), batch_size, threads):
        started = (start_views(engine, batch, manifest.tta_hflip) if batch is not None else [], kept, failed)
        if previous is not None:
            finish(*previous)
        previous = started
    if previous is not None:
        finish(*previous)
    return unreadable


def start_views(engine: Engine, batch: np.ndarray, tta_hflip: bool) -> list[Callable[[], np.ndarray]]:
    """Start the ensemble on `batch` (and on its mirror image with `tta_hflip`)."""
    waits = [engine.start(batch)]
    if tta_hflip:
        waits.append(engine.start(np.ascontiguousarray(batch[:, :, ::-1, :])))
    return waits


def view_probabilities(outputs: list[np.ndarray]) -> tuple[np.ndarray, list[list[int]]]:
    """Each view's probability, the mean over the members (and over the mirror image with
    `tta_hflip`: a second output), and for each view the members (numbered from 1) that returned
    NaN or infinity. Such a view is unreadable: one member's NaN would make its study's mean NaN,
    and averaging over the other members would hide that a member gave no answer."""
    members = outputs[0].shape[1]
    joined = np.concatenate(outputs, axis=1)
    finite = np.isfinite(joined)
    unfinished = [
        [] if row.all() else sorted({int(j) % members + 1 for j in np.flatnonzero(~row)}) for row in finite
    ]
    return np.where(finite, joined, 0.0).mean(axis=1), unfinished


def _not_finite(members: list[int]) -> str:
    which = ", ".join(map(str, members))
    return f"ensemble member{'s' if len(members) > 1 else ''} {which} returned NaN or infinity for it"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, desc="predict")


def study_rows(studies: list[Study], threshold: float, warn: Callable[[str], None]) -> tuple[str, str, int]:
    """(the output's rows `study,0|1`, the probabilities' rows `study,p`, how many studies got
    the fallback, each with a warning)."""
    labels, probs, fallback = [], [], 0
    for study in studies:
        if study.mean.views == 0:
            fallback += 1
            warn(
                f"study {printable(study.key)} has no readable view; it gets the fallback prediction "
                f"{FALLBACK_LABEL} (normal) with probability {FALLBACK_PROBABILITY}"
            )
            p, label = FALLBACK_PROBABILITY, FALLBACK_LABEL
        else:
            p = study.mean.probability
            label = study_label(p, threshold)
        labels.append(f"{csv_field(study.key)},{label}\n")
        probs.append(f"{csv_field(study.key)},{p:.6f}\n")
    return "".join(labels), "".join(probs), fallback


def write_answers(texts: dict[Path, str]) -> None:
    """Write every file or none (scorer.files.write_together)."""
    try:
        for target in texts:
            target.parent.mkdir(parents=True, exist_ok=True)  # check_output_file allowed it
        write_together(texts)
    except OSError as exc:
        raise PredictError(
            f"cannot write {', '.join(map(str, texts))} ({exc.strerror or exc}); nothing was written"
        ) from None
