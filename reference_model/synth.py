"""MURA-shaped synthetic data: a tree that every part of the kit can run, learn and be tested on.

No one may download MURA on the machines this kit is built and tested on, so `mura synth OUT`
writes a tree with MURA v1.1's layout and files (SPEC §1):

    OUT/MURA-v1.1/{train,valid,test}/XR_{TYPE}/patient{NNNNN}/study{K}_{positive|negative}/image{M}.png
    OUT/MURA-v1.1/{split}_image_paths.csv       one image path a line (no header, LF)
    OUT/MURA-v1.1/{split}_labeled_studies.csv   `study_path/,label` (the dataset's labels)
    OUT/MURA-v1.1/test_radiologists.csv          `study_path/,Rad1,...,Rad6` (for `mura score`)
    OUT/MURA-v1.1/{split}_strata.csv             `study_path/,finding` (the true finding; `normal`)
    OUT/MURA-v1.1/{split}_findings.csv           `image_path,finding,x0,y0,x1,y1` per image that
                                                 shows a finding (its box, in pixels)
    OUT/.mura-synth.json                         what was generated and with which options

What it models:
- seven study types, each drawn with its own bone layout; 1 to 11 views per study (mostly 2-4);
  longest side `image_size` (512, as in MURA), the other 40-100% of it; mostly 8-bit greyscale,
  a few RGB with equal channels;
- patients disjoint across splits, numbered as in MURA: train from patient00001, then valid,
  then test, each split's ids right after the previous split's (MURA v1.1: train 1-11184,
  valid 11185-11967, the hidden test after them); a patient often has studies under several
  study types, so `patientNNNNN/study1_positive` occurs under several types, as in the real data;
- findings a model can learn and a person can see: `hardware` (a bright metal plate with
  screws), `fracture` (a dark line through a bone), `other` (a dark lytic lesion) and the subtle
  `degenerative` (small bright spurs at a joint). Most views of an abnormal study show it;
- label noise as in MURA (seed 002): the dataset's labels miss a `degenerative` study at
  `label_miss_rate` (its folder then says `_negative`, its strata row still `degenerative`);
- six test radiologists who each disagree with the truth at `rater_error`.

The folder suffix always equals the dataset label, as in MURA. Everything is a function of the
seed and the options: the same call writes the same bytes (each image has its own seed).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reference_model.cpus import available_cpus
from reference_model.outputs import OutputError, check_output_folder
from scorer.paths import STUDY_TYPES

ROOT_NAME = "MURA-v1.1"
MARKER = ".mura-synth.json"
SPLITS = ("train", "valid", "test")
FINDINGS = ("fracture", "hardware", "degenerative", "other")
FINDING_SHARE = (0.35, 0.2, 0.25, 0.2)
VIEW_COUNTS = np.arange(1, 12)
VIEW_SHARE = np.array([7, 30, 33, 18, 6, 2.5, 1.5, 0.8, 0.6, 0.4, 0.2])
FULL_SIZE = {"train": 13_457, "valid": 1_199, "test": 207}
# Patient ids have five digits (`patient{NNNNN}`); a patient has one or more studies, so this
# many studies in all always fit, whatever the draw.
MAX_PATIENT = 99_999
RADIOLOGISTS = 6
GRAIN = 1  # +-1 grey-level noise: enough texture; more makes PNG encoding the bottleneck


class SynthError(Exception):
    """A user error: the message says what was expected, what was found and what to do."""


@dataclass(frozen=True)
class Options:
    seed: int = 0
    train_studies: int = 240
    valid_studies: int = 60
    test_studies: int = 60
    image_size: int = 512
    abnormal_rate: float = 0.4
    rgb_rate: float = 0.05
    label_miss_rate: float = 0.4
    rater_error: float = 0.1
    findings: tuple[str, ...] = FINDINGS  # which kinds of finding abnormal studies carry

    def check(self) -> None:
        for name in ("train_studies", "valid_studies", "test_studies"):
            if getattr(self, name) < 1:
                raise SynthError(
                    f"--{name.replace('_', '-')} must be at least 1, found {getattr(self, name)}"
                )
        if not 32 <= self.image_size <= 4096:
            raise SynthError(f"--image-size must be between 32 and 4096 pixels, found {self.image_size}")
        for name in ("abnormal_rate", "rgb_rate", "label_miss_rate", "rater_error"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SynthError(f"--{name.replace('_', '-')} must lie between 0 and 1, found {value}")
        total = sum(self.studies(split) for split in SPLITS)
        if total > MAX_PATIENT:
            raise SynthError(
                f"--train-studies {self.train_studies}, --valid-studies {self.valid_studies} and "
                f"--test-studies {self.test_studies} make {total:,} studies; MURA's patient ids have five "
                f"digits (patient00001 to patient{MAX_PATIENT:05d}) and a patient has one or more studies, "
                f"so use at most {MAX_PATIENT:,} studies in all"
            )
        if self.seed < 0:
            raise SynthError(f"--seed must be a non-negative integer, found {self.seed}")
        unknown = [f for f in self.findings if f not in FINDINGS]
        if unknown or not self.findings:
            raise SynthError(
                f"--findings must name some of {', '.join(FINDINGS)}; "
                f"found {', '.join(self.findings) or 'none'}"
            )

    def studies(self, split: str) -> int:
        return getattr(self, f"{split}_studies")


@dataclass
class Study:
    split: str
    study_type: str
    patient: int
    number: int
    finding: str  # "normal" or one of FINDINGS: the truth
    label: int  # the dataset's label (misses some degenerative findings)
    views: int
    seed: tuple[int, ...]
    shows: list[bool] = field(default_factory=list)  # which views show the finding

    @property
    def path(self) -> str:
        suffix = "positive" if self.label else "negative"
        return (
            f"{ROOT_NAME}/{self.split}/XR_{self.study_type}/patient{self.patient:05d}/"
            f"study{self.number}_{suffix}/"
        )


@dataclass
class Summary:
    root: Path
    studies: dict[str, int]
    images: dict[str, int]
    abnormal: dict[str, int]
    seconds: float
    reused: bool = False

    def files(self) -> dict[str, Path]:
        base = self.root / ROOT_NAME
        names = {
            f"{s}_{kind}": base / f"{s}_{kind}.csv"
            for s in SPLITS
            for kind in ("image_paths", "labeled_studies", "strata", "findings")
        }
        names["test_radiologists"] = base / "test_radiologists.csv"
        return names


# --- the plan: which studies, patients, labels and views -------------------------------------


def plan(options: Options) -> list[Study]:
    """Every study of every split, with its truth, label, views and per-image seeds. Patient
    ids run on from split to split (train from 1, then valid, then test): disjoint, and never
    more of them than studies, so Options.check's limit is all it takes to fit five digits."""
    rng = np.random.default_rng([options.seed, 0])
    studies: list[Study] = []
    patient = 1
    for split_index, split in enumerate(SPLITS):
        wanted = options.studies(split)
        made = 0
        while made < wanted:
            # A patient has studies under 1-3 study types (mostly one), and sometimes several
            # studies of a type: `patientN/study1_*` then exists under several types.
            n_types = int(rng.choice([1, 2, 3], p=[0.8, 0.16, 0.04]))
            for study_type in rng.choice(STUDY_TYPES, size=n_types, replace=False):
                for number in range(1, int(rng.choice([1, 2], p=[0.92, 0.08])) + 1):
                    if made == wanted:
                        break
                    finding = "normal"
                    if rng.random() < options.abnormal_rate:
                        share = np.array([FINDING_SHARE[FINDINGS.index(f)] for f in options.findings])
                        finding = str(rng.choice(options.findings, p=share / share.sum()))
                    missed = finding == "degenerative" and rng.random() < options.label_miss_rate
                    views = int(rng.choice(VIEW_COUNTS, p=VIEW_SHARE / VIEW_SHARE.sum()))
                    study = Study(
                        split,
                        str(study_type),
                        patient,
                        number,
                        finding,
                        int(finding != "normal" and not missed),
                        views,
                        (options.seed, split_index, len(studies)),
                    )
                    if finding != "normal":
                        shows = rng.random(views) < 0.85
                        shows[rng.integers(views)] = True  # at least one view shows it
                        study.shows = shows.tolist()
                    else:
                        study.shows = [False] * views
                    studies.append(study)
                    made += 1
            patient += 1
    return studies


