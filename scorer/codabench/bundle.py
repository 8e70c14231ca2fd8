"""`mura codabench bundle`: the whole Codabench competition in one zip.

    competition.zip                       upload this to Codabench
      competition.yaml                    version 2: pages, phases, tasks, leaderboards, fact sheet
      README.md  logo.png  pages/*.md
      scoring_program.zip  ingestion_program.zip   (programs.py)
      {test,valid}_input_data.zip         the anonymised images and input.csv (or, with
                                          --data-on-worker, input.csv and worker_data.json only)
      {test,valid}_reference_data.zip     gold.csv in the anonymised names, scoring.json
      starting_kit.zip  [solution.zip]
    competition.private/                  the organiser's alone: map back, gold, strata (0700)
    competition.worker-data/FOLDER/       with --data-on-worker: what each worker's data/ holds

The hidden set is anonymised by the harness's own code (scorer.harness.anonymise: case
folders in a secretly shuffled order, fixed modes and times) and zipped in case order with one
fixed time; the map back never enters the zip. Everything is checked before anything is written,
built in a staging folder beside --out, and moved into place only when whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from scorer.codabench import GOLD_NAMES, pages, programs
from scorer.codabench.ingestion import INPUT_CSV, SUBMISSION_METADATA, WORKER_DATA
from scorer.codabench.layout import DEV, FACT_SHEET, TEST, leaderboard
from scorer.errors import HostError
from scorer.files import file_sha256
from scorer.formats import RaterTable, read_gold, read_strata
from scorer.gold import choose_panel
from scorer.harness.anonymise import MAP_NAME, Anonymised, anonymise, map_text, remove_tree, study_images
from scorer.harness.sandbox import DATA_MOUNT
from scorer.pipeline import score_table
from scorer.settings import Settings

IMAGE = "mura-codabench:latest"  # `make codabench-image` (the Makefile's CODABENCH_IMAGE)
TITLE = "MURA: abnormality detection in musculoskeletal radiographs"
SOLUTION_WARNING = 100 * 1000**2  # bytes: larger solutions stall Codabench's upload
GOLD_FILE = GOLD_NAMES[1]  # gold.csv: one of the names the scoring program looks for
PREDICT = programs.SOURCES / "submission" / "predict.py"  # the kit's reference submission
TIME_LIMIT = 600  # seconds, Codabench's default execution_time_limit
MIN_TIME_LIMIT = 5
MAX_SUBMISSIONS, MAX_PER_DAY = 100, 5  # Codabench's defaults, written out


@dataclass(frozen=True)
class Options:
    test: Path
    gold: Path
    out: Path
    strata: Path | None = None
    valid: Path | None = None
    valid_gold: Path | None = None
    title: str = TITLE
    image: str = IMAGE
    start: str | None = None  # ISO 8601; default: today, 00:00 UTC
    test_start: str | None = None  # with --valid: when the test phase begins
    end: str | None = None
    time_limit: int = TIME_LIMIT
    max_submissions: int = MAX_SUBMISSIONS
    max_per_day: int = MAX_PER_DAY
    solution: Path | None = None
    data_on_worker: bool = False
    queue: str | None = None
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Made:
    """What was written, for the command's summary."""

    zip: Path
    private: Path
    worker_data: Path | None
    warnings: tuple[str, ...]


# --- checks before anything is written ---------------------------------------------------------


