"""Batched ensemble inference: the work behind `predict.py` and `mura predict`.

The pipeline streams: image paths are read up front (a few bytes each), images are decoded a
few batches ahead of the network by a small thread pool, and each study keeps only a running
sum, so memory stays flat however long the input is.

- Each image is decoded once (PIL: any mode to 8-bit RGB, resized as in training) and every
  ensemble member runs on the same batch; batches span studies.
- CPU, fp32 (the default): the bundle's `ensemble.onnx` under ONNX Runtime when both are there
  (exact: equal to torch within 1e-6, and faster on CPUs), else torch with channels_last.
  CPU, `--precision bf16`: torch in bfloat16, where the CPU supports it.
  CUDA: torch with mixed precision, pinned memory and more decoding threads.
- A view's probability is the mean over the members (and over the mirror image with the
  manifest's `tta_hflip`); a study's is the mean over its readable views; abnormal iff it is
  > the manifest's threshold (0.5: the MURA paper's rule).
- A bad image (missing, empty, truncated, not an image, far too large: whatever fails while it
  is decoded, a MemoryError too) is a warning and its study is predicted from its other views;
  so is a view for which an ensemble member returns NaN or infinity. An image listed twice
  counts once. A study with no readable view gets the FALLBACK: normal (0, the majority class)
  with probability 0.0, and a warning. Every study gets exactly one row. Warnings are one short
  line each, whatever the input holds.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference_model.bundle import BundleError, Manifest, read_manifest, verify_files
from reference_model.cpus import available_cpus
from reference_model.data import DataError, ImageError, load_image, read_image_paths
from reference_model.errors import shorten
from reference_model.outputs import OutputError, check_output_file
from scorer.errors import examples
from scorer.files import write_together
from scorer.formats import csv_field
from scorer.paths import study_of_image

FALLBACK_LABEL = 0
FALLBACK_PROBABILITY = 0.0
PRECISIONS = ("fp32", "bf16")
# On the 2-core evaluation VM ONNX Runtime ran DenseNet-169 fastest at batch 16 (bench/README.md).
BACKENDS = ("auto", "onnx", "torch")


class PredictError(Exception):
    """The run cannot produce an answer (unreadable input CSV, broken bundle, bad option)."""


@dataclass
class Study:
    key: str  # the study's folder with a trailing slash: the output's first column
    images: list[int] = field(default_factory=list)  # indices into the run's image list
    total: float = 0.0  # running sum of view probabilities
    views: int = 0  # views that were read


@dataclass(frozen=True)
class Summary:
    studies: int
    images: int
    unreadable: int
    fallback: int
    seconds: float
    backend: str

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        return (
            f"predicted {self.studies} studies from {self.images} images in {self.seconds:.1f} s "
            f"({rate:.1f} images/s, {self.backend}); {_count(self.unreadable, 'unreadable image')}, "
            f"{_count(self.fallback, 'study', 'studies')} given the fallback"
        )


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


# --- input ------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def read_input(
    path: str | Path, cwd: Path | None = None, warn: Callable[[str], None] = _warn
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
            f"{shorten(str(real))} ({examples(map(shorten, outside), 2)}); their studies keep "
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
            f"{_count(len(repeated), 'image is', 'images are')} listed more than once "
            f"({examples(map(shorten, repeated))}); each counts once in its study's mean"
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


# --- decoding ---------------------------------------------------------------------------------


def decode(path: str | Path, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """One view as the network sees it: (size, size, 3) float32, normalised, HWC. The same
    arithmetic as training's torchvision Resize (PIL bilinear) + ToTensor + Normalize."""
    from PIL import Image

    image = load_image(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


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
                failed.append((index, f"{shorten(images[index])} cannot be decoded ({shorten(reason)})"))
        return (np.stack(arrays) if arrays else None), kept, failed

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        for start in range(0, len(images), batch_size):
            indices = list(range(start, min(start + batch_size, len(images))))
            pending.append((indices, [pool.submit(load, images[i]) for i in indices]))
            if len(pending) > ahead:
                yield collect(*pending.popleft())
        while pending:
            yield collect(*pending.popleft())


# --- engines ----------------------------------------------------------------------------------


def tune_malloc() -> None:
    """Keep freed memory in the process instead of returning it to the OS after every batch.

    glibc hands large blocks back with munmap/trim and the next batch faults them in again; on
    the evaluation VM this halved torch's throughput at batch 32 (bench/README.md). Equivalent
    to MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>; a no-op where there is no glibc. Torch
    only: ONNX Runtime keeps its own arena and was slower with it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


class OnnxEngine:
    """The bundle's ensemble.onnx under ONNX Runtime on CPU: images -> (N, members)."""

    name = "onnxruntime fp32"
    # ONNX Runtime's arena keeps every activation of a batch for each member: a 2-member
    # DenseNet-169 peaked at 4.2 GB at batch 16 and 1.3 GB at batch 4, at the same speed
    # (bench/README.md), so small batches cost nothing and leave the container its memory.
    batch_size = 4

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are not the participant's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's own types (InvalidProtobuf, Fail, ...): one message
            reason = " ".join(str(exc).split())[:160]
            raise BundleError(
                f"{path} cannot be loaded by ONNX Runtime ({reason}); the file is damaged or not this "
                "kit's export; rebuild the bundle with `mura bundle`"
            ) from None

    def check(self, manifest: Manifest, path: Path) -> None:
        """The graph takes the manifest's input size and returns one column per member: a
        mismatch would fail on the first batch, or worse, give wrong columns."""
        (images,), (probabilities,) = self.session.get_inputs(), self.session.get_outputs()
        size, members = manifest.input_size, len(manifest.members)
        shape = list(images.shape)
        if shape[1:] != [3, size, size]:
            found = f"{shape[2]}x{shape[3]} pixels" if len(shape) == 4 else f"input of shape {shape}"
            raise BundleError(
                f"{path} takes images of {found}, but manifest.json says input_size {size}; the "
                "manifest was edited or the ONNX file comes from another bundle; rebuild the bundle "
                "with `mura bundle`"
            )
        if probabilities.shape[-1] != members:
            raise BundleError(
                f"{path} returns {probabilities.shape[-1]} probabilities per image, but manifest.json "
                f"lists {members} members; rebuild the bundle with `mura bundle`"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return self.session.run(None, {"images": images})[0]


class TorchEngine:
    """The members in torch: channels_last, inference mode; CUDA with mixed precision and pinned
    memory; CPU in fp32 or bf16."""

    def __init__(self, bundle_path: Path, manifest: Manifest, device: str | None, precision: str) -> None:
        import torch

        from reference_model.bundle import load_bundle
        from reference_model.model import EnsembleNet, ModelError, select_device

        self.torch = torch
        try:
            self.device = select_device(device)
        except ModelError as exc:
            raise PredictError(str(exc)) from None
        if self.device.type == "cpu":
            tune_malloc()
        bundle = load_bundle(bundle_path, manifest=manifest)
        net = EnsembleNet(bundle.models).eval().to(self.device, memory_format=torch.channels_last)
        self.dtype = torch.float32
        if precision == "bf16":
            if self.device.type == "cpu" and not cpu_has_bf16(torch):
                raise PredictError(
                    "--precision bf16 needs a CPU with bfloat16 support (AVX512-BF16 or AMX); "
                    "this one has none; use --precision fp32"
                )
            if self.device.type == "cpu":
                net = net.to(torch.bfloat16)
                self.dtype = torch.bfloat16
        self.net = net
        self.autocast = self.device.type == "cuda"
        self.batch_size = 64 if self.autocast else 16  # a GPU wants large batches; CPU bf16 peaks at 8-16
        self.name = f"torch {self.device.type} " + (
            "mixed precision" if self.autocast else ("bf16" if self.dtype == torch.bfloat16 else "fp32")
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from reference_model.model import autocast

        torch = self.torch
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW
        if self.device.type == "cuda":
            images = images.pin_memory().to(self.device, non_blocking=True)
        images = images.to(self.dtype)
        with torch.inference_mode(), autocast(self.device):
            return self.net(images).float().cpu().numpy()


def cpu_has_bf16(torch) -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_engine(
    bundle_path: Path, manifest: Manifest, *, backend: str, device: str | None, precision: str, threads: int
):
    if backend not in BACKENDS:
        raise PredictError(f"--backend must be one of {', '.join(BACKENDS)}, found {backend!r}")
    if precision not in PRECISIONS:
        raise PredictError(f"--precision must be one of {', '.join(PRECISIONS)}, found {precision!r}")
    cpu_fp32 = precision == "fp32" and (device in (None, "cpu")) and not _cuda_available(device)
    if backend in ("auto", "onnx") and cpu_fp32 and manifest.onnx is not None and _has_onnxruntime():
        verify_files(bundle_path, manifest)
        path = bundle_path / manifest.onnx.file
        engine = OnnxEngine(path, threads)
        engine.check(manifest, path)
        return engine
    if backend == "onnx":
        why = (
            "the bundle has no ensemble.onnx (rebuild it with `mura bundle`)"
            if manifest.onnx is None
            else "onnxruntime is not installed (pip install onnxruntime)"
            if not _has_onnxruntime()
            else "ONNX Runtime runs fp32 on CPU only"
        )
        raise PredictError(f"--backend onnx cannot be used: {why}")
    return TorchEngine(bundle_path, manifest, device, precision)


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _cuda_available(device: str | None) -> bool:
    """Whether `device` (None: automatic) means CUDA. Asks torch only when it may have to."""
    if device == "cpu":
        return False
    if device is not None:
        return device.startswith("cuda")
    import importlib.util

    # No NVIDIA device node, no CUDA: spares the ONNX path torch's import (seconds).
    if not any(Path("/dev").glob("nvidia[0-9]*")) or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


# --- the run ----------------------------------------------------------------------------------


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
    warn = warn or _warn
    start = time.perf_counter()
    if batch_size is not None and batch_size < 1:
        raise PredictError(f"--batch-size must be at least 1, found {batch_size}")
    targets = {Path(output_csv): "output file"}
    if probabilities is not None:
        if Path(probabilities).absolute() == Path(output_csv).absolute():
            raise PredictError(f"--probabilities {probabilities} is the output file; choose another path")
        targets[Path(probabilities)] = "probabilities file"
    try:
        for target, what in targets.items():
            check_output_file(target, what)
    except OutputError as exc:
        raise PredictError(str(exc)) from None
    bundle_path = Path(bundle)
    try:
        manifest = read_manifest(bundle_path)
    except BundleError as exc:
        raise PredictError(f"broken bundle: {exc}") from None
    images, studies = read_input(input_csv, warn=warn)

    cpus = available_cpus()
    try:
        engine = choose_engine(
            bundle_path, manifest, backend=backend, device=device, precision=precision, threads=cpus
        )
    except BundleError as exc:
        raise PredictError(f"broken bundle: {exc}") from None
    on_gpu = engine.name.startswith("torch cuda")
    batch_size = batch_size or engine.batch_size
    # On CPU one decoding thread keeps ahead of the network (decoding is ~5% of the work);
    # more would take cores from the arithmetic. A GPU needs several to be kept busy.
    threads = min(8, cpus) if on_gpu else 1

    owner = np.empty(len(images), dtype=np.int64)
    for s, study in enumerate(studies):
        owner[study.images] = s
    size, mean, std = manifest.input_size, manifest.mean, manifest.std
    unreadable = 0
    bar = _progress_bar(len(images), progress)
    for batch, kept, failed in batches(images, lambda p: decode(p, size, mean, std), batch_size, threads):
        if batch is not None:
            views, unfinished = view_probabilities(engine, batch, manifest.tta_hflip)
            for index, p, members in zip(kept, views.tolist(), unfinished):
                if members:
                    failed.append((index, f"{shorten(images[index])}: {_not_finite(members)}"))
                    continue
                study = studies[owner[index]]
                study.total += p
                study.views += 1
        for index, reason in failed:
            unreadable += 1
            warn(f"{reason}; study {shorten(studies[owner[index]].key)} is predicted from its other views")
        bar.update(len(kept) + len(failed))
    bar.close()

    labels, probs, fallback = [], [], 0
    for study in studies:
        if study.views == 0:
            fallback += 1
            warn(
                f"study {shorten(study.key)} has no readable view; it gets the fallback prediction "
                f"{FALLBACK_LABEL} (normal) with probability {FALLBACK_PROBABILITY}"
            )
            p, label = FALLBACK_PROBABILITY, FALLBACK_LABEL
        else:
            p = study.total / study.views
            label = int(p > manifest.threshold)
        labels.append(f"{csv_field(study.key)},{label}\n")
        probs.append(f"{csv_field(study.key)},{p:.6f}\n")
    texts = dict(zip(targets, ("".join(labels), "".join(probs))))
    try:
        for target in texts:
            target.parent.mkdir(parents=True, exist_ok=True)  # check_output_file allowed it
        write_together(texts)
    except OSError as exc:
        raise PredictError(
            f"cannot write {', '.join(map(str, texts))} ({exc.strerror or exc}); nothing was written"
        ) from None
    return Summary(len(studies), len(images), unreadable, fallback, time.perf_counter() - start, engine.name)


def view_probabilities(engine, batch: np.ndarray, tta_hflip: bool) -> tuple[np.ndarray, list[list[int]]]:
    """Each view's probability, the mean over the members (and over the mirror image with
    `tta_hflip`), and for each view the members (numbered from 1) that returned NaN or
    infinity. Such a view is unreadable: one member's NaN would make its study's mean NaN, and
    averaging over the other members would hide that a member gave no answer."""
    outputs = engine(batch)
    members = outputs.shape[1]
    if tta_hflip:
        outputs = np.concatenate([outputs, engine(np.ascontiguousarray(batch[:, :, ::-1, :]))], axis=1)
    finite = np.isfinite(outputs)
    unfinished = [
        [] if row.all() else sorted({int(j) % members + 1 for j in np.flatnonzero(~row)}) for row in finite
    ]
    return np.where(finite, outputs, 0.0).mean(axis=1), unfinished


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


# --- the command ------------------------------------------------------------------------------

import click  # noqa: E402

DEFAULT_BUNDLE = "submission/bundle"


@click.command("predict")
@click.argument("input_csv", type=click.Path(path_type=Path))
@click.argument("output_csv", type=click.Path(path_type=Path))
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    envvar="MURA_BUNDLE",
    default=DEFAULT_BUNDLE,
    show_default=True,
    help="The ensemble bundle (env MURA_BUNDLE).",
)
@click.option(
    "--probabilities",
    type=click.Path(path_type=Path),
    envvar="MURA_PROBABILITIES",
    default=None,
    help="Also write `study_path/,probability` here (env MURA_PROBABILITIES), for AUC.",
)
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when there is one).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Images per batch (default: 4 with ONNX Runtime, 16 with torch on CPU, 64 on GPU).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
def command(
    input_csv: Path,
    output_csv: Path,
    bundle: Path,
    probabilities: Path | None,
    device: str | None,
    precision: str,
    backend: str,
    batch_size: int | None,
    progress: bool | None,
) -> None:
    """Predict every study listed in INPUT_CSV (image paths) into OUTPUT_CSV (`study_path/,0|1`).

    Exit codes: 0 an answer was written (bad images are warnings); 2 no answer: the input CSV,
    the bundle, an option or an output path cannot be used (nothing is written)."""
    try:
        summary = predict(
            input_csv,
            output_csv,
            bundle,
            probabilities=probabilities,
            device=device,
            precision=precision,
            backend=backend,
            batch_size=batch_size,
            progress=progress,
        )
    except PredictError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(summary.line(), err=True)
