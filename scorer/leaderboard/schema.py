"""The store's tables, its version, and the migrations that bring an older store up to date.

A store is told apart from other SQLite files by its application_id (the header field SQLite
keeps for this) and a `meta` row; its schema version is `PRAGMA user_version`. A migration runs
inside the caller's write transaction, so a failed or interrupted one leaves the old store as
it was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from scorer.errors import HostError
from scorer.paths import GROUPS, OVERALL

APPLICATION_ID = 0x4D555241  # "MURA"
FORMAT = "mura-kit leaderboard"
VERSION = 3

# Where a row's scores (and so its intervals) come from: `mura score` (the kit's bootstrap
# interval), or a CodaLab dump (the official script's interval: its standard error without the
# square root, about 30 times too narrow; SPEC §4 (b)).
KIT, CODALAB = "kit", "codalab"


def score_columns(group: str) -> tuple[str, str, str]:
    """The kappa and interval columns of one group: Overall's are plain `kappa, kappa_lower,
    kappa_upper`; a study type's carry its name (`elbow_kappa, elbow_lower, elbow_upper`)."""
    if group == OVERALL:
        return "kappa", "kappa_lower", "kappa_upper"
    prefix = group.lower()
    return f"{prefix}_kappa", f"{prefix}_lower", f"{prefix}_upper"


SCORE_COLUMNS: tuple[str, ...] = tuple(c for g in GROUPS for c in score_columns(g))

_SCORES_DDL = ",\n    ".join(f"{c} REAL" for c in SCORE_COLUMNS)

# The current schema (version 3).
SUBMISSIONS = f"""
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,          -- what makes two records the same (records.identity)
    submitter TEXT CHECK (submitter <> ''), -- NULL: anonymous (a CodaLab entry without a user name)
    model TEXT,
    institution TEXT,
    note TEXT,                              -- what followed the institution in a CodaLab description
    link TEXT,
    submitted TEXT NOT NULL,                -- ISO 8601, UTC: 2018-11-30T19:48:12Z
    scored TEXT NOT NULL,                   -- when it was scored (or failed), ISO 8601 UTC
    status TEXT NOT NULL CHECK (status IN ('scored', 'failed')),
    reason TEXT,                            -- why it failed; NULL when scored
    {_SCORES_DDL},
    gold_raters TEXT,                       -- JSON list, e.g. ["Rad4", "Rad5", "Rad6"]
    gold_sha256 TEXT,
    content_sha256 TEXT,                    -- the submitted bundle or predictions file
    source TEXT NOT NULL CHECK (source IN ('{KIT}', '{CODALAB}')),  -- where the scores come from
    CHECK ((status = 'failed') = (reason IS NOT NULL)),
    CHECK (submitter IS NOT NULL OR source = '{CODALAB}')
);
CREATE INDEX submissions_board ON submissions (status, kappa DESC, submitted, id);
"""
# Unchanged since version 2 (a version that changes them gives _v1_to_v2 a copy of these).
_BASELINES_AND_RESULTS = """
CREATE TABLE radiologists (                 -- the baselines a submission was scored against
    submission_id INTEGER NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    grp TEXT NOT NULL,                      -- Overall, Elbow, ..., Wrist
    kappa REAL,
    kappa_lower REAL,
    kappa_upper REAL,
    PRIMARY KEY (submission_id, name, grp)
) WITHOUT ROWID;
CREATE INDEX radiologists_best ON radiologists (grp, kappa DESC, submission_id, name);
CREATE TABLE results (                      -- the whole `mura score --json` result, as recorded
    submission_id INTEGER PRIMARY KEY REFERENCES submissions (id) ON DELETE CASCADE,
    json TEXT NOT NULL
);
"""
TABLES = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
{SUBMISSIONS}
{_BASELINES_AND_RESULTS}
"""

# Version 2's submissions table, as _v1_to_v2 lays it out (_v2_to_v3 takes it from there).
_SUBMISSIONS_V2 = f"""
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    submitter TEXT NOT NULL CHECK (submitter <> ''),
    model TEXT,
    institution TEXT,
    link TEXT,
    submitted TEXT NOT NULL,
    scored TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scored', 'failed')),
    reason TEXT,
    {_SCORES_DDL},
    gold_raters TEXT,
    gold_sha256 TEXT,
    content_sha256 TEXT,
    CHECK ((status = 'failed') = (reason IS NOT NULL))
);
CREATE INDEX submissions_board ON submissions (status, kappa DESC, submitted, id);
"""


def create(conn: sqlite3.Connection) -> None:
    """Lay out an empty store at the current version (inside the caller's transaction)."""
    for statement in _statements(TABLES):
        conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {VERSION}")


def _statements(script: str) -> list[str]:
    """The statements of a script, split where SQLite says one ends (comments may hold `;`).
    executescript() would commit the caller's transaction, so they run one by one."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


# --- migrations -------------------------------------------------------------------------------
# Version 1 kept the per-type kappas, the radiologists and the whole result as JSON text in the
# submissions row. Version 2 gives each a proper home: one column per score (rendering 10,000
# entries reads no JSON), a radiologists table, the result in its own table (the board's table
# stays small), and the gold file's hash, taken from the stored result.


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    old = conn.execute(
        "SELECT id, identity, submitter, model, institution, link, submitted, scored, status, reason, "
        "kappa, kappa_lower, kappa_upper, per_type, baselines, gold_raters, content_sha256, result "
        "FROM submissions ORDER BY id"
    ).fetchall()
    conn.execute("ALTER TABLE submissions RENAME TO submissions_v1")
    for statement in _statements(_SUBMISSIONS_V2 + _BASELINES_AND_RESULTS):
        conn.execute(statement)
    for row in old:
        try:
            _copy_v1_row(conn, row)
        except (TypeError, ValueError, AttributeError) as exc:
            raise HostError(
                f"cannot migrate: submission {row[0]} of the version 1 store is malformed ({exc})"
            ) from None
    conn.execute("DROP TABLE submissions_v1")


# The version 2 table's columns (frozen: what the v1 -> v2 step writes and the v2 -> v3 step copies).
_V2_COLUMNS = (
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
    *SCORE_COLUMNS,
    "gold_raters",
    "gold_sha256",
    "content_sha256",
)


def _copy_v1_row(conn: sqlite3.Connection, row: tuple) -> None:
    head, (kappa, lower, upper, per_type, baselines, gold_raters, content, result) = row[:10], row[10:]
    sid = head[0]
    types = _json(per_type, sid, "per_type") or {}
    scores = [kappa, lower, upper]
    for group in GROUPS[1:]:
        scores += list(types.get(group) or (None, None, None))
    gold_sha = None
    if result is not None:
        inputs = _json(result, sid, "result").get("inputs") or {}
        gold_sha = (inputs.get("gold") or {}).get("sha256")
    conn.execute(
        f"INSERT INTO submissions ({', '.join(_V2_COLUMNS)}) VALUES ({', '.join('?' * len(_V2_COLUMNS))})",
        (*head, *scores, gold_raters, gold_sha, content),
    )
    for name, groups in (_json(baselines, sid, "baselines") or {}).items():
        for group, (k, lo, hi) in groups.items():
            conn.execute("INSERT INTO radiologists VALUES (?, ?, ?, ?, ?, ?)", (sid, name, group, k, lo, hi))
    if result is not None:
        conn.execute("INSERT INTO results VALUES (?, ?)", (sid, result))


def _json(text: str | None, sid: int, column: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise HostError(f"cannot migrate: submission {sid}'s {column} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HostError(f"cannot migrate: submission {sid}'s {column} is not a JSON object")
    return value


# Version 3 imports every entry of a CodaLab dump: a submitter may be NULL (anonymous: a CodaLab
# entry without a user name), `note` keeps what followed the institution in a description, and
# `source` says where the scores, and so their intervals, come from. A `mura score` result always
# names its gold raters; an imported entry never does, which is how version 2's rows are told apart.
# SQLite cannot drop a NOT NULL constraint, so the table is rebuilt (SQLite's own procedure for
# other schema changes: create the new table, copy, drop the old one, rename the new one).


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        # Dropping the old table would delete every radiologist and result through their cascade.
        raise RuntimeError(
            "the version 2 -> 3 migration needs foreign keys off (open_store turns them on after)"
        )
    kept = ", ".join(_V2_COLUMNS)
    conn.execute(
        _statements(SUBMISSIONS)[0].replace("CREATE TABLE submissions", "CREATE TABLE submissions_v3", 1)
    )
    conn.execute(
        f"INSERT INTO submissions_v3 ({kept}, source) SELECT {kept}, CASE WHEN status = 'scored' AND "
        f"gold_raters IS NULL THEN '{CODALAB}' ELSE '{KIT}' END FROM submissions ORDER BY id"
    )
    conn.execute("DROP TABLE submissions")
    conn.execute("ALTER TABLE submissions_v3 RENAME TO submissions")
    for statement in _statements(SUBMISSIONS)[1:]:  # the index went with the old table
        conn.execute(statement)


# from-version -> the step to the next version
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store from `version` to VERSION, one step at a time (inside the caller's transaction)."""
    while version < VERSION:
        MIGRATIONS[version](conn)
        version += 1
        conn.execute(f"PRAGMA user_version = {version}")
