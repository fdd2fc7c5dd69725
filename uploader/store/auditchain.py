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

GENESIS = "0" * 64
_FIELDS = "id, at, study_id, actor, action, detail, prev_hash, hash"


def row_hash(  # noqa: PLR0917 - the row's fields, in order
    row_id: int, at: float, study_id: int | None, actor: str, action: str, detail: str, prev: str
) -> str:
    """The hash of one audit row, given the hash of the row before it."""
    text = json.dumps([row_id, at, study_id, actor, action, detail, prev], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_chain(conn: sqlite3.Connection) -> None:
    """Give an existing ``audit`` table its chain columns, and chain rows written before them."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
    if not columns:
        return
    if "hash" in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "hash" not in {r[1] for r in conn.execute("PRAGMA table_info(audit)")}:  # re-checked
            conn.execute("ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''")
            conn.execute("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
            prev = GENESIS
            for r in conn.execute(f"SELECT {_FIELDS} FROM audit ORDER BY id").fetchall():  # noqa: S608
                h = row_hash(r[0], r[1], r[2], r[3], r[4], r[5], prev)
                conn.execute("UPDATE audit SET prev_hash=?, hash=? WHERE id=?", (prev, h, r[0]))
                prev = h
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
