"""A store in a read-only folder (a read-only bind mount, as a container or a shared drive has
it): render reads it, and sees what a writer elsewhere has committed; add says why it cannot
write. The folder is made read-only for real, in a private mount namespace (`unshare`), because
root ignores file permissions."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from leaderboard_helpers import ROOT, assert_host_error, mura, score_result, write_json

from scorer.leaderboard.store import Entry, open_store

# Mount FOLDER read-only over itself, then run the command (in a namespace: nothing outside sees it).
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


@functools.cache
def unshare_flags() -> tuple[str, ...] | None:
    """How this machine makes a private mount namespace: as root (-m), or in a user namespace
    (-r -m); None when neither works."""
    if shutil.which("unshare") is None:
        return None
    for flags in (("-m",), ("-r", "-m")):
        probe = subprocess.run(
            ["unshare", *flags, "sh", "-c", READ_ONLY, "sh", str(ROOT / "tests"), "true"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return flags
    return None


pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(
        unshare_flags() is None,
        reason="needs `unshare` with mount namespaces (root, or unprivileged user namespaces) "
        "to make a folder read-only for real",
    ),
]


def in_read_only(
    folder: Path, *command: str | Path, **kwargs
) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run `command` with `folder` read-only (a bind mount in a private mount namespace)."""
    flags = unshare_flags()
    assert flags is not None
    args = ["unshare", *flags, "sh", "-c", READ_ONLY, "sh", str(folder), *map(str, command)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if kwargs.pop("background", False):
        return subprocess.Popen(args, env=env, text=True, **kwargs)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def mura_read_only(folder: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return in_read_only(folder, sys.executable, "-m", "mura", *args)  # type: ignore[return-value]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    return [score_result(folder, accuracy, seed) for accuracy, seed in [(0.9, 1), (0.95, 2)]]


@pytest.fixture
def shared(tmp_path, results):
    """A folder holding a store of one result, closed (no -wal file beside it)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    with open_store(folder / "lb.sqlite") as store:
        store.add_result(results[0], Entry("alice", "dense-x3", submitted="2018-11-30"))
    assert sorted(p.name for p in folder.iterdir()) == ["lb.sqlite"]
    return folder


def test_render_reads_a_store_in_a_read_only_folder(shared):
    db = shared / "lb.sqlite"
    before = _listing(shared)
    writable = mura("leaderboard", "render", "--db", db)
    assert writable.returncode == 0, writable.stderr
    for fmt in ("md", "csv", "json"):
        proc = mura_read_only(shared, "leaderboard", "render", "--db", db, "--format", fmt)
        assert proc.returncode == 0, proc.stderr  # was "not an SQLite database (unable to open ...)"
        assert proc.stderr == "1 entries on the board\n"
        if fmt == "md":
            assert proc.stdout == writable.stdout
    assert _listing(shared) == before


def test_render_in_a_read_only_folder_sees_what_a_writer_elsewhere_committed(shared, results, tmp_path):
    db = shared / "lb.sqlite"
    result = write_json(tmp_path / "result.json", results[1])
    holder = subprocess.Popen(  # records one more and keeps the store open: it stays in the -wal file
        [sys.executable, "-c", HOLDER, str(db), str(result)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline() == "recorded\n"
        assert (shared / "lb.sqlite-wal").stat().st_size > 0
        proc = mura_read_only(shared, "leaderboard", "render", "--db", db)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "2 entries on the board\n"
        assert "bob" in proc.stdout and "dense-x3" in proc.stdout
    finally:
        holder.communicate("done\n", timeout=60)
    assert holder.returncode == 0


HOLDER = """
import json, sys
from scorer.leaderboard.store import Entry, open_store
with open_store(sys.argv[1]) as store:
    store.add_result(json.load(open(sys.argv[2])), Entry("bob", submitted="2018-12-01"))
    print("recorded", flush=True)
    sys.stdin.readline()
"""


def test_render_in_a_read_only_folder_notices_a_change_while_it_reads(shared, results, tmp_path):
    db = shared / "lb.sqlite"
    reader = in_read_only(
        shared,
        sys.executable,
        "-c",
        READER,
        db,
        background=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert reader.stdout.readline() == "opened\n"
        result = write_json(tmp_path / "result.json", results[1])
        assert mura("leaderboard", "add", result, "--submitter", "bob", "--db", db).returncode == 0
        out, _ = reader.communicate("read\n", timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert out.splitlines()[-1].startswith(f"HostError: leaderboard store {db} changed while it was read")


READER = """
import sys
from scorer.errors import HostError
from scorer.leaderboard import rank
from scorer.leaderboard.store import open_store
with open_store(sys.argv[1], read_only=True) as store:
    print("opened", flush=True)
    sys.stdin.readline()
    try:
        print(len(rank.build(store).rows))
    except HostError as exc:
        print(f"HostError: {exc}")
"""


def test_add_in_a_read_only_folder_says_the_folder_is_read_only(shared, results, tmp_path):
    result = write_json(tmp_path / "result.json", results[1])
    before = _listing(shared)
    proc = mura_read_only(
        shared, "leaderboard", "add", result, "--submitter", "bob", "--db", shared / "lb.sqlite"
    )
    assert_host_error(
        proc,
        f"cannot write to leaderboard store {shared / 'lb.sqlite'}: its folder {shared} is read-only",
        "lb.sqlite-wal and lb.sqlite-shm",
        "render` can still read it",
    )
    new = mura_read_only(
        shared, "leaderboard", "add", result, "--submitter", "bob", "--db", shared / "new.sqlite"
    )
    assert_host_error(
        new, f"cannot create leaderboard store {shared / 'new.sqlite'}: its folder {shared} is read-only"
    )
    assert _listing(shared) == before
