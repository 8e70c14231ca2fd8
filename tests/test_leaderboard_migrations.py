"""Schema migrations: a version 1 store (from a stored SQL fixture) opens as the current version
with its data, and a migration that cannot finish leaves the old store as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from leaderboard_helpers import mura, score_result

from scorer.errors import HostError
from scorer.leaderboard import schema
from scorer.leaderboard.store import Entry, open_store

V1 = Path(__file__).parent / "data" / "leaderboard_v1.sql"


def v1_store(path: Path, edit: str = "") -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(V1.read_text() + edit)
    conn.close()
    return path


def test_the_fixture_is_a_version_1_store(tmp_path):
    conn = sqlite3.connect(v1_store(tmp_path / "v1.sqlite"))
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert "per_type" in [r[1] for r in conn.execute("PRAGMA table_info(submissions)")]
    conn.close()
    assert schema.VERSION == 2 and 1 in schema.MIGRATIONS


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
