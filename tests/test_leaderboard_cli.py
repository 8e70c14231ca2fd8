"""`mura leaderboard add` and the organiser's errors of every leaderboard command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import example_data
import pytest
from leaderboard_helpers import ROOT, assert_host_error, mura

from scorer.leaderboard.store import open_store


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A RESULT.json written by `mura score --json`, as an organiser makes one."""
    folder = tmp_path_factory.mktemp("scored")
    test = example_data.make_test(n=60, seed=3)
    example_data.write_gold(folder / "gold.csv", test)
    predictions = example_data.noisy_predictions(test, 0.92, seed=4)
    example_data.write_predictions(folder / "output.csv", test.studies, list(predictions))
    result = folder / "result.json"
    proc = mura("score", folder / "gold.csv", folder / "output.csv", "--resamples", "100", "--json", result)
    assert proc.returncode == 0, proc.stderr
    return result


def test_add_records_a_result_with_its_details_once(tmp_path, scored):
    db = tmp_path / "lb.sqlite"
    details = [
        "--submitter",
        "alice",
        "--model",
        "dense-x3",
        "--institution",
        "Uni",
        "--link",
        "https://u.org/m",
        "--date",
        "2018-11-30T19:48:12Z",
    ]
    proc = mura("leaderboard", "add", scored, *details, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"recorded result as submission 1 in {db}\n"
    again = mura("leaderboard", "add", scored, *details, "--db", db)
    assert (
        again.returncode == 0 and again.stdout == f"already recorded as submission 1 in {db}; nothing added\n"
    )
    result = json.loads(scored.read_text())
    with open_store(db) as store:
        assert store.query(
            "SELECT submitter, model, institution, link, submitted, status, kappa, content_sha256 "
            "FROM submissions"
        ) == [
            (
                "alice",
                "dense-x3",
                "Uni",
                "https://u.org/m",
                "2018-11-30T19:48:12Z",
                "scored",
                result["Overall_Mean"],
                result["inputs"]["predictions"]["sha256"],
            )
        ]
        assert store.result(1) == result


def test_add_records_a_failure(tmp_path):
    db = tmp_path / "lb.sqlite"
    proc = mura(
        "leaderboard",
        "add",
        "--failed",
        "predict.py exited with code 1",
        "--submitter",
        "bob",
        "--sha256",
        "ab" * 32,
        "--db",
        db,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"recorded failure as submission 1 in {db}\n"
    with open_store(db) as store:
        assert store.query("SELECT submitter, status, reason, content_sha256 FROM submissions") == [
            ("bob", "failed", "predict.py exited with code 1", "ab" * 32)
        ]
    render = mura("leaderboard", "render", "--db", db)
    assert render.returncode == 0 and "left off: 1 failed to score" in render.stderr


def test_the_default_store_is_the_environment_variable(tmp_path, scored):
    db = tmp_path / "env.sqlite"
    proc = mura(
        "leaderboard", "add", scored, "--submitter", "a", cwd=tmp_path, env={"MURA_LEADERBOARD": str(db)}
    )
    assert proc.returncode == 0 and db.exists()
    env = {k: v for k, v in os.environ.items() if k != "MURA_LEADERBOARD"}
    proc = subprocess.run(
        [sys.executable, "-m", "mura", "leaderboard", "add", scored, "--submitter", "a"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0 and (tmp_path / "leaderboard.sqlite").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "give either RESULT.json"),
        (("RESULT", "--failed", "x"), "give either RESULT.json"),
        (("RESULT", "--date", "30/11/2018"), "submission date: expected an ISO 8601 date"),
        (("RESULT", "--link", "www.x.org"), "link: expected an http:// or https:// address"),
        (("RESULT", "--sha256", "12"), "content_sha256: expected a SHA-256 digest"),
    ],
)
def test_bad_add_options_are_organiser_errors(tmp_path, scored, args, needle):
    db = tmp_path / "lb.sqlite"
    args = tuple(str(scored) if a == "RESULT" else a for a in args)
    assert_host_error(mura("leaderboard", "add", *args, "--submitter", "a", "--db", db), needle)
    assert not db.exists()  # checked before the store is created


def test_add_needs_a_submitter(scored, tmp_path):
    assert_host_error(mura("leaderboard", "add", scored, "--db", tmp_path / "lb.sqlite"), "--submitter")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "is empty"),
        (
            b'{\n  "Elbow_Mean": 0.5,\n',
            "is not valid JSON: Expecting property name enclosed in double quotes at line 3",
        ),
        (b"[]", "expected a JSON object written by `mura score --json`, found list"),
        (b'{"Overall_Mean": 0.8}', "format: expected 'mura-kit score v1'"),
        (b"\xe9t\xe9", "is not UTF-8"),
    ],
)
def test_a_malformed_result_file_names_the_file_and_field(tmp_path, content, needle):
    bad = tmp_path / "bad-result.json"
    bad.write_bytes(content)
    assert_host_error(
        mura("leaderboard", "add", bad, "--submitter", "a", "--db", tmp_path / "lb.sqlite"), str(bad), needle
    )
    assert not (tmp_path / "lb.sqlite").exists()


