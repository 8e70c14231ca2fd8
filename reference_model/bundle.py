"""Ensemble bundles: what a submission ships and `predict.py` loads.

A bundle is a folder:

    manifest.json   {"format": "mura-bundle", "version": 1,
                     "architecture": "densenet169", "input_size": 224,
                     "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                     "aggregation": "mean", "threshold": 0.5, "tta_hflip": false,
                     "members": [{"file": "member-0.pt", "sha256": "...", "source": "...",
                                  "val_loss": 0.31, "val_kappa": 0.72}, ...]}
    member-0.pt     a state dict (torch.save of model.state_dict()), loaded with weights_only=True
    member-1.pt     ...

A study's probability is the mean (the only aggregation so far) of its views' probabilities over
all members (and, with tta_hflip, over each view and its mirror image); the study is abnormal
iff that probability > threshold -- the MURA paper's rule with its defaults.

`load_bundle` checks everything before a single image is read and raises BundleError naming the
file and what is wrong: a participant's run must fail early and clearly, not halfway through.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reference_model.data import IMAGENET_MEAN, IMAGENET_STD

BUNDLE_FORMAT = "mura-bundle"
BUNDLE_VERSION = 1
AGGREGATIONS = ("mean",)


class BundleError(Exception):
    """A bundle that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Member:
    file: str
    sha256: str
    source: str = ""
    val_loss: float | None = None
    val_kappa: float | None = None