def radiologist_reads(studies: list[Study], options: Options) -> np.ndarray:
    """(test studies, 6) reads of the truth, each flipped with probability rater_error."""
    rng = np.random.default_rng([options.seed, 1])
    truth = np.array([s.finding != "normal" for s in studies], dtype=np.int8)
    flips = rng.random((truth.size, RADIOLOGISTS)) < options.rater_error
    return np.where(flips, 1 - truth[:, None], truth[:, None]).astype(np.int8)


# --- drawing ---------------------------------------------------------------------------------

# Bone layouts in a unit square (x right, y down): segments (x0, y0, x1, y1, width) and joints.
Segment = tuple[float, float, float, float, float]


def _ray(x: float, y: float, angle: float, lengths: list[float], width: float) -> list[Segment]:
    """A chain of bones (a finger) from (x, y) going up at `angle` degrees from vertical."""
    segs = []
    dx, dy = math.sin(math.radians(angle)), -math.cos(math.radians(angle))
    for length in lengths:
        x1, y1 = x + dx * length, y + dy * length
        segs.append((x, y, x1, y1, width))
        x, y = x1 + dx * 0.015, y1 + dy * 0.015
        width *= 0.85
    return segs


def layout(study_type: str, rng: np.random.Generator) -> list[Segment]:
    j = lambda: rng.uniform(-0.02, 0.02)  # noqa: E731 - a small jitter
    if study_type == "HUMERUS":
        return [(0.5 + j(), 0.12, 0.5 + j(), 0.92, 0.15)]
    if study_type == "FOREARM":
        return [(0.40 + j(), 0.06, 0.43 + j(), 0.94, 0.09), (0.60 + j(), 0.06, 0.57 + j(), 0.94, 0.07)]
    if study_type == "ELBOW":
        return [
            (0.5 + j(), 0.02, 0.5, 0.48, 0.15),
            (0.48, 0.53, 0.32 + j(), 0.98, 0.08),
            (0.56, 0.53, 0.46 + j(), 0.98, 0.065),
        ]
    if study_type == "WRIST":
        segs = [(0.40 + j(), 0.98, 0.42, 0.58, 0.11), (0.62 + j(), 0.98, 0.60, 0.60, 0.08)]
        for k in range(4):  # metacarpal bases
            segs.append((0.35 + 0.1 * k, 0.36, 0.33 + 0.12 * k + j(), 0.02, 0.055))
        return segs
    if study_type == "HAND":
        segs = []
        for k, angle in enumerate((-38, -14, -3, 8, 20)):
            lengths = [0.22, 0.14, 0.09] if k else [0.16, 0.12]
            segs += _ray(0.38 + 0.07 * k, 0.78, angle + rng.uniform(-4, 4), lengths, 0.05)
        return segs
    if study_type == "FINGER":
        return _ray(0.5 + j(), 0.95, rng.uniform(-6, 6), [0.34, 0.25, 0.2], 0.13)
    if study_type == "SHOULDER":
        return [
            (0.46 + j(), 0.42, 0.5, 1.0, 0.17),
            (0.05, 0.14, 0.95, 0.2 + j(), 0.06),
            (0.62, 0.28, 0.78, 0.55, 0.07),
        ]
    raise ValueError(study_type)


