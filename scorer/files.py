"""Reading a file with a clear error, hashing one, and writing one whole or not at all."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from scorer.errors import HostError, ScoringError

MiB = 1 << 20


def read_file(
    path: Path,
    what: str,
    kind: str,
    error: type[ScoringError] = HostError,
    *,
    limit: int | None = None,
    advice: str = "",
) -> bytes:
    """A file's bytes, or `error` saying why it cannot be read (`what` names the file, `kind`
    says what was expected there). With `limit`, a file of more than `limit` bytes is refused
    before it is read whole (`advice` says what to do then): by its size when it is a regular
    file, else (a pipe, a device) after reading `limit` + 1 bytes."""
    try:
        with path.open("rb") as handle:
            if limit is None:
                return handle.read()
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise error(_too_large(path, what, kind, limit, info.st_size, advice))
            data = handle.read(limit + 1)
            if len(data) > limit:  # not a regular file, or one that grew meanwhile
                raise error(_too_large(path, what, kind, limit, None, advice))
            return data
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; expected {kind} there") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; expected {kind}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None


def _too_large(path: Path, what: str, kind: str, limit: int, size: int | None, advice: str) -> str:
    found = f"more than {limit / MiB:g} MiB" if size is None else f"{size / MiB:,.1f} MiB ({size:,} bytes)"
    return f"{what} {path} is {found}; expected {kind} of at most {limit / MiB:g} MiB; {advice}"


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
