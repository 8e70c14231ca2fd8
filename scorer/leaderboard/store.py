"""The leaderboard's store: one SQLite file holding every scored and failed submission.

    with open_store("leaderboard.sqlite") as store:
        store.add_result(result, Entry("alice", model="densenet-x3", institution="Uni"))
        store.add_failure("predict.py exited with code 1", Entry("bob"))

Safety comes from SQLite itself: WAL journaling (readers never block the writer), a busy
timeout (concurrent writers queue instead of failing), one transaction per record (a process
killed mid-write leaves the last committed state) and synchronous=FULL (a committed record
survives a crash of the machine, too).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import HostError
from scorer.leaderboard import records, schema
from scorer.leaderboard.records import Record

# `--db`'s default: $MURA_LEADERBOARD, else leaderboard.sqlite in the current folder.
ENV_VAR = "MURA_LEADERBOARD"
DEFAULT_DB = Path(os.environ.get(ENV_VAR) or "leaderboard.sqlite")

BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another one before giving up


@dataclass(frozen=True)
class Entry:
    """Who submitted, what and when; everything but the submitter is optional."""

    submitter: str
    model: str | None = None
    institution: str | None = None
    link: str | None = None
    submitted: str | None = None  # ISO 8601 date or datetime of the submission; None: now (UTC)
    content_sha256: str | None = None  # hash of the submitted bundle / predictions; None: taken
    # from result["inputs"]["predictions"]["sha256"] when present


class Store:
    """An open store; use it as a context manager, or call close()."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # --- writing ------------------------------------------------------------------------------

    def add_result(self, result: dict, entry: Entry, *, source: str = "result") -> tuple[int, bool]:
        """Record a `mura score --json` result; returns (id, added). The same result and entry a
        second time returns the first one's id and added=False. `source` names the result in
        error messages (e.g. its file)."""
        return self.add(records.from_result(result, entry, source=source))

    def add_failure(self, reason: str, entry: Entry) -> tuple[int, bool]:
        """Record a submission that failed, with the reason; returns (id, added)."""
        return self.add(records.from_failure(reason, entry))

    def add(self, record: Record) -> tuple[int, bool]:
        with self._write():
            return self._insert(record)

    def add_many(self, batch: Iterable[Record]) -> list[tuple[int, bool]]:
        """Record many in one transaction: all of them, or (on an error) none."""
        with self._write():
            return [self._insert(record) for record in batch]

    def _insert(self, r: Record) -> tuple[int, bool]:
        row = self._conn.execute("SELECT id FROM submissions WHERE identity = ?", (r.identity,)).fetchone()
        if row is not None:
            return row[0], False
        columns = ", ".join(schema.SCORE_COLUMNS)
        marks = ", ".join("?" * len(schema.SCORE_COLUMNS))
        raters = None if r.gold_raters is None else json.dumps(list(r.gold_raters))
        cursor = self._conn.execute(
            "INSERT INTO submissions (identity, submitter, model, institution, link, submitted, scored, "
            f"status, reason, {columns}, gold_raters, gold_sha256, content_sha256) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {marks}, ?, ?, ?)",
            (r.identity, r.submitter, r.model, r.institution, r.link, r.submitted, r.scored,
             r.status, r.reason, *r.scores, raters, r.gold_sha256, r.content_sha256),
        )  # fmt: skip
        sid = cursor.lastrowid
        assert sid is not None
        self._conn.executemany(
            "INSERT INTO radiologists (submission_id, name, grp, kappa, kappa_lower, kappa_upper) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(sid, *baseline) for baseline in r.radiologists],
        )
        if r.result_json is not None:
            self._conn.execute(
                "INSERT INTO results (submission_id, json) VALUES (?, ?)", (sid, r.result_json)
            )
        return sid, True

    def _write(self) -> AbstractContextManager[None]:
        return _immediate(self._conn, self.path)

    # --- reading ------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A read transaction: every query inside sees the same state, whatever writers do."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._conn.execute(sql, params).fetchall()

    def counts(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) FROM submissions GROUP BY status")
        return {records.SCORED: 0, records.FAILED: 0, **dict(rows)}

    def scored(self) -> list[tuple]:
        """Every scored submission: (id, submitter, model, institution, link, submitted,
        *schema.SCORE_COLUMNS, content_sha256), in id order."""
        columns = ", ".join(schema.SCORE_COLUMNS)
        return self.query(
            f"SELECT id, submitter, model, institution, link, submitted, {columns}, content_sha256 "
            "FROM submissions WHERE status = 'scored' ORDER BY id"
        )

    def best_radiologists(self) -> tuple[str, dict[str, tuple]] | None:
        """The baselines that hold the best radiologist: the radiologist with the highest overall
        kappa among every scored submission's radiologists (a tie: the earliest recorded), and
        all radiologists that submission was scored against, {name: scores in
        schema.SCORE_COLUMNS order}. None when no submission has a radiologist with a kappa."""
        best = self.query(
            "SELECT submission_id, name FROM radiologists WHERE grp = ? AND kappa IS NOT NULL "
            "ORDER BY kappa DESC, submission_id, name LIMIT 1",
            (schema.GROUPS[0],),
        )
        if not best:
            return None
        sid, name = best[0]
        rows = self.query(
            "SELECT name, grp, kappa, kappa_lower, kappa_upper FROM radiologists WHERE submission_id = ?",
            (sid,),
        )
        found: dict[str, dict[str, tuple]] = {}
        for rater, group, *values in rows:
            found.setdefault(rater, {})[group] = tuple(values)
        missing = (None, None, None)
        return name, {
            rater: tuple(v for g in schema.GROUPS for v in groups.get(g, missing))
            for rater, groups in found.items()
        }

    def result(self, sid: int) -> dict | None:
        """The whole recorded result of a scored submission."""
        rows = self.query("SELECT json FROM results WHERE submission_id = ?", (sid,))
        return json.loads(rows[0][0]) if rows else None


