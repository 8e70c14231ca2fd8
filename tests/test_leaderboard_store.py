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
from scorer.leaderboard import schema
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
