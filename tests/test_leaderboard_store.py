"""The leaderboard store's Python API (the one the evaluation harness records with)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from leaderboard_helpers import ROOT, score_result

from scorer.errors import HostError
from scorer.leaderboard import records, schema
from scorer.leaderboard.store import Entry, open_store

GROUPS = ["Overall", "Elbow", "Finger", "Forearm", "Hand", "Humerus", "Shoulder", "Wrist"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return score_result(tmp_path_factory.mktemp("scores"), 0.9, seed=1)


def test_a_result_is_stored_with_every_field(tmp_path, result):
    entry = Entry("alice", "densenet-x3 (ensemble)", "Uni  Somewhere", "https://example.org/m", "2018-11-30")
    with open_store(tmp_path / "lb.sqlite") as store:
        sid, added = store.add_result(result, entry)
        assert added
        [row] = store.query(
            "SELECT id, submitter, model, institution, link, submitted, scored, status, reason, "
            "gold_raters, gold_sha256, content_sha256 FROM submissions"
        )
        assert row[:9] == (
            sid,
            "alice",
            "densenet-x3 (ensemble)",
            "Uni Somewhere",
            "https://example.org/m",
            "2018-11-30T00:00:00Z",
            row[6],
            "scored",
            None,
        )
        assert (
            abs(datetime.fromisoformat(row[6][:-1]) - datetime.now(timezone.utc).replace(tzinfo=None)).seconds
            < 60
        )
        assert row[9] == '["' + '", "'.join(result["gold"]["gold_raters"]) + '"]'
        assert row[10] == result["inputs"]["gold"]["sha256"]
        assert row[11] == result["inputs"]["predictions"]["sha256"]  # the default content hash
        for group in GROUPS:
            columns = ", ".join(schema.score_columns(group))
            [stored] = store.query(f"SELECT {columns} FROM submissions")
            assert stored == tuple(
                result[f"{group}_{p}"] for p in ("Mean", "Lower", "Upper")
            )  # full precision
        baselines = store.query("SELECT name, grp, kappa, kappa_lower, kappa_upper FROM radiologists")
        expected = {
            (name, group, r["kappa"], r["kappa_lower"], r["kappa_upper"])
            for name, groups in result["radiologists"].items()
            for group, r in groups.items()
        }
        assert set(baselines) == expected and len(baselines) == 3 * 8
        assert store.result(sid) == result


def test_the_same_result_twice_is_one_row(tmp_path, result):
    with open_store(tmp_path / "lb.sqlite") as store:
        first = store.add_result(result, Entry("alice", model="m"))
        again = store.add_result(result, Entry("alice", model="m"))
        moved = {
            **result,
            "inputs": {k: {**v, "file": f"/elsewhere/{k}.csv"} for k, v in result["inputs"].items()},
        }
        elsewhere = store.add_result(moved, Entry("alice", model="m"))
        other = store.add_result(result, Entry("bob", model="m"))
        assert first == (1, True) and again == (1, False) and elsewhere == (1, False)
        assert other == (2, True)
        assert store.counts() == {"scored": 2, "failed": 0}
        assert store.query("SELECT count(*) FROM radiologists") == [(2 * 24,)]


def test_failures_are_recorded_once_with_their_reason(tmp_path):
    bundle = "ab" * 32
    with open_store(tmp_path / "lb.sqlite") as store:
        sid, added = store.add_failure("predict.py exited with code 1", Entry("bob", content_sha256=bundle))
        assert added
        assert store.add_failure(
            "predict.py exited with code 1", Entry("bob", content_sha256=bundle.upper())
        ) == (
            sid,
            False,
        )
        assert store.add_failure("predict.py exited with code 1", Entry("bob", content_sha256="cd" * 32))[1]
        assert store.add_failure("timed out after 600 s", Entry("bob", content_sha256=bundle))[1]
        assert store.counts() == {"scored": 0, "failed": 3}
        rows = store.query("SELECT status, reason, kappa FROM submissions WHERE id = ?", (sid,))
        assert rows == [("failed", "predict.py exited with code 1", None)]


@pytest.mark.parametrize(
    "submitted, stored",
    [
        ("2018-11-30", "2018-11-30T00:00:00Z"),
        ("2018-11-30T19:48:12Z", "2018-11-30T19:48:12Z"),
        ("2018-11-30T20:48:12+01:00", "2018-11-30T19:48:12Z"),
        ("2018-11-30 19:48:12", "2018-11-30T19:48:12Z"),
    ],
)
def test_submission_dates_are_stored_in_utc(tmp_path, result, submitted, stored):
    with open_store(tmp_path / "lb.sqlite") as store:
        store.add_result(result, Entry("alice", submitted=submitted))
        assert store.query("SELECT submitted FROM submissions") == [(stored,)]


@pytest.mark.parametrize(
    "entry, needle",
    [
        (Entry("  "), "submitter"),
        (Entry("a", link="ftp://x"), "link: expected an http:// or https:// address"),
        (Entry("a", link="https://a b"), "link"),
        (Entry("a", submitted="Nov 30, 2018"), "submission date: expected an ISO 8601 date"),
        (Entry("a", content_sha256="abc"), "content_sha256"),
    ],
)
def test_a_bad_entry_is_a_host_error_and_records_nothing(tmp_path, result, entry, needle):
    with open_store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(HostError, match=needle) as info:
            store.add_result(result, entry)
        assert info.value.exit_code == 3
        with pytest.raises(HostError, match=needle):
            store.add_failure("boom", entry)
        assert store.counts() == {"scored": 0, "failed": 0}


def _broken(result: dict, change) -> dict:
    import copy

    broken = copy.deepcopy(result)
    change(broken)
    return broken


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: r.pop("format"), "format: expected 'mura-kit score v1'"),
        (
            lambda r: r.update(Overall_Mean="0.8"),
            "Overall_Mean: expected a number between -1 and 1 or null, found '0.8'",
        ),
        (lambda r: r.update(Wrist_Upper=1.5), "Wrist_Upper: expected a number between -1 and 1"),
        (lambda r: r.pop("Elbow_Lower"), "Elbow_Lower: missing"),
        (lambda r: r["gold"].pop("gold_raters"), "gold.gold_raters: missing"),
        (lambda r: r["gold"].update(gold_raters="Rad1"), "gold.gold_raters: expected a list"),
        (lambda r: r.update(radiologists=[]), "radiologists: expected a JSON object"),
        (lambda r: next(iter(r["radiologists"].values())).pop("Hand"), "radiologists.Rad1.Hand: missing"),
        (
            lambda r: r["radiologists"]["Rad1"]["Overall"].update(kappa=True),
            "radiologists.Rad1.Overall.kappa",
        ),
        (lambda r: r["inputs"]["predictions"].update(sha256="xyz"), "inputs.predictions.sha256"),
    ],
)
def test_a_malformed_result_names_the_field(tmp_path, result, change, needle):
    broken = _broken(result, change)
    with open_store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(HostError, match="^" + re.escape("result.json: " + needle)):
            store.add_result(broken, Entry("alice"), source="result.json")
        assert store.counts() == {"scored": 0, "failed": 0}


def test_a_result_with_nan_anywhere_is_refused(tmp_path, result):
    broken = _broken(result, lambda r: r["model"]["Elbow"].update(accuracy=float("nan")))
    with open_store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(HostError, match=r"^r\.json: holds NaN or Infinity"):
            store.add_result(broken, Entry("alice"), source="r.json")
        assert store.counts() == {"scored": 0, "failed": 0}


def test_a_result_that_is_not_an_object(tmp_path):
    with (
        open_store(tmp_path / "lb.sqlite") as store,
        pytest.raises(HostError, match="expected a JSON object"),
    ):
        store.add_result([1, 2], Entry("alice"))  # type: ignore[arg-type]


def _fingerprint(path):
    return path.read_bytes(), path.stat().st_mtime_ns


def test_a_file_that_is_not_a_store_is_left_untouched(tmp_path):
    text = tmp_path / "scores.csv"
    text.write_text("study,label\n" * 200)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.execute("INSERT INTO people VALUES ('x')")
    conn.close()
    for path, needle in [
        (text, "not an SQLite database"),
        (other, "not a leaderboard store .*tables: people"),
    ]:
        before = _fingerprint(path)
        with pytest.raises(HostError, match=needle):
            open_store(path)
        assert _fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite", "scores.csv"]


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path, result):
    path = tmp_path / "lb.sqlite"
    with open_store(path) as store:
        store.add_result(result, Entry("alice"))
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(HostError, match=f"schema version {schema.VERSION + 1}, newer than this kit reads"):
        open_store(path)
    assert _fingerprint(path) == before


def test_opening_without_creating_and_bad_paths(tmp_path):
    with pytest.raises(HostError, match="does not exist; record a result first"):
        open_store(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(HostError, match="is a folder"):
        open_store(tmp_path)
    with pytest.raises(HostError, match=r"folder .* does not exist"):
        open_store(tmp_path / "no" / "lb.sqlite")


def test_a_store_reopens_and_keeps_its_rows(tmp_path, result):
    path = tmp_path / "lb.sqlite"
    with open_store(path) as store:
        store.add_result(result, Entry("alice"))
    copy = tmp_path / "copy.sqlite"
    shutil.copy(path, copy)
    with open_store(copy) as store:
        assert store.counts() == {"scored": 1, "failed": 0}
        assert store.query("PRAGMA journal_mode") == [("wal",)]
        assert store.query("PRAGMA integrity_check") == [("ok",)]


def test_the_default_location_is_the_environment_variable_else_the_current_folder(tmp_path):
    probe = "from scorer.leaderboard.store import DEFAULT_DB; print(DEFAULT_DB)"
    env = {k: v for k, v in os.environ.items() if k != "MURA_LEADERBOARD"}
    env["PYTHONPATH"] = str(ROOT)
    run = functools.partial(subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True)
    assert run(env=env).stdout.strip() == "leaderboard.sqlite"
    assert run(env={**env, "MURA_LEADERBOARD": str(tmp_path / "x.sqlite")}).stdout.strip() == str(
        tmp_path / "x.sqlite"
    )


# --- dates, corrected details, files that are not whole stores ---------------------------------


@pytest.mark.parametrize(
    "submitted, found",
    [
        ("0500-01-01", "found '0500-01-01' (year 500 in UTC)"),  # was stored as 500-01-01T00:00:00Z
        ("1970-01-01T00:59:59+01:00", "(year 1969 in UTC)"),
        ("0001-01-01T00:00:00+01:00", "which is before year 1 in UTC"),  # was an OverflowError
        ("9999-12-31T23:59:59-01:00", "which is after year 9999 in UTC"),  # was an OverflowError
    ],
)
def test_a_date_outside_1970_to_9999_is_refused(tmp_path, result, submitted, found):
    expected = "submission date: expected an ISO 8601 date or datetime from 1970 to 9999"
    with open_store(tmp_path / "lb.sqlite") as store:
        for record in (lambda e: store.add_result(result, e), lambda e: store.add_failure("boom", e)):
            with pytest.raises(HostError, match=expected) as info:
                record(Entry("alice", submitted=submitted))
            assert found in info.value.message
        assert store.counts() == {"scored": 0, "failed": 0}


@pytest.mark.parametrize(
    "submitted, stored",
    [("1970-01-01", "1970-01-01T00:00:00Z"), ("9999-12-31T22:59:59-01:00", "9999-12-31T23:59:59Z")],
)
def test_the_first_and_last_dates_are_kept(tmp_path, result, submitted, stored):
    with open_store(tmp_path / "lb.sqlite") as store:
        store.add_result(result, Entry("alice", submitted=submitted))
        assert store.query("SELECT submitted FROM submissions") == [(stored,)]


def test_recording_again_with_other_details_corrects_them_on_the_same_row(tmp_path, result):
    with open_store(tmp_path / "lb.sqlite") as store:
        first = Entry("alice", "densnet", "Uni", "https://u.org/m", "2018-11-30")
        assert store.add_result(result, first) == (1, True)
        fixed = Entry("alice", model="densenet-x3", submitted="2019-01-01")  # institution, link not given
        assert store.add_result(result, fixed) == (1, False)
        assert store.query("SELECT model, institution, link, submitted FROM submissions") == [
            ("densenet-x3", "Uni", "https://u.org/m", "2018-11-30T00:00:00Z")  # the date is kept
        ]
        done = store.record(
            records.from_result(result, Entry("alice", institution="", link="https://u.org/n"))
        )
        assert (done.id, done.status, done.submitted) == (1, "updated", "2018-11-30T00:00:00Z")
        assert done.changes == {"institution": ("Uni", None), "link": ("https://u.org/m", "https://u.org/n")}
        again = store.record(records.from_result(result, Entry("alice", "densenet-x3")))
        assert (again.status, again.changes) == ("unchanged", {})
        assert store.query("SELECT model, institution, link FROM submissions") == [
            ("densenet-x3", None, "https://u.org/n")
        ]
        assert store.counts() == {"scored": 1, "failed": 0}
        # A failure's details are corrected the same way.
        failure = Entry("bob", "m1", content_sha256="ab" * 32)
        sid = store.add_failure("timed out", failure)[0]
        assert store.add_failure("timed out", Entry("bob", "m2", content_sha256="ab" * 32)) == (sid, False)
        assert store.query("SELECT model FROM submissions WHERE id = ?", (sid,)) == [("m2",)]


def test_an_empty_file_is_refused_as_a_truncated_store_and_left_untouched(tmp_path, result):
    empty = tmp_path / "lb.sqlite"
    empty.touch()
    for read_only in (False, True):
        with pytest.raises(
            HostError, match=r"is an empty file \(0 bytes\)\. A store is never empty, so .*truncated"
        ):
            open_store(empty, read_only=read_only)
        assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lb.sqlite"]


def test_an_sqlite_file_without_tables_is_not_taken_for_a_new_store(tmp_path):
    bare = tmp_path / "bare.sqlite"
    conn = sqlite3.connect(bare)
    conn.execute("PRAGMA page_size = 1024")
    conn.execute("VACUUM")  # a valid SQLite file with no tables
    conn.close()
    before = _fingerprint(bare)
    assert before[0].startswith(b"SQLite format 3\x00")
    with pytest.raises(HostError, match=r"an SQLite database but not a leaderboard store .*tables: none"):
        open_store(bare)
    assert _fingerprint(bare) == before


def test_a_new_store_appears_whole_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "lb.sqlite"
    open_store(path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lb.sqlite"]
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA application_id").fetchone() == (schema.APPLICATION_ID,)
    conn.close()
    reference = tmp_path / "reference" / "plain.sqlite"  # what SQLite itself would have created
    reference.parent.mkdir()
    sqlite3.connect(reference).close()
    assert oct(path.stat().st_mode) == oct(reference.stat().st_mode)


def test_reading_never_writes_and_brings_an_older_store_up_to_date_in_memory(tmp_path):
    v1 = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(v1)
    conn.executescript((ROOT / "tests" / "data" / "leaderboard_v1.sql").read_text())
    conn.close()
    before = _fingerprint(v1)
    with open_store(v1, read_only=True) as store:
        assert store.counts() == {"scored": 2, "failed": 1}
        assert len(store.scored()) == 2
        with pytest.raises(HostError, match="not writable"):
            store.add_failure("boom", Entry("x"))
    assert _fingerprint(v1) == before
    conn = sqlite3.connect(v1)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()
    with pytest.raises(HostError, match="does not exist; record a result first"):
        open_store(tmp_path / "absent.sqlite", read_only=True)
    assert not (tmp_path / "absent.sqlite").exists()


def test_a_path_under_a_file_says_it_is_a_file(tmp_path):
    (tmp_path / "gold.csv").write_text("x\n")
    for read_only in (False, True):
        with pytest.raises(HostError, match=r"cannot be there: .*gold\.csv is a file, not a folder"):
            open_store(tmp_path / "gold.csv" / "x.sqlite", read_only=read_only)


@pytest.mark.parametrize(
    "change, needle",
    [
        (
            lambda r: r.update(Overall_Mean=10**400),
            "Overall_Mean: expected a number between -1 and 1 or null",
        ),
        (lambda r: r.update(Elbow_Lower=-(10**400)), "Elbow_Lower: expected a number between -1 and 1"),
        (
            lambda r: r.update(radiologists={"Rad\ud800": r["radiologists"]["Rad1"]}),
            "radiologists: expected printable text",
        ),
        (
            lambda r: r["gold"].update(gold_raters=["Rad1", "Rad\x1b[2J"]),
            "gold.gold_raters: expected printable text",
        ),
    ],
)
def test_numbers_and_names_no_store_can_hold_are_refused(tmp_path, result, change, needle):
    # Each was a traceback: an int too large for a float, a name that is not UTF-8.
    broken = _broken(result, change)
    with open_store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(HostError, match="^" + re.escape("r.json: " + needle)):
            store.add_result(broken, Entry("alice"), source="r.json")
        assert store.counts() == {"scored": 0, "failed": 0}


@pytest.mark.parametrize("field", ["submitter", "model", "institution"])
@pytest.mark.parametrize("bad", ["a\x00b", "\x1b[31mred", "x\ud800", "del\x7f"])
def test_names_with_control_characters_are_refused(tmp_path, result, field, bad):
    entry = Entry(**{"submitter": "alice", field: bad})
    with open_store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(records.EntryError, match=f"^{field}: expected printable text") as info:
            store.add_result(result, entry)
        assert info.value.field == field and info.value.exit_code == 3
        assert store.counts() == {"scored": 0, "failed": 0}


def test_unicode_names_are_kept_and_a_failure_reason_is_always_recorded(tmp_path, result):
    with open_store(tmp_path / "lb.sqlite") as store:
        store.add_result(result, Entry("zoë", "模型 · Ünïcode ✓", "Université Paris-Saclay"))
        sid = store.add_failure("exit code 1; last lines of the log: \x1b[31mboom\x00", Entry("eve"))[0]
        assert store.query("SELECT submitter, model, institution FROM submissions WHERE id = 1") == [
            ("zoë", "模型 · Ünïcode ✓", "Université Paris-Saclay")
        ]
        assert store.query("SELECT reason FROM submissions WHERE id = ?", (sid,)) == [
            ("exit code 1; last lines of the log: \ufffd[31mboom\ufffd",)
        ]


def test_without_hard_links_a_new_store_is_copied_into_place(tmp_path, result, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # what vfat or some network drives say

    monkeypatch.setattr("scorer.leaderboard.store.os.link", no_links)
    path = tmp_path / "lb.sqlite"
    with open_store(path) as store:
        assert store.add_result(result, Entry("alice")) == (1, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lb.sqlite"]
    with open_store(path, read_only=True) as store:
        assert store.counts() == {"scored": 1, "failed": 0}
