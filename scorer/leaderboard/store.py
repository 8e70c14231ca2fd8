"""The leaderboard's store: one SQLite file holding every scored and failed submission.

    with open_store("leaderboard.sqlite") as store:
        store.add_result(result, Entry("alice", model="densenet-x3", institution="Uni"))
        store.add_failure("predict.py exited with code 1", Entry("bob"))

Safety comes from SQLite itself: WAL journaling (readers never block the writer), a busy
timeout (concurrent writers queue instead of failing), one transaction per record (a process
killed mid-write leaves the last committed state) and synchronous=FULL (a committed record
survives a crash of the machine, too). A new store is built beside its path and linked into
place whole, so a file at that path is always a whole store: an empty one is a truncated copy,
never one being created. Reading (open_store(read_only=True), for render) refuses every write:
it never creates, migrates or changes a store, and reads one in a read-only folder too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scorer.errors import HostError
from scorer.leaderboard import records, schema
from scorer.leaderboard.records import Entry, Record  # Entry: imported from here too (README)
from scorer.paths import GROUPS

# `--db`'s default: $MURA_LEADERBOARD, else leaderboard.sqlite in the current folder.
ENV_VAR = "MURA_LEADERBOARD"
DEFAULT_DB = Path(os.environ.get(ENV_VAR) or "leaderboard.sqlite")

BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another one before giving up
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database

# What recording did (Recorded.status).
ADDED, UPDATED, UNCHANGED = "added", "updated", "unchanged"


@dataclass(frozen=True)
class Recorded:
    """What recording a submission did: ADDED a row; UPDATED the details (model, institution,
    link) of the row that already held the same submission; or nothing (UNCHANGED)."""

    id: int
    status: str
    submitted: str  # the row's submission date (recording again never changes it)
    changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # detail: (was, now)


class Store:
    """An open store; use it as a context manager, or call close()."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, unchanged: tuple | None = None) -> None:
        self._conn = conn
        self.path = path
        # Read without SQLite's locks (a read-only folder): the file's state when opened, which
        # must still hold when a snapshot ends.
        self._unchanged = unchanged

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # --- writing ------------------------------------------------------------------------------

    def add_result(self, result: dict, entry: Entry, *, source: str = "result") -> tuple[int, bool]:
        """Record a `mura score --json` result; returns (id, added). The same result and entry a
        second time returns the first one's id and added=False; with a different model,
        institution or link, those are corrected on that row (see record). `source` names the
        result in error messages (e.g. its file)."""
        return self.add(records.from_result(result, entry, source=source))

    def add_failure(self, reason: str, entry: Entry) -> tuple[int, bool]:
        """Record a submission that failed, with the reason; returns (id, added)."""
        return self.add(records.from_failure(reason, entry))

    def add(self, record: Record) -> tuple[int, bool]:
        done = self.record(record)
        return done.id, done.status == ADDED

    def record(self, record: Record) -> Recorded:
        """Record one submission. The same submission again (records.identity: the same
        submitter, content and outcome) adds no row; the details its entry gives (model,
        institution, link; an empty one clears) replace the stored ones, the others are kept.
        Its submission date is kept: it is when the submission came in, and breaks ties."""
        with self._write():
            return self._insert(record)

    def add_many(self, batch: Iterable[Record]) -> list[tuple[int, bool]]:
        """Record many in one transaction: all of them, or (on an error) none."""
        with self._write():
            return [(done.id, done.status == ADDED) for done in map(self._insert, batch)]

    def _insert(self, r: Record) -> Recorded:
        row = self._conn.execute(
            f"SELECT id, submitted, {', '.join(records.DETAILS)} FROM submissions WHERE identity = ?",
            (r.identity,),
        ).fetchone()
        if row is not None:
            sid, submitted, *was = row
            now = tuple(getattr(r, name) for name in records.DETAILS)
            changes = {
                name: (old, new)
                for name, old, new in zip(records.DETAILS, was, now)
                if name in r.given and old != new
            }
            if changes:
                assignments = ", ".join(f"{name} = ?" for name in changes)
                values = [new for _, new in changes.values()]
                self._conn.execute(f"UPDATE submissions SET {assignments} WHERE id = ?", (*values, sid))
            return Recorded(sid, UPDATED if changes else UNCHANGED, submitted, changes)
        columns = ", ".join(schema.SCORE_COLUMNS)
        marks = ", ".join("?" * len(schema.SCORE_COLUMNS))
        raters = None if r.gold_raters is None else json.dumps(list(r.gold_raters))
        cursor = self._conn.execute(
            "INSERT INTO submissions (identity, submitter, model, institution, note, link, submitted, "
            f"scored, status, reason, {columns}, gold_raters, gold_sha256, content_sha256, source) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {marks}, ?, ?, ?, ?)",
            (
                r.identity,
                r.submitter,
                r.model,
                r.institution,
                r.note,
                r.link,
                r.submitted,
                r.scored,
                r.status,
                r.reason,
                *r.scores,
                raters,
                r.gold_sha256,
                r.content_sha256,
                r.source,
            ),
        )
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
        return Recorded(sid, ADDED, r.submitted)

    @contextmanager
    def _write(self) -> Iterator[None]:
        try:
            with _immediate(self._conn, self.path):
                yield
        except sqlite3.IntegrityError:
            raise  # a row the checks let through: a bug
        except sqlite3.DatabaseError as exc:  # a full disk, an I/O error, a damaged file
            raise _sqlite_error(self.path, exc, writing=True) from None

    # --- reading ------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A read transaction: every query inside sees the same state, whatever writers do."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")
            # Raised in place of whatever a read of a changing file may have raised.
            if self._unchanged is not None and _file_state(self.path) != self._unchanged:
                raise HostError(
                    f"leaderboard store {self.path} changed while it was read (it is in a read-only "
                    "folder here, so its writers elsewhere cannot be followed); read it again"
                )

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _sqlite_error(self.path, exc, writing=False) from None

    def counts(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) FROM submissions GROUP BY status")
        return {records.SCORED: 0, records.FAILED: 0, **dict(rows)}

    def scored(self) -> list[tuple]:
        """Every scored submission: (id, submitter, model, institution, link, submitted,
        *schema.SCORE_COLUMNS, content_sha256, note, source), in id order (BOARD_COLUMNS). Each
        row is checked readable (a store edited by hand, or written by an older kit, may hold
        anything): a HostError names the submission and the column otherwise."""
        rows = self.query(f"SELECT {BOARD_COLUMNS} FROM submissions WHERE status = 'scored' ORDER BY id")
        for row in rows:
            problem = _unreadable_row(row)
            if problem is not None:
                raise self._unreadable("submissions", row[0], f"submission {row[0]}'s", *problem)
        return rows

    def best_radiologists(self) -> tuple[str, dict[str, tuple]] | None:
        """The baselines that hold the best radiologist: the radiologist with the highest overall
        kappa among every scored submission's radiologists (a tie: the earliest recorded), and
        all radiologists that submission was scored against, {name: scores in
        schema.SCORE_COLUMNS order}. None when no submission has a radiologist with a kappa."""
        best = self.query(
            "SELECT submission_id, name FROM radiologists WHERE grp = ? AND kappa IS NOT NULL "
            "ORDER BY kappa DESC, submission_id, name LIMIT 1",
            (GROUPS[0],),
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
            for column, value in zip(("kappa", "kappa_lower", "kappa_upper"), values):
                if not _kappas((value,)):
                    where = f"submission {sid}'s radiologist {rater!r}: {group}"
                    raise self._unreadable("radiologists", sid, where, column, value, _KAPPA)
            found.setdefault(rater, {})[group] = tuple(values)
        missing = (None, None, None)
        return name, {
            rater: tuple(v for g in GROUPS for v in groups.get(g, missing)) for rater, groups in found.items()
        }

    def _unreadable(
        self, table: str, sid: int, where: str, column: str, value: object, expected: str
    ) -> HostError:
        key = "submission_id" if table == "radiologists" else "id"
        return HostError(
            f"leaderboard store {self.path}: {where} {column} is unreadable: expected {expected}, found "
            f"{value!r:.80}; the store was edited by hand or written by an older kit: correct that row "
            f"(table {table}, {key} {sid}) with an SQLite tool, or delete the submission"
        )

    def result(self, sid: int) -> dict | None:
        """The whole recorded result of a scored submission."""
        rows = self.query("SELECT json FROM results WHERE submission_id = ?", (sid,))
        return json.loads(rows[0][0]) if rows else None


_KAPPA = "a number from -1 to 1, or NULL"
# What the board reads of each scored submission (Store.scored; rank.Scored.from_row).
BOARD_COLUMNS = ", ".join(
    (
        "id",
        "submitter",
        "model",
        "institution",
        "link",
        "submitted",
        *schema.SCORE_COLUMNS,
        "content_sha256",
        "note",
        "source",
    )
)


def _kappas(values: tuple) -> bool:
    """Whether each value is a kappa (a number from -1 to 1) or NULL. One comparison chain per
    value and one try for all: the board checks 24 in each of its rows."""
    try:
        return all(-1.0 <= v <= 1.0 for v in values if v is not None)
    except TypeError:  # text or a blob
        return False


def _unreadable_row(row: tuple) -> tuple[str, object, str] | None:
    """(column, value, what was expected) for the first column of a Store.scored row that the
    board cannot show, or None when it can show all of them."""
    _, submitter, model, institution, link, submitted = row[:6]
    scores, note, source = row[6:-3], row[-2], row[-1]
    if records.stored_time(submitted) is None:
        return "submission date", submitted, "a UTC time such as 2018-11-30T19:48:12Z"
    if not ((isinstance(submitter, str) and submitter) or (submitter is None and source == schema.CODALAB)):
        return "submitter", submitter, "a name (NULL only for an entry imported from CodaLab)"
    if source not in (schema.KIT, schema.CODALAB):
        return "source", source, f"{schema.KIT!r} or {schema.CODALAB!r}"
    for column, value in (("model", model), ("institution", institution), ("note", note)):
        if not (value is None or isinstance(value, str)):
            return column, value, "text or NULL"
    if not (link is None or (isinstance(link, str) and records.LINK.fullmatch(link))):
        return "link", link, "an http:// or https:// address, or NULL"
    if not _kappas(scores):
        column, value = next((c, v) for c, v in zip(schema.SCORE_COLUMNS, scores) if not _kappas((v,)))
        return column, value, _KAPPA
    return None


# --- opening ----------------------------------------------------------------------------------


def open_store(path: str | Path, *, create: bool = True, read_only: bool = False) -> Store:
    """Open the store at `path` to record in it: a missing store is created (unless
    create=False), an older schema migrated. `read_only` (to render it): nothing is created,
    migrated or written, an older schema is brought up to date in memory, and a store in a
    read-only folder can be read too. A file that is not a store (an empty file among them), or
    a store of a newer schema, is a HostError and is left untouched."""
    path = Path(path)
    if path.is_dir():
        raise HostError(f"leaderboard store {path} is a folder; expected a file (--db PATH)")
    if not path.exists():
        _check_place(path)
        if read_only or not create:
            raise HostError(
                f"leaderboard store {path} does not exist; record a result first "
                "(`mura leaderboard add RESULT.json --db PATH`), or give --db"
            )
        if not path.parent.is_dir():
            raise HostError(f"cannot create leaderboard store {path}: folder {path.parent} does not exist")
        _create(path)
    _check_header(path)
    return _open_read(path) if read_only else _open_write(path)


def check_new_store(path: Path) -> None:
    """That a store can be created at `path` (which does not exist yet), without creating it: a
    run checked before it starts leaves nothing behind if it is then refused."""
    _check_place(path)
    if not path.parent.is_dir():
        raise HostError(f"cannot create leaderboard store {path}: folder {path.parent} does not exist")
    why = _not_writable(path, creating=True)
    if why is not None:
        raise HostError(f"cannot create leaderboard store {path}: {why}; give --db a path you may write")


def _check_place(path: Path) -> None:
    above = _file_above(path)
    if above is not None:
        raise HostError(
            f"leaderboard store {path} cannot be there: {above} is a file, not a folder; "
            "give --db a path inside a folder"
        )


def _file_above(path: Path) -> Path | None:
    """The file in the way when `path` lies under a file (gold.csv/x.sqlite), else None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _check_header(path: Path) -> None:
    """Tell a file that cannot be a store from one that may be, before SQLite touches it."""
    if not path.is_file():
        raise HostError(
            f"leaderboard store {path} is not a regular file (a pipe or a device); expected a file"
        )
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise HostError(
            f"cannot read leaderboard store {path} ({exc.strerror}); check its permissions"
        ) from None
    if not header:
        raise HostError(
            f"leaderboard store {path} is an empty file (0 bytes). A store is never empty, so this is "
            "probably a truncated copy of one: restore it from a backup; if it holds nothing you need, "
            "delete it and record again to start a new store"
        )
    if header != SQLITE_HEADER:
        raise HostError(
            f"{path} is not a leaderboard store: it is not an SQLite database (no SQLite header); "
            "give --db the path of a store, or a new file"
        )


def _uri(path: Path, mode: str, *, immutable: bool = False) -> str:
    return f"{path.absolute().as_uri()}?mode={mode}" + ("&immutable=1" if immutable else "")


def _connect(uri: str) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _create(path: Path) -> None:
    """Build an empty store beside `path` and link it into place whole, so that no process ever
    finds a half-made store there. If another process links its store first, that one is used."""
    new = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    try:
        conn = _connect(_uri(new, "rwc"))
        try:
            conn.execute("BEGIN")  # the file is this process's alone: no lock to wait for
            schema.create(conn)
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")  # persistent in the file
        finally:
            conn.close()
        with new.open("rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(new, path)
        except FileExistsError:
            pass  # another process created the store first: use that one
        except OSError:  # a filesystem without hard links: copy into a file only this process made
            _copy_exclusive(new, path)
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc, writing=True, creating=True) from None
    except OSError as exc:
        raise HostError(f"cannot create leaderboard store {path} ({exc.strerror})") from None
    finally:
        for leftover in (new, new.with_name(new.name + "-wal"), new.with_name(new.name + "-shm")):
            if leftover.exists():  # (unlink(missing_ok=True) fails in a read-only folder)
                leftover.unlink()


def _copy_exclusive(source: Path, target: Path) -> None:
    # Not atomic: a process opening the store while it is copied is told it is damaged.
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # as SQLite creates one
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
        shutil.copyfileobj(handle, out)
        out.flush()
        os.fsync(out.fileno())


def _open_write(path: Path) -> Store:
    conn = _connect(_uri(path, "rw"))
    try:
        version = _read_version(conn, path)  # before anything writes to it
        if version < schema.VERSION:
            with _immediate(conn, path):
                version = _identify(conn, path)  # again, holding the lock: another may have migrated
                if version < schema.VERSION:
                    schema.migrate(conn, version)
        conn.execute("PRAGMA journal_mode = WAL")  # a no-op once set (a version 1 store may lack it)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _sqlite_error(path, exc, writing=True) from None
    except BaseException:
        conn.close()
        raise
    return Store(conn, path)


def _open_read(path: Path) -> Store:
    """Open for reading only, in the first way that works here:
    1. read-write but refusing every write (query_only), without creating: SQLite's locks, and
       the last connection to close tidies the -wal and -shm files away, as SQLite's do;
    2. read-only: a read-only folder or file (a writer elsewhere holds the store open, so its
       -wal and -shm files are there);
    3. immutable: a read-only folder and no -wal file (SQLite cannot make the -shm file it
       needs). Every committed record is in the file itself then; as SQLite no longer sees
       writers, the file is checked unchanged after each snapshot instead."""
    unchanged = None
    try:
        conn, version = _read_connection(path, "rw")
    except sqlite3.OperationalError:
        try:
            conn, version = _read_connection(path, "ro")
        except sqlite3.OperationalError as exc:
            wal = path.with_name(path.name + "-wal")
            if os.access(path.parent, os.W_OK) or wal.exists():
                raise _sqlite_error(path, exc, writing=False) from None
            unchanged = _file_state(path)
            try:
                conn, version = _read_connection(path, "ro", immutable=True)
            except sqlite3.OperationalError as again:
                raise _sqlite_error(path, again, writing=False) from None
    if version < schema.VERSION:  # bring a copy up to date in memory; the file stays as it is
        memory = sqlite3.connect(":memory:", isolation_level=None)
        try:
            conn.backup(memory)
        finally:
            conn.close()
        with _immediate(memory, path):
            schema.migrate(memory, version)
        memory.execute("PRAGMA query_only = ON")
        conn = memory
    return Store(conn, path, unchanged=unchanged)


def _read_connection(path: Path, mode: str, *, immutable: bool = False) -> tuple[sqlite3.Connection, int]:
    """A connection that refuses writes, and the store's schema version. SQLite's "cannot open"
    and "read-only" errors are raised as they are (the caller tries the next way); others are
    HostErrors."""
    conn = _connect(_uri(path, mode, immutable=immutable))
    try:
        conn.execute("PRAGMA query_only = ON")
        return conn, _read_version(conn, path)
    except sqlite3.OperationalError as exc:
        conn.close()
        if exc.sqlite_errorname.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
            raise
        raise _sqlite_error(path, exc, writing=False) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _sqlite_error(path, exc, writing=False) from None
    except BaseException:
        conn.close()
        raise


def _file_state(path: Path) -> tuple | None:
    try:
        info = path.stat()
    except OSError:  # gone
        return None
    return info.st_size, info.st_mtime_ns, path.with_name(path.name + "-wal").exists()


def _read_version(conn: sqlite3.Connection, path: Path) -> int:
    """The store's schema version, read in one transaction (one snapshot: another process may
    be migrating it right now)."""
    conn.execute("BEGIN")
    try:
        return _identify(conn, path)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _identify(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the store at `path`; a HostError when it is not a store."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
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


def _not_writable(path: Path, *, creating: bool = False) -> str | None:
    """Why the store at `path` cannot be written, when its folder or the file is read-only."""
    if not os.access(path.parent, os.W_OK | os.X_OK):
        made = "the store and its journal" if creating else f"{path.name}-wal and {path.name}-shm"
        return (
            f"its folder {path.parent} is read-only or not writable by you, and SQLite must create "
            f"{made} there"
        )
    if not creating and not os.access(path, os.W_OK):
        return "the file is read-only or not writable by you"
    return None


def _sqlite_error(path: Path, exc: sqlite3.Error, *, writing: bool, creating: bool = False) -> HostError:
    """SQLite's error about the store at `path`, as an organiser's error that says what to do."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) and writing:
        why = _not_writable(path, creating=creating)
        if why is not None and creating:
            return HostError(f"cannot create leaderboard store {path}: {why}; give --db a path you may write")
        if why is not None:
            return HostError(
                f"cannot write to leaderboard store {path}: {why}; record where you may write (make it "
                "writable, or copy the store to a writable folder and give --db); `mura leaderboard "
                "render` can still read it"
            )
    if name.startswith("SQLITE_CANTOPEN"):
        return HostError(
            f"cannot open leaderboard store {path} (SQLite: {exc}); check that you may read the file and "
            f"its folder{' and write them' if writing else ''}"
        )
    if name == "SQLITE_NOTADB":
        return HostError(
            f"{path} is not a leaderboard store: it is not an SQLite database ({exc}); "
            "give --db the path of a store, or a new file"
        )
    if name.startswith("SQLITE_CORRUPT"):
        return HostError(
            f"leaderboard store {path} is damaged (SQLite: {exc}), perhaps truncated; restore it from "
            "a backup"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return HostError(
            f"leaderboard store {path} is busy: another process held it for more than "
            f"{BUSY_TIMEOUT_S:g} s ({exc}); try again when it is done"
        )
    if name.startswith("SQLITE_READONLY"):
        return HostError(f"leaderboard store {path} is not writable (SQLite: {exc})")
    return HostError(f"cannot {'write to' if writing else 'read'} leaderboard store {path} (SQLite: {exc})")


@contextmanager
def _immediate(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """A write transaction. BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
    timeout), so what is read inside (a duplicate check, the schema version) stays true."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise _sqlite_error(path, exc, writing=True) from None
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