def test_a_result_with_a_broken_field_names_it(tmp_path, scored):
    result = json.loads(scored.read_text())
    result["Hand_Upper"] = "high"
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(result))
    proc = mura("leaderboard", "add", bad, "--submitter", "a", "--db", tmp_path / "lb.sqlite")
    assert_host_error(proc, f"{bad}: Hand_Upper: expected a number between -1 and 1 or null, found 'high'")
    assert_host_error(
        mura("leaderboard", "add", tmp_path / "none.json", "--submitter", "a"), "does not exist"
    )


def test_a_db_that_is_not_a_store_is_refused_and_untouched(tmp_path, scored):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 100)
    before = notes.read_bytes()
    dump = tmp_path / "dump.json"
    dump.write_text('{"leaderboard": []}')
    for command in (["add", scored, "--submitter", "a"], ["render"], ["import-codalab", dump]):
        proc = mura("leaderboard", *command, "--db", notes)
        assert_host_error(proc, str(notes))
    assert notes.read_bytes() == before


def test_render_without_a_store_creates_nothing(tmp_path):
    db = tmp_path / "absent.sqlite"
    assert_host_error(mura("leaderboard", "render", "--db", db), "does not exist; record a result first")
    assert not db.exists()


def test_render_errors(tmp_path, scored):
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "add", scored, "--submitter", "a", "--db", db).returncode == 0
    assert_host_error(
        mura("leaderboard", "render", "--db", db, "--out", tmp_path / "no" / "x.md"), "cannot write --out"
    )
    assert_host_error(mura("leaderboard", "render", "--db", db, "--threshold", "2"), "--threshold")
    assert_host_error(mura("leaderboard", "render", "--db", db, "--format", "pdf"), "--format")
    assert_host_error(
        mura("leaderboard", "render", "--db", db, "--radiologist-kappa", "7"), "--radiologist-kappa"
    )