def predict_limit(time_limit: int) -> float:
    """What predict.py gets of the phase's limit: the rest starts the container and checks the
    answer before the worker's own alarm stops the step."""
    return time_limit - min(30, max(2, time_limit // 10))


def utc(text: str, option: str) -> datetime:
    from scorer.leaderboard.records import utc_iso

    return datetime.fromisoformat(utc_iso(text, option)[:-1]).replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Dates:
    starts: tuple[datetime, ...]  # one per phase
    ends: tuple[datetime | None, ...]


def phase_dates(options: Options) -> Dates:
    """Each phase's start and end; Codabench wants a phase that has a successor to end strictly
    before that successor starts."""
    now = datetime.now(timezone.utc)
    start = (
        utc(options.start, "--start")
        if options.start
        else now.replace(hour=0, minute=0, second=0, microsecond=0)
    )
    end = utc(options.end, "--end") if options.end else None
    if end is not None and end <= start:
        raise HostError(f"--end {options.end} is not after the start {start:%Y-%m-%d %H:%M:%S} UTC")
    if options.valid is None:
        if options.test_start:
            raise HostError("--test-start is for a competition with a development phase (--valid)")
        return Dates((start,), (end,))
    if not options.test_start:
        raise HostError(
            "--valid adds a development phase before the test phase: give --test-start D, when it ends"
        )
    test_start = utc(options.test_start, "--test-start")
    if not start < test_start or (end is not None and not test_start < end):
        raise HostError(
            f"--test-start {options.test_start} must lie after --start and before --end (the development "
            "phase runs from --start to --test-start, the test phase from --test-start to --end)"
        )
    return Dates((start, test_start), (test_start - timedelta(seconds=1), end))


def check_out(out: Path) -> tuple[Path, Path, Path]:
    """--out and the two folders written beside it: none may exist (a second bundle would have a
    new shuffle, and overwriting the first one's map back would lose it)."""
    if out.suffix.lower() != ".zip":
        raise HostError(f"--out {out}: expected a file name ending in .zip")
    stem = out.with_suffix("")
    private, worker = stem.with_name(stem.name + ".private"), stem.with_name(stem.name + ".worker-data")
    for path in (out, private, worker):
        if path.exists() or path.is_symlink():
            raise HostError(
                f"{path} already exists; choose another --out or move it away (a bundle's map back to the "
                "real studies is in its .private folder: keep it while its competition runs)"
            )
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise HostError(f"--out {out}: the folder {out.parent} does not exist or is not writable")
    return out, private, worker


def check_solution(folder: Path | None) -> None:
    if folder is None:
        return
    if not (folder / "predict.py").is_file():
        raise HostError(f"--solution {folder}: expected a submission folder with predict.py at its root")
    extra = [name for name in SUBMISSION_METADATA if (folder / name).exists()]
    if extra:
        raise HostError(
            f"--solution {folder} has a {extra[0]}; a submission holds predict.py and its files only"
        )


def check_text(options: Options) -> None:
    if not options.title.strip() or len(options.title) > 256:
        raise HostError(f"--title: expected a title of 1 to 256 characters, found {len(options.title)}")
    if not options.image.strip() or any(c.isspace() for c in options.image):
        raise HostError(
            f"--image: expected a docker image name such as user/mura-codabench:1, found {options.image!r}"
        )
    if options.time_limit < MIN_TIME_LIMIT:
        raise HostError(f"--time-limit: expected at least {MIN_TIME_LIMIT} s, found {options.time_limit}")
    if options.max_submissions < 1 or options.max_per_day < 1:
        raise HostError("--max-submissions and --max-submissions-per-day must be at least 1")
    if (options.valid is None) != (options.valid_gold is None):
        raise HostError("--valid and --valid-gold go together: the validation images and their labels")


# --- one phase's data ---------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase's data, anonymised."""

    split: str  # "test" or "valid"
    name: str
    table: RaterTable
    settings: Settings
    staged: Anonymised | None = None
    images: list[str] = field(default_factory=list)  # relative to the data folder, in case order
    folder: str | None = None  # with --data-on-worker

    def relative(self, key: str) -> str:
        """An anonymised study or image as input.csv and the reference data name it."""
        return key.removeprefix(f"{DATA_MOUNT}/")

    @property
    def cases(self) -> dict[str, str]:
        """anonymised study (relative) -> real study, in case order."""
        assert self.staged is not None
        return {self.relative(key): real for key, real in self.staged.real.items()}


def read_phase(split: str, name: str, test_dir: Path, gold: Path, settings: Settings, option: str) -> Phase:
    if not test_dir.is_dir():
        raise HostError(f"{option} {test_dir} is not a folder; expected the folder that holds MURA-v1.1/")
    table = read_gold(gold)
    settings.check()
    choose_panel(table, settings.gold_raters, settings.seed, settings.option("gold_raters"))
    study_images(test_dir, table)  # every gold study has its images
    return Phase(split, name, table, settings)


def stage(phase: Phase, test_dir: Path, folder: Path) -> None:
    """The anonymised tree, by the harness's code (a fresh secret seed)."""
    phase.staged = anonymise(test_dir, phase.table, folder / "data", folder / "harness-private")
    listing = (folder / "data" / INPUT_CSV).read_text().splitlines()
    phase.images = [phase.relative(line) for line in listing]


def data_entry(name: str) -> zipfile.ZipInfo:
    info = programs.entry(name)
    info.compress_type = zipfile.ZIP_STORED  # PNGs are compressed already
    return info


def input_data(phase: Phase, data: Path, on_worker: bool) -> bytes:
    """input.csv with the images relative to the data folder, and the images in case order, each
    with the same time and mode (or, on the worker, which folder holds them and their hashes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(programs.entry(INPUT_CSV), "".join(f"{p}\n" for p in phase.images))
        if on_worker:
            hashes = {p: file_sha256(data / p) for p in phase.images}
            digest = hashlib.sha256(json.dumps(hashes).encode()).hexdigest()[:12]
            phase.folder = f"mura-{phase.split}-{digest}"
            spec = {"folder": phase.folder, "images": hashes}
            archive.writestr(programs.entry(WORKER_DATA), json.dumps(spec, indent=1) + "\n")
        else:
            for path in phase.images:
                archive.writestr(data_entry(path), (data / path).read_bytes())
    return buffer.getvalue()


def gold_text(phase: Phase) -> str:
    """The gold file in the anonymised names, in case order, with the raters' names."""
    row = {study: i for i, study in enumerate(phase.table.studies)}
    lines = [",".join(("study", *phase.table.raters))]
    for case, real in phase.cases.items():
        lines.append(",".join((case, *map(str, phase.table.votes[row[real]]))))
    return "\n".join(lines) + "\n"


def scoring_json(settings: Settings) -> str:
    """The scoring program's settings: the gold raters when the organiser named them (else it
    chooses them as `mura score` does), the seed and the resamples."""
    chosen = {"gold_raters": list(settings.gold_raters)} if settings.gold_raters else {}
    return json.dumps({**chosen, "seed": settings.seed, "resamples": settings.resamples}, indent=2) + "\n"


def reference_data(phase: Phase) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(programs.entry(GOLD_FILE), gold_text(phase))
        archive.writestr(programs.entry("scoring.json"), scoring_json(phase.settings))
    return buffer.getvalue()


# --- the text ------------------------------------------------------------------------------------


def radiologists(phase: Phase) -> tuple[tuple, str | None, str]:
    """The radiologists outside the gold panel, scored as a submission is (their results do not
    depend on the submission's reads), the best of them, and the gold standard in words."""
    settings = phase.settings
    panel = choose_panel(phase.table, settings.gold_raters, settings.seed)
    result = score_table(phase.table, panel, np.zeros(len(phase.table.studies), np.int8), settings)
    rows = tuple(
        (name, r["Overall"]["kappa"], r["Overall"]["kappa_lower"], r["Overall"]["kappa_upper"])
        for name, r in result["radiologists"].items()
    )
    best = result["best_radiologist"]
    gold = (
        "the dataset's label of each study"
        if list(panel.gold) == ["label"]
        else f"the majority vote of the radiologists {', '.join(panel.gold)}"
    )
    return rows, (f"{best['name']}, {best['kappa']:.3f}" if best else None), gold


def counts(phase: Phase) -> tuple[dict[str, int], dict[str, int]]:
    studies = Counter(phase.table.types)
    images = Counter(path.split("/")[1].removeprefix("XR_") for path in phase.images)
    return dict(studies), dict(images)


def model_extra() -> tuple[str, ...]:
    """The kit's `model` extra, from its installed metadata: what the image adds for participants."""
    try:
        requires = metadata.requires("mura-kit") or []
    except metadata.PackageNotFoundError:  # sources without an install: the extra's core
        return ("torch", "torchvision", "pillow", "onnxruntime", "openvino")
    model = (re.match(r"[A-Za-z0-9._-]+", r) for r in requires if re.search(r"extra\s*==\s*.model.", r))
    return tuple(match.group() for match in model if match)


def text(options: Options, phases: list[Phase], dates: Dates) -> pages.Text:
    test = phases[-1]
    rows, best, gold = radiologists(test)
    splits = []
    for phase, start, end in zip(phases, dates.starts, dates.ends):
        studies, images = counts(phase)
        root = f"/app/data/{phase.folder}" if phase.folder else "/app/input_data"
        what = "the hidden test set" if phase.split == "test" else "the validation set"
        splits.append(
            pages.Split(
                phase.name,
                what,
                studies,
                images,
                root,
                phase.folder,
                when(start),
                when(end),
            )
        )
    s = test.settings
    return pages.Text(
        options.title,
        options.image,
        options.time_limit,
        predict_limit(options.time_limit),
        options.max_submissions,
        options.max_per_day,
        tuple(splits),
        gold,
        rows,
        best,
        s.resamples,
        s.seed,
        s.confidence,
        model_extra(),
        options.queue,
    )


def logo() -> bytes:
    """A 128 px PNG, drawn here (the organisers' side has no imaging library): a bone on dark grey."""
    size = 128
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    shaft = (np.abs((x - y) / np.sqrt(2)) < 9) & (np.abs((x + y) / np.sqrt(2) - size / np.sqrt(2)) < 40)
    ends = [(34, 30), (30, 34), (94, 98), (98, 94)]
    knobs = np.any([(x - cx) ** 2 + (y - cy) ** 2 < 14**2 for cx, cy in ends], axis=0)
    pixels = np.where(shaft | knobs, 232, 40).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = size.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def folder_zip(folder: Path) -> bytes:
    """A submission folder as Codabench takes it: its files at the zip's root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def starting_kit(t: pages.Text) -> bytes:
    if not PREDICT.is_file():
        raise HostError(
            f"the kit's reference submission {PREDICT} is missing (an install without the kit's "
            "source tree); run `mura codabench bundle` from a checkout of the kit (make install)"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(programs.entry("README.md"), pages.starting_kit(t))
        archive.writestr(programs.entry("submission/predict.py"), PREDICT.read_bytes())
    return buffer.getvalue()


# --- competition.yaml --------------------------------------------------------------------------

PAGES = (
    ("Overview", "overview", pages.overview),
    ("Data", "data", pages.data),
    ("Evaluation", "evaluation", pages.evaluation),
    ("Submitting", "submitting", pages.submitting),
    ("Terms", "terms", pages.terms),
)


def when(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"  # UTC, as Codabench reads it


def competition_yaml(options: Options, phases: list[Phase], dates: Dates, solution: bool) -> str:
    import yaml

    tasks = [
        {
            "index": i,
            "name": f"MURA {'test' if phase.split == 'test' else 'validation'} set",
            "description": f"predict.py on {len(phase.table.studies):,} anonymised studies; kappa",
            "ingestion_program": "ingestion_program.zip",
            "scoring_program": "scoring_program.zip",
            "input_data": f"{phase.split}_input_data.zip",
            "reference_data": f"{phase.split}_reference_data.zip",
        }
        for i, phase in enumerate(phases)
    ]
    listed = []
    for i, (phase, start, end) in enumerate(zip(phases, dates.starts, dates.ends)):
        entry = {"index": i, "name": phase.name, "start": when(start)}
        if end is not None:
            entry["end"] = when(end)
        entry.update(
            tasks=[i],
            execution_time_limit=options.time_limit,
            max_submissions=options.max_submissions,
            max_submissions_per_day=options.max_per_day,
            starting_kit="starting_kit.zip",
        )
        listed.append(entry)
    competition = {
        "version": 2,
        "title": options.title,
        "description": "Normal or abnormal? Bone X-rays of the upper limb, scored with Cohen's kappa "
        "against radiologists (MURA). Submissions are code, run offline on the organisers' workers.",
        "image": "logo.png",
        "terms": "pages/terms.md",
        "docker_image": options.image,
        "enable_detailed_results": True,
        "make_programs_available": False,
        "make_input_data_available": False,
        "registration_auto_approve": False,
        **({"queue": options.queue} if options.queue else {}),
        "pages": [{"title": title, "file": f"pages/{name}.md"} for title, name, _ in PAGES],
        "phases": listed,
        "tasks": tasks,
        **(
            {"solutions": [{"index": 0, "path": "solution.zip", "tasks": list(range(len(phases)))}]}
            if solution
            else {}
        ),
        "leaderboards": [leaderboard()],
        "fact_sheet": FACT_SHEET,
    }
    header = "# Written by `mura codabench bundle` (the MURA competition kit). Times are UTC.\n"
    return header + yaml.safe_dump(competition, sort_keys=False, allow_unicode=True, width=100)


# --- the whole bundle --------------------------------------------------------------------------


def private_files(phases: list[Phase], strata: Path | None) -> dict[str, str]:
    """The organiser's files: per phase the map back, the gold and (test) the strata, all in
    the anonymised names, so `mura score` runs on Codabench's prediction output directly."""
    files: dict[str, str] = {}
    for phase in phases:
        assert phase.staged is not None
        files[f"{phase.split}_{MAP_NAME}"] = map_text(phase.cases, phase.staged.seed)
        files[f"{phase.split}_gold.csv"] = gold_text(phase)
    if strata is not None:
        test = phases[-1]
        found = read_strata(strata, test.table.studies)
        anonymised = {real: case for case, real in test.cases.items()}
        files["test_strata.csv"] = "".join(f"{anonymised[s]},{';'.join(f)}\n" for s, f in found.items())
    return files


def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def build(options: Options) -> Made:
    """Check everything, then write the bundle, its private folder and (--data-on-worker) the
    workers' data; a HostError names what is wrong before anything is written."""
    check_text(options)
    out, private, worker = check_out(options.out)
    dates = phase_dates(options)
    check_solution(options.solution)
    phases = []
    if options.valid is not None:
        assert options.valid_gold is not None
        valid_settings = replace(options.settings, gold_raters=None)
        phases.append(read_phase("valid", DEV, options.valid, options.valid_gold, valid_settings, "--valid"))
    phases.append(read_phase("test", TEST, options.test, options.gold, options.settings, "--test"))
    if options.strata is not None:
        read_strata(options.strata, phases[-1].table.studies)

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    warnings = []
    try:
        files: dict[str, bytes] = {}
        for phase in phases:
            stage(phase, options.test if phase.split == "test" else options.valid, staging / phase.split)
            data = staging / phase.split / "data"
            files[f"{phase.split}_input_data.zip"] = input_data(phase, data, options.data_on_worker)
            files[f"{phase.split}_reference_data.zip"] = reference_data(phase)
        t = text(options, phases, dates)
        files["scoring_program.zip"] = programs.scoring_program()
        limit = predict_limit(options.time_limit)
        files["ingestion_program.zip"] = programs.ingestion_program(limit, options.data_on_worker)
        files["starting_kit.zip"] = starting_kit(t)
        if options.solution is not None:
            files["solution.zip"] = folder_zip(options.solution)
            size = len(files["solution.zip"])
            if size > SOLUTION_WARNING:
                warnings.append(
                    f"the solution is {size / 1000**2:,.0f} MB zipped; uploads this large stall Codabench's "
                    "competition upload: upload it separately as a submission instead"
                )
        texts = {f"pages/{name}.md": render(t) for _, name, render in PAGES}
        texts["README.md"] = pages.readme(
            t, out.name, private.name, worker.name if options.data_on_worker else None
        )
        texts["competition.yaml"] = competition_yaml(options, phases, dates, options.solution is not None)

        archive = staging / out.name
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr(programs.entry("competition.yaml"), texts.pop("competition.yaml"))
            bundle.writestr(data_entry("logo.png"), logo())
            for name, body in texts.items():
                bundle.writestr(programs.entry(name), body)
            for name, body in files.items():
                bundle.writestr(data_entry(name), body)

        (staging / "private").mkdir(mode=0o700)
        for name, body in private_files(phases, options.strata).items():
            write_bytes(staging / "private" / name, body.encode())
        if options.data_on_worker:
            (staging / "worker").mkdir()
            for phase in phases:
                assert phase.folder is not None
                os.chmod(staging / phase.split / "data", 0o755)
                (staging / phase.split / "data" / INPUT_CSV).unlink()
                os.rename(staging / phase.split / "data", staging / "worker" / phase.folder)
                os.chmod(staging / "worker" / phase.folder, 0o555)
        # The private folder first: a bundle never exists without its map back.
        os.rename(staging / "private", private)
        if options.data_on_worker:
            os.rename(staging / "worker", worker)
        os.rename(archive, out)
    finally:
        remove_tree(staging)
    return Made(out, private, worker if options.data_on_worker else None, tuple(warnings))


def scoring_program_zip(out: Path) -> None:
    """`mura codabench scoring-program OUT.zip`: the scoring program alone (CodaLab Competitions
    or a hand-written Codabench bundle)."""
    if out.is_dir() or not out.parent.is_dir():
        raise HostError(f"{out}: expected a zip file to write in an existing folder")
    data = programs.scoring_program()
    temp = out.with_name(f".{out.name}.tmp")
    try:
        write_bytes(temp, data)
        os.replace(temp, out)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise HostError(f"{out} cannot be written ({exc.strerror or exc})") from None
