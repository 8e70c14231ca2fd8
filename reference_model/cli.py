"""The reference model's commands: `mura synth`, `train`, `bundle`, `predict` and `cam` (and
`predict.py`, the submission contract): their options, messages and exit codes. The work
happens in the modules each command calls.

Importing this module is light (no torch): the options' defaults come from torch-free modules
and each command imports its work when it runs, so `mura synth` and `mura predict` on ONNX
Runtime never load torch.

The house rule: exit 1 is a bug, 2 a submission's (or predict's) "no answer", 3 the caller's
input or command line. click's own ClickException exits 1, so every user error of synth, train,
bundle and cam is a UserError: one line on stderr, exit 3. Predict's is a PredictError, exit 2
(the submission contract's code).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import click

from reference_model.aggregation import DEFAULT_THRESHOLD
from reference_model.architectures import ARCHITECTURES
from reference_model.bundle import BundleError
from reference_model.config import TrainConfig
from reference_model.engines import BACKENDS, PRECISIONS
from reference_model.errors import PredictError
from reference_model.outputs import OutputError, check_output_folder
from reference_model.synth import FULL_SIZE, ROOT_NAME, SPLITS, Options, SynthError, generate

DEFAULT_BUNDLE = "submission/bundle"


class UserError(click.ClickException):
    """The caller's input, options or output folder cannot be used; exit code 3."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said


# --- mura synth ------------------------------------------------------------------------------


@click.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=Options.seed, show_default=True)
@click.option("--train-studies", type=int, default=Options.train_studies, show_default=True)
@click.option("--valid-studies", type=int, default=Options.valid_studies, show_default=True)
@click.option("--test-studies", type=int, default=Options.test_studies, show_default=True)
@click.option("--full", is_flag=True, help="MURA's real size: 13,457 / 1,199 / 207 studies.")
@click.option(
    "--image-size", type=int, default=Options.image_size, show_default=True, help="Longest side in pixels."
)
@click.option("--abnormal-rate", type=float, default=Options.abnormal_rate, show_default=True)
@click.option(
    "--rgb-rate",
    type=float,
    default=Options.rgb_rate,
    show_default=True,
    help="Share of images saved as RGB (with equal channels).",
)
@click.option(
    "--label-miss-rate",
    type=float,
    default=Options.label_miss_rate,
    show_default=True,
    help="How often the dataset's labels miss a degenerative finding.",
)
@click.option(
    "--rater-error",
    type=float,
    default=Options.rater_error,
    show_default=True,
    help="How often each test radiologist disagrees with the truth.",
)
@click.option("--workers", type=int, default=None, help="Processes (default: the usable CPUs, at most 4).")
@click.option("--force", is_flag=True, help="Replace an earlier synth tree made with other options.")
def synth(out: Path, full: bool, workers: int | None, force: bool, **options) -> None:
    """Write a MURA-v1.1-shaped tree of generated radiographs under OUT."""
    if full:
        options.update({f"{split}_studies": FULL_SIZE[split] for split in SPLITS})
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, found {workers}")
    try:
        summary = generate(
            out, Options(**options), workers=workers, force=force, progress=sys.stderr.isatty()
        )
    except SynthError as exc:
        raise UserError(str(exc)) from None
    total = sum(summary.images.values())
    if summary.reused:
        click.echo(f"{out}: reusing the synth tree already there ({total:,} images; same options)")
        return
    rate = total / summary.seconds if summary.seconds else float("inf")
    click.echo(
        f"wrote {out / ROOT_NAME}: "
        + ", ".join(f"{s} {summary.studies[s]:,} studies / {summary.images[s]:,} images" for s in SPLITS)
        + f" in {summary.seconds:.1f} s ({rate:,.0f} images/s)"
    )


# --- mura train ------------------------------------------------------------------------------


