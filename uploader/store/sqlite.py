"""SQLite (WAL) access shared by both nodes' stores: a connection per thread, short transactions."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uploader.errors import RetriableError
from uploader.store.auditchain import append, ensure_chain


class Database:
    """One SQLite file; subclasses give the schema."""

    SCHEMA = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(self.SCHEMA)  # idempotent; executescript manages its transaction
        ensure_chain(self._conn())  # the audit table's hash chain (added to older files)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a crash of the process loses nothing; after a power loss, the start-up
            # rescan re-indexes any fsynced file whose row was not yet on disk.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error).

        Raises:
            RetriableError: the database stayed locked.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise RetriableError(f"the node's database is busy: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query."""
        return list(self._conn().execute(sql, args))


def audit(
    c: sqlite3.Connection, study_id: int | None, actor: str, action: str, detail: str
) -> None:
    """Write one audit row, chained to the one before (both nodes have the same audit table)."""
    append(c, time.time(), study_id, actor, action, detail)
