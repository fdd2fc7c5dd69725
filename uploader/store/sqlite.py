"""SQLite (WAL) access shared by both nodes' stores: a connection per thread, short transactions,
and the file's schemas brought to this program's versions when it is opened
(``uploader.store.migrate``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uploader.errors import RetriableError
from uploader.store import auditchain
from uploader.store.auditchain import AuditRow, ChainReport, append, verify
from uploader.store.auditchain import rows as audit_rows
from uploader.store.migrate import Schema, migrate


class Database:
    """One SQLite file; subclasses name the schemas they use (the audit chain's comes first)."""

    SCHEMAS: tuple[Schema, ...] = (auditchain.SCHEMA,)

    def __init__(self, path: Path) -> None:
        """Open (or create) the file and migrate its schemas.

        Raises:
            NewerSchemaError: the file was written by a newer program.
            RetriableError: the file stayed locked while it had to be migrated.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        migrate(self._conn(), path, self.SCHEMAS)

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

    def audit(self, study_id: int | None, actor: str, action: str, detail: str = "") -> None:
        """Write one audit row."""
        with self.tx() as c:
            audit(c, study_id, actor, action, detail)

    def audit_rows(
        self,
        study_id: int | None = None,
        *,
        actor: str | None = None,
        newest_first: bool = False,
        limit: int = -1,
    ) -> list[AuditRow]:
        """The audit trail (of one study, by one actor, or all), oldest first unless
        ``newest_first``; at most ``limit`` rows (-1: all)."""
        return audit_rows(
            self._conn(), study_id=study_id, actor=actor, newest_first=newest_first, limit=limit
        )

    def verify_audit(self) -> ChainReport:
        """Check the file's audit hash chain (every schema of the file writes to it)."""
        return verify(self._conn())


def audit(
    c: sqlite3.Connection, study_id: int | None, actor: str, action: str, detail: str
) -> None:
    """Write one audit row, chained to the one before (both nodes have the same audit table)."""
    append(c, time.time(), study_id, actor, action, detail)
