"""The audit log as a hash chain: each row carries the hash of the one before it.

A row's hash is SHA-256 over its own fields and the previous row's hash, so changing, removing or
inserting a row breaks every link after it; ``verify`` walks the chain and names the first row
that does not fit. Whoever can rewrite the whole file can also recompute the chain: the head hash
``verify`` prints is the value to note outside the node (a ticket, the site's log server) to make
that visible too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from uploader.store.migrate import Schema, columns

GENESIS = "0" * 64
_FIELDS = "id, at, study_id, actor, action, detail, prev_hash, hash"


def row_hash(  # noqa: PLR0917 - the row's fields, in order
    row_id: int, at: float, study_id: int | None, actor: str, action: str, detail: str, prev: str
) -> str:
    """The hash of one audit row, given the hash of the row before it."""
    text = json.dumps([row_id, at, study_id, actor, action, detail, prev], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _chain_v1(conn: sqlite3.Connection) -> None:
    """Version 1: the audit table with its chain columns; a table written before the chain
    (no ``hash`` column) gains the columns and its rows are chained in order."""
    had = columns(conn, "audit")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
        " study_id INTEGER, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " detail TEXT NOT NULL DEFAULT '', prev_hash TEXT NOT NULL DEFAULT '',"
        " hash TEXT NOT NULL DEFAULT '')"
    )
    if not had or "hash" in had:
        return
    conn.execute("ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
    prev = GENESIS
    for r in conn.execute(f"SELECT {_FIELDS} FROM audit ORDER BY id").fetchall():  # noqa: S608
        h = row_hash(r[0], r[1], r[2], r[3], r[4], r[5], prev)
        conn.execute("UPDATE audit SET prev_hash=?, hash=? WHERE id=?", (prev, h, r[0]))
        prev = h


#: The audit log's schema: a core table both nodes' files hold (versioned as ``audit``).
SCHEMA = Schema("audit", (_chain_v1,))


def append(  # noqa: PLR0917 - the row's fields, in order
    c: sqlite3.Connection, at: float, study_id: int | None, actor: str, action: str, detail: str
) -> None:
    """Write one chained audit row (inside the caller's write transaction)."""
    last = c.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = str(last[0]) if last else GENESIS
    cur = c.execute(
        "INSERT INTO audit (at, study_id, actor, action, detail, prev_hash) VALUES (?,?,?,?,?,?)",
        (at, study_id, actor, action, detail, prev),
    )
    row_id = int(cur.lastrowid or 0)
    h = row_hash(row_id, at, study_id, actor, action, detail, prev)
    c.execute("UPDATE audit SET hash=? WHERE id=?", (h, row_id))


class AuditRow(NamedTuple):
    """One row of the audit log: when, which study (if any), who, what, and its chain hash."""

    id: int
    at: float
    study_id: int | None
    actor: str
    action: str
    detail: str
    hash: str


def rows(
    conn: sqlite3.Connection,
    *,
    study_id: int | None = None,
    actor: str | None = None,
    newest_first: bool = False,
    limit: int = -1,
) -> list[AuditRow]:
    """Audit rows (of one study, by one actor, or all), oldest first unless ``newest_first``;
    at most ``limit`` (-1: all)."""
    order = "DESC" if newest_first else "ASC"
    found = conn.execute(
        "SELECT id, at, study_id, actor, action, detail, hash FROM audit"  # noqa: S608 - ASC/DESC
        " WHERE (? IS NULL OR study_id=?) AND (? IS NULL OR actor=?)"
        f" ORDER BY id {order} LIMIT ?",
        (study_id, study_id, actor, actor, limit),
    )
    return [AuditRow._make(r) for r in found]


@dataclass(frozen=True)
class ChainReport:
    """What ``verify`` found: rows checked, the head hash, and the first broken row (if any)."""

    rows: int
    head: str
    broken_at: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """True when every row fits the chain."""
        return self.broken_at is None


def verify(conn: sqlite3.Connection) -> ChainReport:
    """Walk the audit chain from the first row; stop at the first row that does not fit."""
    prev, n = GENESIS, 0
    for r in conn.execute(f"SELECT {_FIELDS} FROM audit ORDER BY id"):  # noqa: S608
        n += 1
        if r[6] != prev:
            return ChainReport(n, prev, r[0], "its link to the row before does not match")
        expected = row_hash(r[0], r[1], r[2], r[3], r[4], r[5], prev)
        if r[7] != expected:
            return ChainReport(n, prev, r[0], "its content was changed after it was written")
        prev = expected
    return ChainReport(n, prev)
