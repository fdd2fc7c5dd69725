"""The anonymised node's index: studies received, their review and upload states, refusals.

States: receiving -> ready (the manifest's count arrived) -> approved | rejected ->
uploading -> uploaded | failed. A study is created by its (signed) manifest, which announces its
instances and pseudonyms; instances are judged against it. Everything here is de-identified;
a refused instance is recorded by a keyed digest of its UID and its problems (attribute paths
and kinds), never by its UID or a value.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from anonymised_node.gate import Announced
from uploader.store.sqlite import Database, audit

_NEW_STUDY = (
    "INSERT INTO studies (study_uid, protocol, subject, session, updated) VALUES (?,?,?,?,?)"
)
STATES = ("receiving", "ready", "approved", "rejected", "uploading", "uploaded", "failed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    expected INTEGER,
    manifest TEXT,
    state TEXT NOT NULL DEFAULT 'receiving',
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    uploaded_at REAL,
    purged INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    sop_class TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    digest TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    uid_digest TEXT NOT NULL,
    problems TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, study_id INTEGER, actor TEXT NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class AnonStudy:
    """A study row."""

    id: int
    study_uid: str
    protocol: str
    subject: str
    session: str
    expected: int | None
    state: str
    reason: str
    attempts: int
    uploaded_at: float | None


#: Studies whose instances may still be replaced by a re-sent copy with other bytes.
REPLACEABLE = ("receiving", "ready")


@dataclass(frozen=True)
class Held:
    """An instance already stored: its study, the study's state, and the digest of its bytes."""

    study_uid: str
    state: str
    digest: str


