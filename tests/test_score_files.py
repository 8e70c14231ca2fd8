"""scorer.files.write_atomic and write_together: whole files, with the mode a plain write would
give them."""

import os
import stat

import pytest

from scorer.files import write_atomic, write_together


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_not_mkstemps_0600(tmp_path, umask_022):
    target = tmp_path / "scores.json"
    write_atomic(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert mode(target) == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "board.html"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_both_files_or_neither(tmp_path, umask_022):
    """The second file failing (here: its folder cannot be made) leaves the first unwritten,
    and an earlier first file as it was."""
    (tmp_path / "output.csv").write_text("earlier answer\n")
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        write_together({tmp_path / "output.csv": "new\n", tmp_path / "file" / "p.csv": "0.5\n"})
    assert (tmp_path / "output.csv").read_text() == "earlier answer\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "output.csv"]
    (tmp_path / "sub").mkdir()
    write_together({tmp_path / "output.csv": "new\n", tmp_path / "sub" / "p.csv": "0.5\n"})
    assert (tmp_path / "output.csv").read_text() == "new\n" and (tmp_path / "sub" / "p.csv").is_file()
    assert stat.S_IMODE((tmp_path / "sub" / "p.csv").stat().st_mode) == 0o644  # not mkstemp's 0o600
