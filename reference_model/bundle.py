"""Ensemble bundles: what a submission ships and `predict.py` loads.

A bundle is a folder:

    manifest.json   {"format": "mura-bundle", "version": 2,
                     "architecture": "densenet169", "input_size": 224,
                     "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                     "aggregation": "mean", "threshold": 0.5, "tta_hflip": false,
                     "members": [{"file": "member-0.pt", "sha256": "...",
                                  "source": "member-0/best.pt: densenet169, seed 0, epoch 7, val loss 0.3100",
                                  "val_loss": 0.31, "val_kappa": 0.72}, ...],
                     "onnx": {"file": "ensemble.onnx", "sha256": "...", ...},
                     "content_sha256": "..."}
    member-0.pt     a state dict (torch.save of model.state_dict()), loaded with weights_only=True
    member-1.pt     ...

A study's probability is the mean (the only aggregation so far: reference_model.aggregation) of
its views' probabilities over all members (and, with tta_hflip, over each view and its mirror
image); the study is abnormal iff that probability > threshold -- the MURA paper's rule with its
defaults.

Each file's sha256 guards the weights; `content_sha256` (version 2) guards the manifest itself: it
is the SHA-256 of the manifest's other fields (canonical JSON), so a hand-edited input size,
threshold or member list is refused instead of silently changing the predictions (the weights do
not record the input size they were trained at). To change them, rebuild with `mura bundle`
(--threshold, --tta-hflip). A member's `source` says where it came from without the file
system's paths: the run folder's name, its architecture and seed, the checkpoint's epoch and
validation loss. Version 1 manifests (no content hash) are still read.

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
from dataclasses import dataclass, replace
from pathlib import Path

from reference_model.aggregation import AGGREGATIONS, DEFAULT_THRESHOLD
from reference_model.architectures import ARCHITECTURES
from reference_model.outputs import OutputError, check_output_folder
from reference_model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from scorer.files import file_sha256

BUNDLE_FORMAT = "mura-bundle"
BUNDLE_VERSION = 2  # 2: content_sha256
DIGEST_FIELD = "content_sha256"
MAX_INPUT_SIZE = 2048
ONNX_FILE = "ensemble.onnx"


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
    onnx: Member | None = None  # the whole ensemble as one ONNX graph, when it was exported

    def to_json(self) -> dict:
        data = {
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
        if self.onnx is not None:
            data["onnx"] = self.onnx.__dict__
        data[DIGEST_FIELD] = manifest_digest(data)
        return data


def manifest_digest(data: dict) -> str:
    """The SHA-256 of a manifest's fields other than content_sha256, as canonical JSON."""
    content = {k: v for k, v in data.items() if k != DIGEST_FIELD}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """manifest.json of `folder`, with its content hash: the one way a manifest is written."""
    (Path(folder) / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    models: list  # torch modules in eval mode, one per member

    @property
    def onnx_path(self) -> Path | None:
        return None if self.manifest.onnx is None else self.path / self.manifest.onnx.file


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate `manifest.json` of a bundle folder (no torch needed)."""
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
    if version >= 2 and data.get(DIGEST_FIELD) != manifest_digest(data):
        what = "has no content_sha256" if DIGEST_FIELD not in data else "does not match its content_sha256"
        raise BundleError(
            f"{file} {what}: the manifest was edited after `mura bundle` wrote it, and a changed input "
            "size, threshold or member list would silently change the predictions; rebuild the bundle "
            "with `mura bundle` (it takes --threshold and --tta-hflip)"
        )
    arch = field("architecture", str, lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES))
    smallest = ARCHITECTURES[arch].stride
    size = field(
        "input_size",
        int,
        lambda v: smallest <= v <= MAX_INPUT_SIZE,
        f"an integer from {smallest} to {MAX_INPUT_SIZE}",
    )
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
    members = tuple(_member(m, f"members[{i}]", file) for i, m in enumerate(raw))
    onnx = None if data.get("onnx") is None else _member(data["onnx"], "onnx", file)
    return Manifest(arch, size, tuple(mean), tuple(std), aggregation, float(threshold), tta, members, onnx)


def _member(m: object, where: str, file: Path) -> Member:
    if not isinstance(m, dict) or not isinstance(m.get("file"), str) or not isinstance(m.get("sha256"), str):
        raise BundleError(f'{file}: {where} needs a "file" and a "sha256" string, found {m!r}')
    if Path(m["file"]).name != m["file"]:
        raise BundleError(f"{file}: {where}.file must be a file name inside the bundle, found {m['file']!r}")
    return Member(m["file"], m["sha256"], str(m.get("source", "")), m.get("val_loss"), m.get("val_kappa"))


def check_file(folder: Path, member: Member, what: str) -> Path:
    """The member's file, present and matching its sha256 in the manifest."""
    file = folder / member.file
    if not file.is_file():
        raise BundleError(f"bundle {folder}: {what} file {member.file} is missing")
    actual = file_sha256(file)
    if actual != member.sha256:
        raise BundleError(
            f"bundle {folder}: {member.file} does not match its sha256 in manifest.json (expected "
            f"{member.sha256[:12]}..., found {actual[:12]}...): "
            "the file was changed or damaged; rebuild the bundle"
        )
    return file


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names is present and unchanged (its sha256), before any is used."""
    if manifest.onnx is not None:
        check_file(folder, manifest.onnx, "the ONNX")
    for i, member in enumerate(manifest.members):
        check_file(folder, member, f"member {i}")


def load_bundle(path: str | Path, device: str = "cpu", *, manifest: Manifest | None = None) -> Bundle:
    """The manifest and every member network, validated, in eval mode on `device`."""
    from reference_model.model import build_model, is_state_dict, load_torch_file, state_dict_mismatch

    folder = Path(path)
    manifest = manifest or read_manifest(folder)
    verify_files(folder, manifest)
    models = []
    for member in manifest.members:
        file = folder / member.file
        state = load_torch_file(file, "a member's weights (torch.save of model.state_dict())", BundleError)
        if not is_state_dict(state):
            raise BundleError(f"bundle {folder}: {member.file} should hold a state dict of tensors")
        model = build_model(manifest.architecture, pretrained=False)
        missing, unexpected, wrong = state_dict_mismatch(model, state)
        if missing or unexpected or wrong:
            details = "; ".join(
                part
                for part in (
                    f"missing {len(missing)} weights (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(wrong)} of the wrong shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} "
                    f"instead of {tuple(model.state_dict()[wrong[0]].shape)})"
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
    threshold: float = DEFAULT_THRESHOLD,
    tta_hflip: bool = False,
    force: bool = False,
) -> Manifest:
    """Assemble a bundle from training checkpoints (run folders or their best.pt / last.pt)."""
    from reference_model.training import TrainError, load_checkpoint

    if not checkpoints:
        raise BundleError("no checkpoints given; pass one or more run folders or .pt files")
    _check_out(Path(out), force)  # before reading gigabytes of checkpoints
    payloads = []
    for source in checkpoints:
        try:
            payload = load_checkpoint(source)
        except TrainError as exc:
            raise BundleError(str(exc)) from None
        payloads.append((describe_source(Path(source), payload), payload))
    shapes = {(p["config"]["arch"], p["config"]["image_size"]) for _, p in payloads}
    if len(shapes) > 1:
        listing = ", ".join(
            f"{s} ({p['config']['arch']}, {p['config']['image_size']} px)" for s, p in payloads
        )
        raise BundleError(f"an ensemble's members must share architecture and input size; found {listing}")
    arch, size = shapes.pop()
    members = [(s, p["model"], p.get("val_loss"), p.get("val_kappa")) for s, p in payloads]
    return write_bundle(members, arch, size, out, threshold=threshold, tta_hflip=tta_hflip, force=force)


def describe_source(path: Path, payload: dict) -> str:
    """Where a member came from, without the file system's paths (a bundle is shared): the run
    folder's name, its architecture and seed, the checkpoint's epoch and validation loss."""
    file = path / "best.pt" if path.is_dir() else path
    config = payload.get("config", {})
    val_loss = payload.get("val_loss")
    loss = f", val loss {val_loss:.4f}" if isinstance(val_loss, (int, float)) else ""
    return (
        f"{file.parent.name or '.'}/{file.name}: {config.get('arch')}, seed {config.get('seed')}, "
        f"epoch {payload.get('epoch')}{loss}"
    )


def _check_out(out: Path, force: bool) -> None:
    """`out` can take a bundle: new, empty, or (with force) a bundle to replace; writable."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").is_file())):
        raise BundleError(f"{out} exists and is not a bundle; choose another --out (nothing was written)")
    if out.is_dir() and (out / "manifest.json").is_file() and not force:
        raise BundleError(f"{out} already holds a bundle; pass --force to replace it")
    try:
        check_output_folder(out, "bundle", swapped_in=True)
    except OutputError as exc:
        raise BundleError(str(exc)) from None


