"""A database from before refusals were recorded by digest: opening it rewrites every refused
SOP Instance UID to a digest, and the UID is gone from the file itself (not only the table)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from anonymised_node.store import AnonStore

ORIGINAL = "1.2.826.0.1.3680043.9.7133.19620314.1.2.1"  # embeds a birth date


def test_old_refusals_are_rewritten_to_digests(tmp_path: Path) -> None:
    db = tmp_path / "anonymised.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as the node keeps it
        conn.executescript(
            "CREATE TABLE refusals (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
            " sop_uid TEXT NOT NULL, problems TEXT NOT NULL);"
            "CREATE TABLE instances (sop_uid TEXT PRIMARY KEY, study_id INTEGER NOT NULL,"
            " sop_class TEXT NOT NULL DEFAULT '', path TEXT NOT NULL,"
            " uploaded INTEGER NOT NULL DEFAULT 0, received REAL NOT NULL);"
        )
        conn.execute(
            "INSERT INTO refusals (at, sop_uid, problems) VALUES (1, ?, '[]')", (ORIGINAL,)
        )
    store = AnonStore(db)
    (row,) = store.query("SELECT uid_digest FROM refusals")
    assert row["uid_digest"].startswith("uid-sha256-") and ORIGINAL not in row["uid_digest"]
    assert "digest" in {r[1] for r in store.query("PRAGMA table_info(instances)")}
    for path in tmp_path.iterdir():
        assert ORIGINAL.encode() not in path.read_bytes(), path.name
    AnonStore(db)  # opening again changes nothing
    assert len(store.query("SELECT * FROM refusals")) == 1
