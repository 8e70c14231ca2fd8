"""Schema migrations: a version 1 or 2 store (from stored SQL fixtures) opens as the current
version with its data, and a migration that cannot finish leaves the old store as it was."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from leaderboard_helpers import mura, score_result

from scorer.errors import HostError
from scorer.leaderboard import schema
from scorer.leaderboard.store import Entry, open_store

V1 = Path(__file__).parent / "data" / "leaderboard_v1.sql"
V2 = Path(__file__).parent / "data" / "leaderboard_v2.sql"


def v1_store(path: Path, edit: str = "", fixture: Path = V1) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(fixture.read_text() + edit)
    conn.close()
    return path


def test_the_fixture_is_a_version_1_store(tmp_path):
    conn = sqlite3.connect(v1_store(tmp_path / "v1.sqlite"))
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert "per_type" in [r[1] for r in conn.execute("PRAGMA table_info(submissions)")]
    conn.close()
    assert schema.VERSION == 3 and set(schema.MIGRATIONS) == {1, 2}


def test_a_version_1_store_migrates_and_keeps_its_data(tmp_path):
    path = v1_store(tmp_path / "v1.sqlite")
    conn = sqlite3.connect(path)
    old = conn.execute("SELECT * FROM submissions ORDER BY id").fetchall()
    columns = [r[1] for r in conn.execute("PRAGMA table_info(submissions)")]
    conn.close()
    old = [dict(zip(columns, row)) for row in old]

    with open_store(path) as store:
        assert store.query("PRAGMA user_version") == [(schema.VERSION,)]
        assert store.query("PRAGMA integrity_check") == [("ok",)]
        assert "per_type" not in [r[1] for r in store.query("PRAGMA table_info(submissions)")]
        kept = tuple(
            [
                "id",
                "identity",
                "submitter",
                "model",
                "institution",
                "link",
                "submitted",
                "scored",
                "status",
                "reason",
                "gold_raters",
                "content_sha256",
            ]
        )
        select = f"SELECT {', '.join(kept + schema.SCORE_COLUMNS)} FROM submissions WHERE id = ?"
        for before in old:
            [row] = store.query(select, (before["id"],))
            assert row[: len(kept)] == tuple(before[k] for k in kept)
            scores = dict(zip(schema.SCORE_COLUMNS, row[len(kept) :]))
            assert (scores["kappa"], scores["kappa_lower"], scores["kappa_upper"]) == (
                before["kappa"],
                before["kappa_lower"],
                before["kappa_upper"],
            )
            per_type = json.loads(before["per_type"] or "{}")
            for group in schema.GROUPS[1:]:
                expected = tuple(per_type.get(group, (None, None, None)))
                assert tuple(scores[c] for c in schema.score_columns(group)) == expected
            baselines = json.loads(before["baselines"] or "{}")
            stored = store.query(
                "SELECT name, grp, kappa, kappa_lower, kappa_upper FROM radiologists WHERE submission_id = ?",
                (before["id"],),
            )
            assert sorted(stored) == sorted(
                (n, g, *v) for n, groups in baselines.items() for g, v in groups.items()
            )
            result = store.result(before["id"])
            assert result == (json.loads(before["result"]) if before["result"] else None)
        # The gold file's hash, new in version 2, is taken from the stored result.
        assert store.query("SELECT gold_sha256 FROM submissions WHERE id = 1") == [
            (json.loads(old[0]["result"])["inputs"]["gold"]["sha256"],)
        ]
        assert store.counts() == {"scored": 2, "failed": 1}
        # Version 1 rows are the kit's: each scored one names its gold raters.
        assert store.query("SELECT source FROM submissions") == [("kit",)] * 3


def test_a_migrated_store_ranks_renders_and_takes_new_records(tmp_path):
    path = v1_store(tmp_path / "v1.sqlite")
    proc = mura("leaderboard", "render", "--db", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2:] == [
        "|  |  | Best Radiologist Performance (Rad2) | 0.778 |",
        "| 1 | Nov 30, 2018 | base-comb2-xuan-v3(ensemble) (jzhang Availink) | 0.843 |",
        "| 2 | Nov 06, 2018 | maxentropy <https://example.org/m> | 0.834 |",
    ]
    with open_store(path) as store:
        assert store.add_result(score_result(tmp_path, 0.9, 1), Entry("new"))[1]
        assert store.counts()["scored"] == 3


def test_a_migration_that_cannot_finish_leaves_the_store_as_it_was(tmp_path):
    path = v1_store(tmp_path / "v1.sqlite", "UPDATE submissions SET baselines = '{not json' WHERE id = 2;")
    before = path.read_bytes()
    with pytest.raises(HostError, match="cannot migrate: submission 2's baselines is not valid JSON"):
        open_store(path)
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()
    broken_shape = v1_store(
        tmp_path / "shape.sqlite", "UPDATE submissions SET per_type = '{\"Elbow\": 3}' WHERE id = 1;"
    )
    with pytest.raises(HostError, match="cannot migrate: submission 1 of the version 1 store is malformed"):
        open_store(broken_shape)


def _rows(path: Path, table: str) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
    conn.close()
    return rows


def test_a_version_2_store_migrates_keeps_its_data_and_learns_where_each_score_came_from(tmp_path):
    path = v1_store(tmp_path / "v2.sqlite", fixture=V2)
    before = {table: _rows(path, table) for table in ("submissions", "radiologists", "results")}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (2,)
    with open_store(path) as store:
        assert store.query("PRAGMA user_version") == [(3,)]
        assert store.query("PRAGMA integrity_check") == [("ok",)]
        assert store.query("PRAGMA foreign_key_check") == []
        indexes = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"submissions_board", "radiologists_best"} <= indexes
    after = {table: _rows(path, table) for table in ("submissions", "radiologists", "results")}
    # Every row and value kept (dropping the old table must not cascade to the baselines or results).
    assert after["radiologists"] == before["radiologists"] and len(before["radiologists"]) == 3
    assert after["results"] == before["results"] and len(before["results"]) == 1
    assert [
        {k: v for k, v in row.items() if k not in ("note", "source")} for row in after["submissions"]
    ] == (before["submissions"])
    # A `mura score` result names its gold raters (the one migrated from version 1 without its result
    # too); an imported CodaLab entry never does; a failure is the kit's.
    assert [(row["submitter"], row["note"], row["source"]) for row in after["submissions"]] == [
        ("turbobits", None, "kit"),
        ("maxentropy", None, "kit"),
        ("bob", None, "kit"),
        ("gonglinyuan", None, "codalab"),
        ("pwnme", None, "codalab"),
    ]


def test_a_migrated_version_2_store_marks_imported_intervals_and_takes_anonymous_entries(tmp_path):
    path = v1_store(tmp_path / "v2.sqlite", fixture=V2)
    # Read-only first: brought up to date in memory, the file left at version 2.
    proc = mura("leaderboard", "render", "--db", path, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (2,)
    rows = {r["submitter"]: r for r in csv.DictReader(io.StringIO(proc.stdout)) if r["kind"] == "submission"}
    assert {user: r["interval_source"] for user, r in rows.items()} == {
        "turbobits": "kit",
        "maxentropy": "kit",
        "gonglinyuan": "codalab",
    }
    dump = tmp_path / "dump.json"
    dump.write_text(
        json.dumps(
            {
                "leaderboard": [
                    {
                        "submission": {"user_name": None, "description": "", "created": 1536786503},
                        "scores": {"overall_mean": 0.7626373626373627},
                    }
                ]
            }
        )
    )
    proc = mura("leaderboard", "import-codalab", dump, "--db", path)
    assert proc.returncode == 0, proc.stderr
    with open_store(path) as store:
        assert store.query("SELECT submitter, source FROM submissions WHERE id = 6") == [(None, "codalab")]
    conn = sqlite3.connect(path)
    with pytest.raises(
        sqlite3.IntegrityError, match="CHECK constraint failed"
    ):  # only an import is anonymous
        conn.execute(
            "INSERT INTO submissions (identity, submitted, scored, status, source) "
            "VALUES ('x', '2018-01-01T00:00:00Z', '2018-01-01T00:00:00Z', 'scored', 'kit')"
        )
    conn.close()


def test_the_rebuild_refuses_to_run_with_foreign_keys_on(tmp_path):
    # Dropping the version 2 table with foreign keys on would delete every baseline and result.
    conn = sqlite3.connect(v1_store(tmp_path / "v2.sqlite", fixture=V2), isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    with pytest.raises(RuntimeError, match="foreign keys off"):
        schema.migrate(conn, 2)
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM radiologists").fetchone() == (3,)
    conn.close()