def write_bundle(
    members: list[tuple[str, dict, float | None, float | None]],
    architecture: str,
    input_size: int,
    out: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    tta_hflip: bool = False,
    force: bool = False,
    onnx: bool = True,
) -> Manifest:
    """Write a bundle of `members` (source, state dict, val_loss, val_kappa) to `out`, with the
    whole ensemble also exported as one ONNX graph when `onnx` (the fast exact CPU path)."""
    import torch

    out = Path(out)
    _check_out(out, force)
    # Write into a temporary folder next to `out`, then swap it in: never half a bundle.
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise BundleError(
            f"cannot create the bundle {out} in {parent} ({exc.strerror}); choose another --out"
        ) from None
    tmp.chmod(0o755)  # mkdtemp makes it private; a sandboxed non-root runner must read it
    try:
        written = []
        for i, (source, state, val_loss, val_kappa) in enumerate(members):
            file = tmp / f"member-{i}.pt"
            torch.save(state, file)
            written.append(Member(file.name, file_sha256(file), source, val_loss, val_kappa))
        manifest = Manifest(
            architecture,
            input_size,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "mean",
            threshold,
            tta_hflip,
            tuple(written),
        )
        if onnx:
            manifest = _with_onnx(manifest, tmp)
        write_manifest(tmp, manifest)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:  # a full disk or a folder that changed under us: nothing half-written
        raise BundleError(
            f"cannot write the bundle {out} ({exc.strerror or exc}); nothing was written"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _with_onnx(manifest: Manifest, folder: Path) -> Manifest:
    """Export the ensemble (every member, sigmoid outputs side by side) as one ONNX graph."""
    import importlib.util
    import sys
    import warnings

    import torch

    from reference_model.model import EnsembleNet

    if importlib.util.find_spec("onnx") is None:
        print(
            "warning: the onnx package is not installed, so the bundle has no ensemble.onnx and "
            "predict.py will use torch on CPU (slower); install mura-kit[model] to get it",
            file=sys.stderr,
        )
        return manifest
    bundle = load_bundle(folder, manifest=manifest)
    net = EnsembleNet(bundle.models).eval()
    example = torch.zeros(1, 3, manifest.input_size, manifest.input_size)
    file = folder / ONNX_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (example,),
            str(file),
            dynamo=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
        )
    return replace(manifest, onnx=Member(file.name, file_sha256(file), "export of the members"))