@dataclass(frozen=True)
class View:
    """Where the unit square lands in the image: a rotation, a scale and a shift."""

    width: int
    height: int
    angle: float
    scale: float
    shift: tuple[float, float]
    flip: bool

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        if self.flip:
            x = 1.0 - x
        side = min(self.width, self.height) * self.scale
        u, v = (x - 0.5) * side, (y - 0.5) * side * self.height / min(self.width, self.height)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (
            self.width / 2 + c * u - s * v + self.shift[0] * self.width,
            self.height / 2 + s * u + c * v + self.shift[1] * self.height,
        )

    def size(self, w: float) -> float:
        return w * min(self.width, self.height) * self.scale


def render(study: Study, view: int, image_size: int, rgb_rate: float):
    """One view of a study: (PIL image, finding box or None)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([*study.seed, view])
    long, short = image_size, int(image_size * rng.uniform(0.4, 1.0))
    width, height = (short, long) if rng.random() < 0.75 else (long, short)
    place = View(
        width,
        height,
        math.radians(rng.uniform(-15, 15)),
        rng.uniform(0.8, 1.0),
        (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)),
        bool(rng.random() < 0.5),
    )

    # Background: a dark gradient with a smooth texture and a little grain.
    low = rng.normal(0, 1, (height // 16 + 2, width // 16 + 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(low, mode="F").resize((width, height), Image.BILINEAR))
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None] * rng.uniform(-20, 20)
    base = rng.uniform(20, 45) + ramp + 6 * texture
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)

    segments = layout(study.study_type, rng)
    # Soft tissue around the bones, then the bones: a bright cortex around a greyer marrow.
    tissue = int(rng.uniform(55, 80))
    bone, marrow = int(rng.uniform(175, 205)), int(rng.uniform(130, 155))
    for x0, y0, x1, y1, w in segments:
        _capsule(draw, place(x0, y0), place(x1, y1), place.size(w * 2.6), tissue)
    for x0, y0, x1, y1, w in segments:
        _capsule(draw, place(x0, y0), place(x1, y1), place.size(w), bone)
        _capsule(draw, place(x0, y0), place(x1, y1), place.size(w * 0.5), marrow)

    box = None
    if study.shows[view]:
        box = _finding(draw, study.finding, segments, place, rng, bone, marrow, base.mean())

    grain = rng.integers(-GRAIN, GRAIN + 1, (height, width), dtype=np.int16)
    pixels = (np.asarray(image, dtype=np.int16) + grain).clip(0, 255).astype(np.uint8)
    out = Image.fromarray(pixels)
    if rng.random() < rgb_rate:
        out = out.convert("RGB")  # some MURA images are RGB with three equal channels
    return out, box


def _capsule(draw, p0, p1, width: float, fill: int) -> None:
    w = max(1, round(width))
    draw.line([p0, p1], fill=fill, width=w)
    for x, y in (p0, p1):
        r = w / 2
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _finding(draw, finding, segments, place: View, rng, bone: int, marrow: int, background: float):
    """Draw a finding on one bone; return its box (x0, y0, x1, y1) in pixels."""
    x0, y0, x1, y1, w = segments[int(rng.integers(len(segments)))]
    w = max(w, 0.07)  # findings on thin bones (fingers) stay visible at small input sizes
    t = rng.uniform(0.3, 0.7)
    cx, cy = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length  # along the bone
    nx, ny = -uy, ux  # across it
    points: list[tuple[float, float]] = []
    if finding == "hardware":
        # A metal plate along the bone (at least 8% of the image side) with screws across it.
        half = max(0.1, min(0.45 * length, 0.22)) / 2
        pw = max(w * 0.45, 0.035)
        corners = [
            (cx + sx * half * ux + sy * pw / 2 * nx, cy + sx * half * uy + sy * pw / 2 * ny)
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        draw.polygon([place(*c) for c in corners], fill=250)
        points += [place(*c) for c in corners]
        for k in np.linspace(-0.8, 0.8, 4):
            sx, sy = cx + k * half * ux, cy + k * half * uy
            a, b = place(sx - w * 0.8 * nx, sy - w * 0.8 * ny), place(sx + w * 0.8 * nx, sy + w * 0.8 * ny)
            draw.line([a, b], fill=255, width=max(2, round(place.size(0.012))))
            points += [a, b]
    elif finding == "fracture":
        # A dark line through the bone, slightly oblique, a little displaced.
        tilt = rng.uniform(-0.5, 0.5)
        ax, ay = nx + tilt * ux, ny + tilt * uy
        a, b = place(cx - ax * w * 0.75, cy - ay * w * 0.75), place(cx + ax * w * 0.75, cy + ay * w * 0.75)
        draw.line([a, b], fill=int(background), width=max(2, round(place.size(0.022))))
        points += [a, b]
    elif finding == "other":
        # A lytic lesion: a dark hole in the bone.
        r = w * 0.32
        c = place(cx, cy)
        rp = place.size(r)
        draw.ellipse((c[0] - rp, c[1] - rp, c[0] + rp, c[1] + rp), fill=int(background + 15))
        points += [(c[0] - rp, c[1] - rp), (c[0] + rp, c[1] + rp)]
    else:  # degenerative: small bright spurs at the end of the bone (a joint)
        ex, ey = (x1, y1) if rng.random() < 0.5 else (x0, y0)
        sign = 1 if (ex, ey) == (x1, y1) else -1
        for side in (-1, 1):
            bx, by = ex + side * w * 0.5 * nx, ey + side * w * 0.5 * ny
            tip = (
                bx + side * w * 0.35 * nx + sign * w * 0.25 * ux,
                by + side * w * 0.35 * ny + sign * w * 0.25 * uy,
            )
            tri = [
                place(bx - sign * w * 0.2 * ux, by - sign * w * 0.2 * uy),
                place(*tip),
                place(bx + sign * w * 0.15 * ux, by + sign * w * 0.15 * uy),
            ]
            draw.polygon(tri, fill=min(255, bone + 45))
            points += tri
        sclerosis = place(ex, ey)
        r = place.size(w * 0.3)
        draw.ellipse(
            (sclerosis[0] - r, sclerosis[1] - r, sclerosis[0] + r, sclerosis[1] + r), fill=min(255, bone + 35)
        )
        points += [(sclerosis[0] - r, sclerosis[1] - r), (sclerosis[0] + r, sclerosis[1] + r)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width, height = draw.im.size
    box = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(width - 1, math.ceil(max(xs))),
        min(height - 1, math.ceil(max(ys))),
    )
    return box if box[0] < box[2] and box[1] < box[3] else None


# --- writing ---------------------------------------------------------------------------------


def _write_study(args: tuple[Study, str, int, float]) -> list[tuple[str, tuple[int, int, int, int] | None]]:
    study, root, image_size, rgb_rate = args
    folder = Path(root) / study.path
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for view in range(study.views):
        image, box = render(study, view, image_size, rgb_rate)
        name = f"image{view + 1}.png"
        image.save(folder / name, format="PNG", compress_level=1)
        out.append((study.path + name, box))
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate(
    out: str | Path,
    options: Options | None = None,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> Summary:
    """Write the tree under `out` (see the module docstring). Refuses a non-empty `out` that is
    not an earlier synth tree; an earlier tree made with the same options is reused as it is,
    one made with other options is replaced only with `force`."""
    options = options or Options()
    options.check()
    out = Path(out)
    earlier = _earlier_tree(out, options, force)
    if earlier is not None:
        return earlier
    try:
        check_output_folder(out, "output folder")
    except OutputError as exc:
        raise SynthError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    studies = plan(options)
    results = _write_studies(studies, out, options, workers or default_workers(), progress)
    summary = _write_indexes(out, studies, results, options)
    summary.seconds = time.perf_counter() - start
    record = {
        "options": asdict(options),
        "complete": True,
        "studies": summary.studies,
        "images": summary.images,
        "abnormal": summary.abnormal,
    }
    (out / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return summary


def _earlier_tree(out: Path, options: Options, force: bool) -> Summary | None:
    """The summary of the tree in `out` when an earlier run made it with the same options (it is
    reused as it is); else None, once `out` can take a new tree: it is new or empty, or (with
    `force`) the earlier tree has been removed. Anything else is a SynthError."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} is a file; expected a folder (new or empty) for the generated tree")
    if not (out.is_dir() and any(out.iterdir())):
        return None
    if not marker.is_file():
        raise SynthError(
            f"{out} is not empty and was not made by `mura synth`; expected a new or empty "
            "folder; choose another folder (nothing was written)"
        )
    previous = _read_marker(marker)
    if previous is None and not force:
        raise SynthError(
            f"{marker} cannot be read (not the JSON record `mura synth` writes: the tree may be "
            "damaged or half-written); pass --force to generate the tree again, or choose another folder"
        )
    previous = previous or {}
    # Compare as JSON sees them: the marker stores tuples as lists.
    same = previous.get("options") == json.loads(json.dumps(asdict(options)))
    if same and previous.get("complete") and {"studies", "images", "abnormal"} <= set(previous):
        return Summary(out, previous["studies"], previous["images"], previous["abnormal"], 0.0, reused=True)
    if not force:
        changed = _diff(previous.get("options", {}), options)
        raise SynthError(
            f"{out} holds a synth tree made with other options ({changed}); "
            "pass --force to replace it, or choose another folder"
        )
    shutil.rmtree(out / ROOT_NAME, ignore_errors=True)
    marker.unlink()
    return None