def _train_options(function):
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    decorators = [
        click.argument("data", type=click.Path(path_type=Path)),
        click.option("--out", required=True, type=click.Path(path_type=Path), help="The run folder."),
        click.option(
            "--arch", type=click.Choice(list(ARCHITECTURES)), default=defaults["arch"], show_default=True
        ),
        click.option("--image-size", type=int, default=defaults["image_size"], show_default=True),
        click.option("--epochs", type=int, default=defaults["epochs"], show_default=True),
        click.option(
            "--batch-size",
            type=int,
            default=defaults["batch_size"],
            show_default=True,
            help="The global batch (the paper's 8); on torchrun each of N processes takes batch/N.",
        ),
        click.option("--lr", type=float, default=defaults["lr"], show_default=True),
        click.option(
            "--plateau-patience",
            type=int,
            default=defaults["plateau_patience"],
            show_default=True,
            help="Epochs without a better validation loss before the lr is divided by 10.",
        ),
        click.option("--seed", type=int, default=defaults["seed"], show_default=True),
        click.option("--workers", type=int, default=None, help="Loader processes (default: 0 on CPU)."),
        click.option("--max-steps", type=int, default=None, help="At most this many batches per epoch."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)."),
        click.option(
            "--pretrained",
            type=click.Path(path_type=Path),
            default=None,
            help="ImageNet weights file (default: torchvision's cache, if present).",
        ),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command("train")
@_train_options
def train(data: Path, out: Path, resume: bool, **options) -> None:
    """Train the reference model on the MURA tree under DATA (the folder holding MURA-v1.1/)."""
    from reference_model.training import USER_ERRORS
    from reference_model.training import train as run

    config = TrainConfig(
        data=str(data),
        out=str(out),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
    )
    try:
        record = run(config, resume=resume)
    except USER_ERRORS as exc:
        raise UserError(str(exc)) from None
    if record:
        click.echo(f"done: {out} (best checkpoint {out / 'best.pt'}; per-epoch log {out / 'log.jsonl'})")


# --- mura bundle -----------------------------------------------------------------------------


@click.command("bundle")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The bundle folder to write.")
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Abnormal iff probability > this.",
)
@click.option("--tta-hflip", is_flag=True, help="Also average each view with its mirror image.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
def bundle(checkpoints: tuple[Path, ...], out: Path, threshold: float, tta_hflip: bool, force: bool) -> None:
    """Assemble an ensemble bundle from CHECKPOINTS (run folders or their best.pt)."""
    from reference_model.bundle import make_bundle

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must lie between 0 and 1, found {threshold}")
    try:
        manifest = make_bundle(list(checkpoints), out, threshold=threshold, tta_hflip=tta_hflip, force=force)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"wrote {out}: {len(manifest.members)} x {manifest.architecture} at {manifest.input_size} px")


# --- mura predict and predict.py -------------------------------------------------------------


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
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="CPU engine; auto: the fastest measured for this CPU's kind (bench/README.md).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Images per batch (default: 8 with OpenVINO, 4 with ONNX Runtime, 16 with torch on CPU, 64 on GPU).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
def predict(input_csv: Path, output_csv: Path, **options) -> None:
    """Predict every study listed in INPUT_CSV (image paths) into OUTPUT_CSV (`study_path/,0|1`).

    Exit codes: 0 an answer was written (bad images are warnings); 2 no answer: the input CSV,
    the bundle, an option or an output path cannot be used (nothing is written)."""
    from reference_model.infer import predict as run

    try:
        summary = run(input_csv, output_csv, **options)
    except PredictError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(summary.line(), err=True)


# --- mura cam --------------------------------------------------------------------------------


@click.command("cam")
@click.argument("study", type=click.Path(path_type=Path))
@click.option(
    "--bundle", "bundle_path", required=True, type=click.Path(path_type=Path), help="The ensemble bundle."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the overlays.")
def cam(study: Path, bundle_path: Path, out: Path) -> None:
    """Class activation maps for each view of the STUDY folder, overlaid as PNGs in --out."""
    if not study.is_dir():
        raise UserError(f"{study} is not a folder; expected a study folder holding image1.png, ...")
    from reference_model.bundle import load_bundle
    from reference_model.cam import cam_study
    from reference_model.preprocess import ImageError

    try:
        check_output_folder(out, "--out")  # before the bundle is loaded and the maps computed
        probability, written = cam_study(study, load_bundle(bundle_path), out)
    except (BundleError, ImageError, OutputError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # the disk filled up, or the folder changed under us
        raise UserError(f"cannot write the maps to {out} ({exc.strerror or exc})") from None
    click.echo(f"study probability {probability:.3f}; wrote {len(written)} maps to {out}")
