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
