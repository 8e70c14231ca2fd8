"""The store under stress: concurrent writers lose nothing; a writer killed mid-write leaves the
store readable and consistent."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from leaderboard_helpers import ROOT, score_result

from scorer.leaderboard.store import Entry, open_store

WRITER = """
import json, sys, time
from scorer.leaderboard.store import Entry, open_store
db, result_file, prefix = sys.argv[1:4]
count, start = int(sys.argv[4]), float(sys.argv[5])
result = json.load(open(result_file))
while time.time() < start:  # every writer starts at once
    time.sleep(0.005)
added = 0
with open_store(db) as store:
    i = 0
    while count < 0 or i < count:
        added += store.add_result(result, Entry(f"{prefix}-{i}", model="m"))[1]
        i += 1
    added_shared = store.add_result(result, Entry("shared"))[1]
print(json.dumps({"added": added, "shared": added_shared}))
"""


@pytest.fixture(scope="module")
def result_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("result")
    return Path(folder / "result.json").resolve(), score_result(folder, 0.9, seed=1)


def _writer(db: Path, result_file: Path, prefix: str, count: int, start: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(result_file), prefix, str(count), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _check_consistent(db: Path) -> list[str]:
    """Integrity and completeness of every row; returns the submitters in id order."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        submitters = [r[0] for r in conn.execute("SELECT submitter FROM submissions ORDER BY id")]
        n = len(submitters)
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == n
        assert conn.execute("SELECT count(*) FROM radiologists").fetchone()[0] == 24 * n
        incomplete = conn.execute(
            "SELECT count(*) FROM submissions s WHERE s.kappa IS NULL OR s.gold_raters IS NULL "
            "OR s.content_sha256 IS NULL OR s.submitted IS NULL OR s.status <> 'scored' "
            "OR NOT EXISTS (SELECT 1 FROM results r WHERE r.submission_id = s.id) "
            "OR (SELECT count(*) FROM radiologists b WHERE b.submission_id = s.id) <> 24"
        ).fetchone()[0]
        assert incomplete == 0
        return submitters
    finally:
        conn.close()


def test_eight_concurrent_writers_lose_nothing(tmp_path, result_file):
    path, result = result_file
    path.write_text(json.dumps(result))
    db = tmp_path / "lb.sqlite"
    start = time.time() + 1.5  # time for every interpreter to start
    writers = [_writer(db, path, f"w{k}", 50, start) for k in range(8)]
    outputs = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        outputs.append(json.loads(out))
    assert [o["added"] for o in outputs] == [50] * 8
    assert sum(o["shared"] for o in outputs) == 1  # the same result from eight writers: one row
    submitters = _check_consistent(db)
    assert sorted(submitters) == sorted([f"w{k}-{i}" for k in range(8) for i in range(50)] + ["shared"])
    assert len(set(submitters)) == len(submitters) == 401


def test_a_writer_killed_mid_write_leaves_a_consistent_store(tmp_path, result_file):
    path, result = result_file
    path.write_text(json.dumps(result))
    db = tmp_path / "lb.sqlite"
    for round_ in range(3):
        before = len(_check_consistent(db)) if db.exists() else 0
        writer = _writer(db, path, f"k{round_}", -1, 0)  # writes until killed
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.05)
            if db.exists() and _count(db) >= before + 20 + 7 * round_:
                break
        assert writer.poll() is None, writer.communicate()
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        submitters = _check_consistent(db)
        # Records commit one by one: what is there is a gap-free prefix of what the writer wrote.
        mine = [s for s in submitters if s.startswith(f"k{round_}-")]
        assert mine == [f"k{round_}-{i}" for i in range(len(mine))] and len(mine) >= 20
    with open_store(db) as store:  # and it takes new records
        assert store.add_result(result, Entry("after the kills"))[1]
        assert store.query("PRAGMA integrity_check") == [("ok",)]


def _count(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM submissions").fetchone()[0]
    except sqlite3.OperationalError:  # the writer is still creating the tables
        return 0
    finally:
        conn.close()
