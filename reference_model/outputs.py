"""Where a command writes its results: checked before the work starts, written whole or not at all.

A run that fails on its output after minutes of work, or that leaves one of two result files
behind, costs the user the run; so every command checks its targets first (the folder exists
or can be created, and a file can really be created in it: `os.access` says yes to root on a
read-only or virtual file system such as /proc) and writes its files last, together
(scorer.files.write_together).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(Exception):
    """An output target that cannot be written; the message says which and what to do."""


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _probe(folder: Path, target: Path, what: str) -> None:
    """Create and remove a file in `folder`, the folder that will hold `target` (or its
    nearest existing ancestor)."""
    if not folder.is_dir():
        raise OutputError(
            f"cannot write {what} {target}: {folder} is a file, not a folder; choose another location"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".mura-write-check.", dir=folder)
    except OSError as exc:
        raise OutputError(
            f"cannot write {what} {target}: creating a file in {folder} failed ({exc.strerror}); "
            "choose a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, what: str) -> None:
    """`path` can be written as a regular file (its folder may still have to be created)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; expected a file path to write")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file; expected a file path to write")
    _probe(_nearest_existing(path.parent), path, what)


def check_output_folder(path: str | Path, what: str, *, swapped_in: bool = False) -> None:
    """`path` is a folder that exists or can be created, and files can be created in it; with
    `swapped_in` (a folder written beside `path` and renamed into place, like a bundle) its
    parent must take new files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; expected a folder (new or existing)")
    _probe(_nearest_existing(path.absolute().parent if swapped_in else path), path, what)
