"""Reading a file with a clear error, hashing one, and writing one whole or not at all."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from scorer.errors import HostError, ScoringError


def read_file(path: Path, what: str, kind: str, error: type[ScoringError] = HostError) -> bytes:
    """A file's bytes, or `error` saying why it cannot be read (`what` names the file, `kind`
    says what was expected there)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; expected {kind} there") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; expected {kind}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's content, read in chunks (a model bundle can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask can only set
    it, and setting it briefly would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # a stricter mask meanwhile: a racing thread's file is only more private
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename: a killed run leaves either
    the old file or the whole new one, never half of it; concurrent writers never share a
    temporary file. The file gets the mode a plain open(path, "w") would give it: the replaced
    file's, or 0o666 less the umask (mkstemp alone makes it 0o600)."""
    write_together({Path(path): text})


def write_together(files: dict[Path, str]) -> None:
    """write_atomic for several files that belong together (predict's labels and
    probabilities): every one is written to a temporary file beside its target and synced
    before the first rename, so a failure on the second leaves the first untouched. A kill
    between two renames (microseconds) is the one window in which only some are replaced."""
    temps: list[str] = []
    try:
        for path, text in files.items():
            path = Path(path)
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in zip(temps, files):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