# --- opening ----------------------------------------------------------------------------------


def open_store(path: str | Path, *, create: bool = True) -> Store:
    """Open the store at `path`, creating it when absent (unless create=False) and migrating an
    older schema. A file that is not a store, or a store of a newer schema, is a HostError and
    is left untouched."""
    path = Path(path)
    if path.is_dir():
        raise HostError(f"leaderboard store {path} is a folder; expected a file (--db PATH)")
    if not path.exists():
        if not create:
            raise HostError(
                f"leaderboard store {path} does not exist; record a result first "
                "(`mura leaderboard add RESULT.json --db PATH`), or give --db"
            )
        if not path.parent.is_dir():
            raise HostError(f"cannot create leaderboard store {path}: folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise HostError(f"cannot open leaderboard store {path} ({exc})") from None
    try:
        _prepare(conn, path)
    except BaseException:
        conn.close()
        raise
    return Store(conn, path)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    # Identify the file before anything writes to it, in one read transaction (one snapshot:
    # another process may be creating the store right now).
    conn.execute("BEGIN")
    try:
        version = _identify(conn, path)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
    if version is None or version < schema.VERSION:
        with _immediate(conn, path):
            version = _identify(conn, path)  # again, holding the lock: another process may have won
            if version is None:
                schema.create(conn)
            elif version < schema.VERSION:
                schema.migrate(conn, version)
    conn.execute("PRAGMA journal_mode = WAL")  # persistent in the file; a no-op once set
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _identify(conn: sqlite3.Connection, path: Path) -> int | None:
    """The schema version of the store at `path`, or None for an empty file (a new store)."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as exc:
        raise HostError(f"{path} is not a leaderboard store: it is not an SQLite database ({exc}); "
                        "give --db the path of a store, or a new file") from None  # fmt: skip
    if app_id == 0 and not tables:
        return None
    if app_id != schema.APPLICATION_ID:
        raise HostError(
            f"{path} is an SQLite database but not a leaderboard store (application_id {app_id:#x}, "
            f"tables: {', '.join(sorted(tables)) or 'none'}); give --db the path of a store, or a new file"
        )
    if version > schema.VERSION:
        raise HostError(
            f"leaderboard store {path} has schema version {version}, newer than this kit reads "
            f"(up to {schema.VERSION}); upgrade mura-kit to use it"
        )
    marker = (
        conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
    )
    if marker is None or marker[0] != schema.FORMAT:
        raise HostError(f"leaderboard store {path} is damaged: its meta table does not name it a store")
    return version


@contextmanager
def _immediate(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """A write transaction. BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
    timeout), so what is read inside (a duplicate check, the schema version) stays true."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise HostError(f"leaderboard store {path} is busy or not writable ({exc})") from None
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