def _write_studies(
    studies: list[Study], out: Path, options: Options, workers: int, progress: bool
) -> list[list]:
    """Draw and write every study's views, in `workers` processes; each study's [(image path,
    finding box or None)], in the plan's order."""
    jobs = [(s, str(out), options.image_size, options.rgb_rate) for s in studies]
    results: list[list] = []
    done = 0
    total_images = sum(s.views for s in studies)
    if workers == 1:
        iterator: Iterator = map(_write_study, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        iterator = pool.map(_write_study, jobs, chunksize=8)
    try:
        for result in iterator:
            results.append(result)
            done += len(result)
            if progress and done % 500 < len(result):
                print(f"\r{done}/{total_images} images", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    if progress:
        print(file=sys.stderr)
    return results


def _write_indexes(out: Path, studies: list[Study], results: list[list], options: Options) -> Summary:
    base = out / ROOT_NAME
    counts: dict[str, dict[str, int]] = {"studies": {}, "images": {}, "abnormal": {}}
    for split in SPLITS:
        rows = [(s, r) for s, r in zip(studies, results) if s.split == split]
        _lines(base / f"{split}_image_paths.csv", (path for _, r in rows for path, _ in r))
        _lines(base / f"{split}_labeled_studies.csv", (f"{s.path},{s.label}" for s, _ in rows))
        _lines(base / f"{split}_strata.csv", (f"{s.path},{s.finding}" for s, _ in rows))
        _lines(
            base / f"{split}_findings.csv",
            (f"{path},{s.finding},{','.join(map(str, box))}" for s, r in rows for path, box in r if box),
        )
        counts["studies"][split] = len(rows)
        counts["images"][split] = sum(len(r) for _, r in rows)
        counts["abnormal"][split] = sum(s.finding != "normal" for s, _ in rows)
        if split == "test":
            reads = radiologist_reads([s for s, _ in rows], options)
            _lines(
                base / "test_radiologists.csv",
                (f"{s.path}," + ",".join(map(str, r)) for (s, _), r in zip(rows, reads)),
            )
    return Summary(out, counts["studies"], counts["images"], counts["abnormal"], 0.0)


def _lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _diff(previous: dict, options: Options) -> str:
    now = json.loads(json.dumps(asdict(options)))
    previous = previous if isinstance(previous, dict) else {}
    changed = [f"{k} {previous.get(k)} -> {v}" for k, v in now.items() if previous.get(k) != v]
    return ", ".join(changed) or "unknown"


def _read_marker(marker: Path) -> dict | None:
    """The record of an earlier run, or None when it is not readable JSON of the right shape."""
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def default_workers() -> int:
    """Writer processes: the CPUs this process may use (affinity and cgroup quota), at most 4."""
    return min(4, available_cpus())
