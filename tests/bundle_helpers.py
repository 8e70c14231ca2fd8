"""Editing a bundle's manifest in tests."""

from __future__ import annotations

import json
from pathlib import Path

from reference_model.bundle import DIGEST_FIELD, manifest_digest


def edit_manifest(folder: Path, change, reseal: bool = True) -> None:
    """Apply `change` to the parsed manifest.json of `folder`. With `reseal` the content hash is
    recomputed, as a consistent manifest written by some other tool would have it, so that the
    checks after the hash are reached; without it the edit is a hand edit."""
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    if reseal:
        manifest[DIGEST_FIELD] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def tiny_bundle(out: Path, data: Path, images: list[str], members: int = 2) -> Path:
    """A bundle of randomly initialised DenseNet-121 members at 32 px with its ONNX export, made
    by the kit (`write_bundle`), whose threshold lies between the two middle study probabilities
    of `images` (paths relative to `data`): random heads put every study near the same
    probability, so at 0.5 all studies could get the same label."""
    import dataclasses
    import os

    import torch

    from reference_model.bundle import read_manifest, write_bundle, write_manifest
    from reference_model.infer import predict
    from reference_model.model import build_model

    torch.manual_seed(0)
    state = [
        (f"random-{i}", build_model("densenet121", pretrained=False).state_dict(), None, None)
        for i in range(members)
    ]
    write_bundle(state, "densenet121", 32, out)
    work = out.parent / f"{out.name}-threshold"
    work.mkdir()
    (work / "input.csv").write_text("".join(f"{line}\n" for line in images))
    cwd = os.getcwd()
    os.chdir(data)
    try:
        predict(work / "input.csv", work / "o.csv", out, probabilities=work / "p.csv", progress=False)
    finally:
        os.chdir(cwd)
    probs = sorted(float(line.split(",")[1]) for line in (work / "p.csv").read_text().splitlines())
    middle = len(probs) // 2
    threshold = (probs[middle - 1] + probs[middle]) / 2
    write_manifest(out, dataclasses.replace(read_manifest(out), threshold=threshold))
    return out