class AnonStore(Database):
    """The anonymised node's database."""

    SCHEMA = _SCHEMA

    def __init__(self, path: Path) -> None:
        _migrate(path)
        super().__init__(path)

    def held(self, sop_uid: str) -> Held | None:
        """The stored copy of an instance, if any."""
        rows = self.query(
            "SELECT s.study_uid, s.state, i.digest FROM instances i JOIN studies s"
            " ON s.id = i.study_id WHERE i.sop_uid=?",
            (sop_uid,),
        )
        return Held(rows[0]["study_uid"], rows[0]["state"], rows[0]["digest"]) if rows else None

    def announced(self, study_uid: str) -> Announced | None:
        """The study as its manifest announced it (None: no manifest yet)."""
        rows = self.query("SELECT manifest FROM studies WHERE study_uid=?", (study_uid,))
        if not rows or not rows[0]["manifest"]:
            return None
        doc = json.loads(rows[0]["manifest"])
        if "study_uid" not in doc:
            return None  # recorded before manifests were signed and came first
        return Announced(
            study_uid=str(doc["study_uid"]),
            protocol=str(doc.get("protocol") or ""),
            subject=str(doc.get("subject") or ""),
            session=str(doc.get("session") or ""),
            sop_uids=frozenset(str(u) for u in doc.get("sop_instance_uids") or []),
        )

    def add_instance(
        self,
        *,
        study_uid: str,
        sop_uid: str,
        sop_class: str,
        path: str,
        protocol: str,
        subject: str,
        session: str,
        digest: str = "",
    ) -> bool:
        """Index a durably stored instance; False if it was already there (a re-sent copy with
        other bytes, written over the old file, is recorded with its new digest and audited)."""
        now = time.time()
        with self.tx() as c:
            row = c.execute("SELECT id FROM studies WHERE study_uid=?", (study_uid,)).fetchone()
            if row is None:
                cur = c.execute(
                    _NEW_STUDY,
                    (study_uid, protocol, subject, session, now),
                )
                study_id = int(cur.lastrowid or 0)
                audit(c, study_id, "intake", "study created", protocol)
            else:
                study_id = int(row["id"])
            old = c.execute("SELECT digest FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
            if old is not None:
                if old["digest"] != digest:
                    c.execute(
                        "UPDATE instances SET digest=?, path=?, uploaded=0, received=?"
                        " WHERE sop_uid=?",
                        (digest, path, now, sop_uid),
                    )
                    audit(c, study_id, "intake", "instance replaced", "re-sent with other bytes")
                return False
            c.execute(
                "INSERT INTO instances (sop_uid, study_id, sop_class, path, received, digest)"
                " VALUES (?,?,?,?,?,?)",
                (sop_uid, study_id, sop_class, path, now, digest),
            )
            self._maybe_ready(c, study_id)
        return True

    def manifest(self, study_uid: str, document: dict[str, object]) -> None:
        """Record a study's manifest (expected instances); the study may become ready."""
        now = time.time()
        expected = int(str(document.get("instances", 0)))
        with self.tx() as c:
            row = c.execute("SELECT id FROM studies WHERE study_uid=?", (study_uid,)).fetchone()
            if row is None:
                cur = c.execute(
                    _NEW_STUDY,
                    (
                        study_uid,
                        str(document.get("protocol") or ""),
                        str(document.get("subject") or ""),
                        str(document.get("session") or ""),
                        now,
                    ),
                )
                study_id = int(cur.lastrowid or 0)
            else:
                study_id = int(row["id"])
            c.execute(
                "UPDATE studies SET expected=?, manifest=?, updated=?, protocol=?, subject=?,"
                " session=? WHERE id=?",
                (
                    expected,
                    json.dumps(document),
                    now,
                    str(document.get("protocol") or ""),
                    str(document.get("subject") or ""),
                    str(document.get("session") or ""),
                    study_id,
                ),
            )
            audit(c, study_id, "intake", "manifest", f"{expected} instance(s) expected")
            self._maybe_ready(c, study_id)

    @staticmethod
    def _maybe_ready(c: object, study_id: int) -> None:
        conn = c  # sqlite3.Connection
        row = conn.execute(  # type: ignore[attr-defined]
            "SELECT s.state, s.expected, COUNT(i.sop_uid) n FROM studies s LEFT JOIN instances i"
            " ON i.study_id = s.id WHERE s.id=? GROUP BY s.id",
            (study_id,),
        ).fetchone()
        if (
            row["state"] == "receiving"
            and row["expected"] is not None
            and row["n"] >= row["expected"]
        ):
            conn.execute("UPDATE studies SET state='ready' WHERE id=?", (study_id,))  # type: ignore[attr-defined]
            audit(conn, study_id, "intake", "receiving -> ready", f"{row['n']} instance(s)")  # type: ignore[arg-type]

    def refuse(self, uid_digest: str, problems: list[str]) -> None:
        """Record an instance refused at intake: a digest of its UID and its problems (attribute
        paths and kinds), never the UID or any value."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO refusals (at, uid_digest, problems) VALUES (?,?,?)",
                (time.time(), uid_digest, json.dumps(problems)),
            )

    def set_state(
        self, study_id: int, state: str, actor: str, detail: str = "", **fields: object
    ) -> None:
        """Move a study to a state (with fields), free its lease, audit who did it."""
        if state not in STATES:
            raise ValueError(state)
        sets = "".join(f", {k}=?" for k in fields)
        with self.tx() as c:
            before = c.execute("SELECT state FROM studies WHERE id=?", (study_id,)).fetchone()
            if before is None:
                raise KeyError(study_id)
            c.execute(
                f"UPDATE studies SET state=?, lease_until=0, updated=?{sets} WHERE id=?",  # noqa: S608 - our column names
                (state, time.time(), *fields.values(), study_id),
            )
            audit(c, study_id, actor, f"{before['state']} -> {state}", detail)

    def claim(self, states: tuple[str, ...], lease_s: float) -> AnonStudy | None:
        """Claim the next study in these states whose lease is free and whose retry time came."""
        now = time.time()
        marks = ",".join("?" * len(states))
        with self.tx() as c:
            row = c.execute(
                f"SELECT * FROM studies WHERE state IN ({marks}) AND lease_until < ?"  # noqa: S608
                " AND next_attempt <= ? ORDER BY next_attempt, id LIMIT 1",
                (*states, now, now),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE studies SET lease_until=? WHERE id=?", (now + lease_s, row["id"]))
        return _study(row)

    def study(self, study_id: int) -> AnonStudy | None:
        """One study."""
        rows = self.query("SELECT * FROM studies WHERE id=?", (study_id,))
        return _study(rows[0]) if rows else None

    def studies(self, state: str | None = None) -> list[AnonStudy]:
        """Studies in one state, or all."""
        if state is None:
            return [_study(r) for r in self.query("SELECT * FROM studies ORDER BY id")]
        return [
            _study(r)
            for r in self.query("SELECT * FROM studies WHERE state=? ORDER BY id", (state,))
        ]

    def instances(self, study_id: int) -> list[tuple[str, str, str, int]]:
        """(sop_uid, sop_class, path, uploaded) of a study."""
        rows = self.query(
            "SELECT sop_uid, sop_class, path, uploaded FROM instances WHERE study_id=?"
            " ORDER BY received",
            (study_id,),
        )
        return [(r["sop_uid"], r["sop_class"], r["path"], int(r["uploaded"])) for r in rows]

    def mark_uploaded(self, sop_uids: list[str]) -> None:
        """Record instances the repository acknowledged."""
        with self.tx() as c:
            c.executemany(
                "UPDATE instances SET uploaded=1 WHERE sop_uid=?", [(s,) for s in sop_uids]
            )

    def counts(self) -> dict[str, int]:
        """Studies per state, and refusals."""
        found = {
            r["state"]: r["n"]
            for r in self.query("SELECT state, COUNT(*) n FROM studies GROUP BY state")
        }
        out = {s: int(found.get(s, 0)) for s in STATES}
        out["refused_instances"] = int(self.query("SELECT COUNT(*) n FROM refusals")[0]["n"])
        return out


def _migrate(path: Path) -> None:
    """Bring an older database up to this schema: instances gain the digest of their bytes;
    refusals recorded by SOP Instance UID are rewritten to a digest (SHA-256, unkeyed: the key
    is not known here) and the UID is gone."""
    if not path.exists():
        return
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(instances)")}
        if columns and "digest" not in columns:
            conn.execute("ALTER TABLE instances ADD COLUMN digest TEXT NOT NULL DEFAULT ''")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(refusals)")}
        if "sop_uid" in columns:
            conn.execute("BEGIN IMMEDIATE")
            for rid, uid in conn.execute("SELECT id, sop_uid FROM refusals").fetchall():
                old = "uid-sha256-" + hashlib.sha256(str(uid).encode()).hexdigest()[:20]
                conn.execute("UPDATE refusals SET sop_uid=? WHERE id=?", (old, rid))
            conn.execute("ALTER TABLE refusals RENAME COLUMN sop_uid TO uid_digest")
            conn.execute("COMMIT")
            conn.execute("VACUUM")  # the old values leave the file, not only the table
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor stay in the write-ahead log
    finally:
        conn.close()


def _study(row: object) -> AnonStudy:
    r = row  # sqlite3.Row
    return AnonStudy(**{k: r[k] for k in AnonStudy.__dataclass_fields__})  # type: ignore[index]