@dataclass(frozen=True)
class Manifest:
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    aggregation: str
    threshold: float
    tta_hflip: bool
    members: tuple[Member, ...]

    def to_json(self) -> dict:
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "aggregation": self.aggregation,
            "threshold": self.threshold,
            "tta_hflip": self.tta_hflip,
            "members": [m.__dict__ for m in self.members],
        }


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    models: list  # torch modules in eval mode, one per member


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate `manifest.json` of a bundle folder (no torch needed)."""
    from reference_model.model import ARCHITECTURES

    folder = Path(path)
    file = folder / "manifest.json"
    if not folder.is_dir():
        raise BundleError(
            f"bundle {folder} does not exist or is not a folder; expected a folder with manifest.json"
        )
    if not file.is_file():
        raise BundleError(f"bundle {folder} has no manifest.json; build one with `mura bundle`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{file} is not valid JSON ({exc})") from None

    def field(name: str, kind: type | tuple, check=None, what: str = ""):
        if name not in data:
            raise BundleError(f"{file}: the field {name!r} is missing")
        value = data[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise BundleError(f"{file}: {name!r} should be {what or kind}, found {value!r}")
        if check is not None and not check(value):
            raise BundleError(f"{file}: {name!r} should be {what}, found {value!r}")
        return value

    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f'{file} is not a MURA bundle manifest (its "format" is not {BUNDLE_FORMAT!r})')
    version = field("version", int, what="an integer")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"{file} is bundle version {version}; this kit reads up to {BUNDLE_VERSION}: upgrade the kit"
        )
    arch = field("architecture", str, lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES))
    size = field("input_size", int, lambda v: 32 <= v <= 2048, "an integer from 32 to 2048")
    norm = field("normalization", dict, what="an object with mean and std")
    mean, std = norm.get("mean"), norm.get("std")
    for name, triple in (("mean", mean), ("std", std)):
        if not (
            isinstance(triple, list) and len(triple) == 3 and all(isinstance(x, (int, float)) for x in triple)
        ):
            raise BundleError(f"{file}: normalization.{name} should be three numbers, found {triple!r}")
    if any(x <= 0 for x in std):
        raise BundleError(f"{file}: normalization.std must be positive, found {std!r}")
    aggregation = field("aggregation", str, lambda v: v in AGGREGATIONS, "one of " + ", ".join(AGGREGATIONS))
    threshold = field(
        "threshold", (int, float), lambda v: 0.0 <= v <= 1.0 and not math.isnan(v), "a number in [0, 1]"
    )
    tta = data.get("tta_hflip", False)
    if not isinstance(tta, bool):
        raise BundleError(f"{file}: 'tta_hflip' should be true or false, found {tta!r}")
    raw = field("members", list, lambda v: len(v) > 0, "a non-empty list")
    members = []
    for i, m in enumerate(raw):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("file"), str)
            or not isinstance(m.get("sha256"), str)
        ):
            raise BundleError(f'{file}: members[{i}] needs a "file" and a "sha256" string, found {m!r}')
        if Path(m["file"]).name != m["file"]:
            raise BundleError(
                f"{file}: members[{i}].file must be a file name inside the bundle, found {m['file']!r}"
            )
        members.append(
            Member(m["file"], m["sha256"], str(m.get("source", "")), m.get("val_loss"), m.get("val_kappa"))
        )
    return Manifest(arch, size, tuple(mean), tuple(std), aggregation, float(threshold), tta, tuple(members))


def load_bundle(path: str | Path, device: str = "cpu") -> Bundle:
    """The manifest and every member network, validated, in eval mode on `device`."""
    import torch

    from reference_model.model import build_model

    folder = Path(path)
    manifest = read_manifest(folder)
    models = []
    for i, member in enumerate(manifest.members):
        file = folder / member.file
        if not file.is_file():
            raise BundleError(f"bundle {folder}: member {i} file {member.file} is missing")
        actual = sha256_file(file)
        if actual != member.sha256:
            raise BundleError(
                f"bundle {folder}: {member.file} does not match its sha256 in manifest.json (expected "
                f"{member.sha256[:12]}..., found {actual[:12]}...): "
                "the file was changed or damaged; rebuild the bundle"
            )
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BundleError(
                f"bundle {folder}: {member.file} is not a loadable state dict ({str(exc)[:200]})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise BundleError(f"bundle {folder}: {member.file} should hold a state dict of tensors")
        model = build_model(manifest.architecture, pretrained=False)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            details = "; ".join(
                part
                for part in (
                    f"missing {len(missing)} weights (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(wrong)} of the wrong shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} "
                    f"instead of {tuple(expected[wrong[0]].shape)})"
                    if wrong
                    else "",
                )
                if part
            )
            raise BundleError(
                f"bundle {folder}: {member.file} does not fit {manifest.architecture}: {details}"
            )
        model.load_state_dict(state)
        models.append(model.eval().to(device))
    return Bundle(folder, manifest, models)


def make_bundle(
    checkpoints: list[str | Path],
    out: str | Path,
    *,
    threshold: float = 0.5,
    tta_hflip: bool = False,
    force: bool = False,
) -> Manifest:
    """Assemble a bundle from training checkpoints (run folders or their best.pt / last.pt)."""
    import torch

    from reference_model.train import TrainError, load_checkpoint

    out = Path(out)
    if not checkpoints:
        raise BundleError("no checkpoints given; pass one or more run folders or .pt files")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").is_file())):
        raise BundleError(f"{out} exists and is not a bundle; choose another --out (nothing was written)")
    if out.is_dir() and (out / "manifest.json").is_file() and not force:
        raise BundleError(f"{out} already holds a bundle; pass --force to replace it")
    payloads = []
    for source in checkpoints:
        try:
            payloads.append((str(source), load_checkpoint(source)))
        except TrainError as exc:
            raise BundleError(str(exc)) from None
    shapes = {(p["config"]["arch"], p["config"]["image_size"]) for _, p in payloads}
    if len(shapes) > 1:
        listing = ", ".join(
            f"{s} ({p['config']['arch']}, {p['config']['image_size']} px)" for s, p in payloads
        )
        raise BundleError(f"an ensemble's members must share architecture and input size; found {listing}")
    arch, size = shapes.pop()
    # Write into a temporary folder next to `out`, then swap it in: never half a bundle.
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        members = []
        for i, (source, payload) in enumerate(payloads):
            file = tmp / f"member-{i}.pt"
            torch.save(payload["model"], file)
            members.append(
                Member(
                    file.name, sha256_file(file), source, payload.get("val_loss"), payload.get("val_kappa")
                )
            )
        manifest = Manifest(
            arch, size, IMAGENET_MEAN, IMAGENET_STD, "mean", threshold, tta_hflip, tuple(members)
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


import click  # noqa: E402


@click.command("bundle")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The bundle folder to write.")
@click.option(
    "--threshold", type=float, default=0.5, show_default=True, help="Abnormal iff probability > this."
)
@click.option("--tta-hflip", is_flag=True, help="Also average each view with its mirror image.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
def command(checkpoints: tuple[Path, ...], out: Path, threshold: float, tta_hflip: bool, force: bool) -> None:
    """Assemble an ensemble bundle from CHECKPOINTS (run folders or their best.pt)."""
    if not 0.0 <= threshold <= 1.0:
        raise click.ClickException(f"--threshold must lie between 0 and 1, found {threshold}")
    try:
        manifest = make_bundle(list(checkpoints), out, threshold=threshold, tta_hflip=tta_hflip, force=force)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {len(manifest.members)} x {manifest.architecture} at {manifest.input_size} px")
