"""Schema versions and ordered migrations for the nodes' SQLite files.

One file holds several schemas: its owner's (a node's store), whose version is the file's
``PRAGMA user_version``, and the core's tables it shares (the audit chain, the staff pages'
accounts), each versioned by name in the ``schema_versions`` table. A schema is an ordered list
of steps: step ``n`` (0-based) takes the schema from version ``n`` to ``n + 1``. Version 0 is a
file written before versions were recorded (or a new, empty one): the first step of each schema
brings every shape that code ever wrote to version 1, so files made by earlier releases open
with their rows intact.

Opening runs the missing steps of every schema in one ``BEGIN IMMEDIATE`` transaction, with the
new versions written in the same transaction: a step that fails leaves the file as it was, and
two processes opening the same file at once migrate it once (the second finds it done). A file
newer than this program is refused, never written to.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uploader.errors import ConfigError, RetriableError

#: One migration step: changes the schema (and rows) by one version, inside the transaction.
Step = Callable[[sqlite3.Connection], None]


class NewerSchemaError(ConfigError):
    """The file was written by a newer program: its schema version is past what this one knows."""

    def __init__(self, path: Path, schema: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: the {schema} schema is at version {found}, newer than version {supported} "
            "that this program knows: run the release that wrote it (or a newer one)"
        )
        self.path, self.schema, self.found, self.supported = path, schema, found, supported


@dataclass(frozen=True)
class Schema:
    """A named schema and its ordered steps (``steps[n]``: version n -> n + 1).

    ``owner``: the file's own schema (one per file), versioned by ``PRAGMA user_version``; the
    others are versioned by ``name`` in ``schema_versions``. ``scrub_after``: versions whose
    step removes values that must also leave the file's free pages and write-ahead log (the
    file is vacuumed after such a step ran).
    """

    name: str
    steps: tuple[Step, ...]
    owner: bool = False
    scrub_after: frozenset[int] = field(default_factory=frozenset)

    @property
    def version(self) -> int:
        """The version this program writes."""
        return len(self.steps)


def sql(script: str) -> Step:
    """A step that runs SQL statements (``;``-separated) inside the migration's transaction."""
    statements = _split(script)

    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


def _split(script: str) -> list[str]:
    """The complete statements of a script (``executescript`` would commit the transaction)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]!r}")
    return out


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns of a table (empty when it does not exist)."""
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def version(conn: sqlite3.Connection, schema: Schema) -> int:
    """The version of ``schema`` the file holds (0: none recorded)."""
    if schema.owner:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    if not columns(conn, "schema_versions"):
        return 0
    row = conn.execute("SELECT version FROM schema_versions WHERE name=?", (schema.name,))
    found = row.fetchone()
    return int(found[0]) if found else 0


def _record(conn: sqlite3.Connection, schema: Schema) -> None:
    if schema.owner:
        conn.execute(f"PRAGMA user_version = {int(schema.version)}")
        return
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions"
        " (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    conn.execute(
        "INSERT OR REPLACE INTO schema_versions (name, version) VALUES (?,?)",
        (schema.name, schema.version),
    )


def _pending(conn: sqlite3.Connection, path: Path, schemas: Sequence[Schema]) -> bool:
    """True when some schema needs steps; NewerSchemaError when one is past this program."""
    behind = False
    for schema in schemas:
        found = version(conn, schema)
        if found > schema.version:
            raise NewerSchemaError(path, schema.name, found, schema.version)
        behind = behind or found < schema.version
    return behind


def migrate(conn: sqlite3.Connection, path: Path, schemas: Sequence[Schema]) -> list[str]:
    """Bring every schema of the file at ``path`` to this program's version, in one
    transaction; return what was done (``name: from -> to``), empty when nothing was due.

    Raises:
        NewerSchemaError: the file holds a schema newer than this program (nothing changed).
        RetriableError: the file stayed locked by another writer.
    """
    if sum(s.owner for s in schemas) > 1:
        raise ValueError("a file has one owner schema")
    if not _pending(conn, path, schemas):  # the usual case: no write lock taken
        return []
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise RetriableError(f"{path}: the database is busy: {exc}") from exc
    done: list[str] = []
    scrub = False
    try:
        _pending(conn, path, schemas)  # again, under the lock: another process may have run
        for schema in schemas:
            found = version(conn, schema)
            for n in range(found, schema.version):
                schema.steps[n](conn)
                scrub = scrub or (n + 1) in schema.scrub_after
            if found != schema.version:
                _record(conn, schema)
                done.append(f"{schema.name}: {found} -> {schema.version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if scrub:
        conn.execute("VACUUM")  # removed values leave the file, not only the table
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor stay in the write-ahead log
    return done