def _python(code: str, *args: str | Path) -> subprocess.CompletedProcess:
    """`python -c code args...` with this kit on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env
    )


def test_every_format_renders_without_numpy_or_matplotlib(tmp_path, scored):
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "add", scored, "--submitter", "a", "--db", db).returncode == 0
    probe = (
        "import sys; from mura.cli import main\n"
        "sys.argv = ['mura', 'leaderboard', 'render', '--db', sys.argv[1], '--format', sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print('HEAVY', sorted({'numpy', 'matplotlib', 'pandas', 'torch'} & loaded), file=sys.stderr)"
    )
    for fmt, heavy in [("md", "[]"), ("csv", "[]"), ("json", "[]"), ("html", "[]")]:
        proc = _python(probe, db, fmt)
        assert f"HEAVY {heavy}" in proc.stderr, proc.stderr


def test_a_new_format_is_one_entry_in_renderers(tmp_path, scored):
    """`--format` takes, and `render` writes, whatever render.RENDERERS holds: nothing else lists
    the formats."""
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "add", scored, "--submitter", "a", "--db", db).returncode == 0
    probe = (
        "import sys\n"
        "from scorer.leaderboard import render\n"
        "render.RENDERERS['count'] = lambda board, options: f'{len(board.rows)} rows, {options.title}\\n'\n"
        "from mura.cli import main\n"
        "sys.argv = ['mura', 'leaderboard', 'render', '--db', sys.argv[1], *sys.argv[2:]]\n"
        "main()\n"
    )
    proc = _python(probe, db, "--format", "count", "--title", "T")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1 rows, T\n"
    assert "md|html|csv|json|count" in _python(probe, db, "--help").stdout


def test_help():
    proc = mura("leaderboard", "--help")
    assert proc.returncode == 0
    for command in ("add", "render", "import-codalab"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "date, found",
    [
        ("0500-01-01", "found '0500-01-01' (year 500 in UTC)"),
        ("0001-01-01T00:00:00+01:00", "which is before year 1 in UTC"),
        ("9999-12-31T23:59:59-01:00", "which is after year 9999 in UTC"),
        ("30/11/2018", "found '30/11/2018'"),
    ],
)
def test_a_bad_date_is_an_error_about_the_option_not_the_result_file(tmp_path, scored, date, found):
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "add", scored, "--submitter", "a", "--date", date, "--db", db)
    assert_host_error(
        proc,
        "organiser error: --date: submission date: expected an ISO 8601 date or datetime from 1970 to 9999",
        found,
    )
    assert str(scored) not in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--link", "www.x.org", "--link: link: expected an http:// or https:// address"),
        ("--sha256", "12", "--sha256: content_sha256: expected a SHA-256 digest"),
        ("--model", os.fsdecode(b"caf\xe9"), "--model: model: expected printable text"),  # not UTF-8
        ("--institution", "\x1b[2JUni", "--institution: institution: expected printable text"),
    ],
)
def test_each_bad_option_is_named_in_its_error(tmp_path, scored, option, value, needle):
    proc = mura(
        "leaderboard", "add", scored, "--submitter", "a", option, value, "--db", tmp_path / "lb.sqlite"
    )
    assert_host_error(proc, f"organiser error: {needle}")
    assert str(scored) not in proc.stderr and not (tmp_path / "lb.sqlite").exists()


def test_re_adding_with_corrected_details_updates_the_row(tmp_path, scored):
    db = tmp_path / "lb.sqlite"
    base = ["leaderboard", "add", scored, "--submitter", "alice", "--db", db]
    first = mura(*base, "--model", "dense-x3", "--institution", "Uni", "--date", "2018-11-30")
    assert first.stdout == f"recorded result as submission 1 in {db}\n"
    fixed = mura(*base, "--model", "dense-x4", "--link", "https://u.org/m")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == (
        f"already recorded as submission 1 in {db}; updated its model 'dense-x3' -> 'dense-x4', "
        "link none -> 'https://u.org/m'\n"
    )
    cleared = mura(*base, "--institution", "", "--date", "2019-01-01")
    assert cleared.stdout == (
        f"already recorded as submission 1 in {db}; updated its institution 'Uni' -> none (its submission "
        "date stays 2018-11-30T00:00:00Z: a recorded submission keeps its date)\n"
    )
    same = mura(*base, "--model", "dense-x4")
    assert same.stdout == f"already recorded as submission 1 in {db}; nothing added\n"
    board = mura("leaderboard", "render", "--db", db)
    assert board.stdout.splitlines()[3].startswith("| 1 | Nov 30, 2018 | dense-x4 <https://u.org/m> | ")
    with open_store(db) as store:
        assert store.counts() == {"scored": 1, "failed": 0}


def test_an_empty_file_is_never_taken_for_a_store(tmp_path, scored):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    dump = tmp_path / "dump.json"
    dump.write_text('{"leaderboard": []}')
    for command in (["render"], ["add", scored, "--submitter", "a"], ["import-codalab", dump]):
        proc = mura("leaderboard", *command, "--db", empty)
        assert_host_error(proc, f"leaderboard store {empty} is an empty file (0 bytes)", "truncated")
        assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.json", "empty.sqlite"]


def test_a_db_under_a_file_says_it_is_a_file(tmp_path, scored):
    gold = tmp_path / "gold.csv"
    gold.write_text("x\n")
    for command in (["render"], ["add", scored, "--submitter", "a"]):
        proc = mura("leaderboard", *command, "--db", gold / "x.sqlite")
        assert_host_error(proc, f"{gold} is a file, not a folder")
        assert "does not exist" not in proc.stderr


def _edited_store(tmp_path, scored, sql: str, *params):
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "add", scored, "--submitter", "a", "--db", db).returncode == 0
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, params)
    conn.close()
    return db


@pytest.mark.parametrize(
    "sql, params, needle",
    [
        (  # what `add --date 0500-01-01` stored before dates were checked
            "UPDATE submissions SET submitted = ?",
            ("500-01-01T00:00:00Z",),
            "submission 1's submission date is unreadable: expected a UTC time such as "
            "2018-11-30T19:48:12Z, found '500-01-01T00:00:00Z'",
        ),
        ("UPDATE submissions SET submitted = ?", ("2018-13-01T00:00:00Z",), "submission date"),
        ("UPDATE submissions SET kappa = ?", ("high",), "submission 1's kappa is unreadable"),
        ("UPDATE submissions SET hand_upper = ?", (7.5,), "submission 1's hand_upper is unreadable"),
        ("UPDATE submissions SET model = ?", (b"\x00\x01",), "submission 1's model is unreadable"),
        ("UPDATE submissions SET link = ?", ("javascript:alert(1)",), "submission 1's link is unreadable"),
        (
            "UPDATE radiologists SET kappa = ? WHERE grp = 'Overall'",
            ("n/a",),
            "submission 1's radiologist 'Rad",
        ),
    ],
)
def test_render_names_a_stored_value_it_cannot_read(tmp_path, scored, sql, params, needle):
    db = _edited_store(tmp_path, scored, sql, *params)
    for fmt in ("md", "html", "csv", "json"):
        proc = mura("leaderboard", "render", "--db", db, "--format", fmt)
        assert_host_error(proc, f"leaderboard store {db}: ", needle, "with an SQLite tool")
        assert proc.stdout == ""


def test_a_truncated_store_is_reported_damaged(tmp_path, scored):
    db = tmp_path / "lb.sqlite"
    for i in range(4):
        assert mura("leaderboard", "add", scored, "--submitter", f"a{i}", "--db", db).returncode == 0
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    for command in (["render"], ["add", scored, "--submitter", "b"]):
        assert_host_error(mura("leaderboard", *command, "--db", cut), f"leaderboard store {cut} is damaged")


def test_json_nested_too_deeply_is_an_organiser_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for command in (["add", deep, "--submitter", "a"], ["import-codalab", deep]):
        assert_host_error(
            mura("leaderboard", *command, "--db", tmp_path / "lb.sqlite"), str(deep), "nests JSON too deeply"
        )
    assert not (tmp_path / "lb.sqlite").exists()
