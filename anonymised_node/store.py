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
from enum import StrEnum
from typing import NamedTuple

from anonymised_node.gate import Announced
from uploader.store import auditchain
from uploader.store.migrate import Schema, columns, sql
from uploader.store.sqlite import Database, audit

_NEW_STUDY = (
    "INSERT INTO studies (study_uid, protocol, subject, session, updated) VALUES (?,?,?,?,?)"
)


class AnonState(StrEnum):
    """Where a study is: its review, then its push (the stored strings are these values)."""

    RECEIVING = "receiving"
    READY = "ready"  # every announced instance arrived: waiting for approval
    APPROVED = "approved"
    REJECTED = "rejected"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    FAILED = "failed"  # the push failed (retried until its attempts run out)


STATES = tuple(AnonState)
_STATE = {s.value: s for s in AnonState}  # a stored string to its state, without Enum's call
#: Studies the push worker takes.
PUSH_STATES = (AnonState.APPROVED, AnonState.UPLOADING, AnonState.FAILED)
_V1_TABLES = """
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
"""


def _v1(conn: sqlite3.Connection) -> None:
    """Version 1: the tables as the last release before schema versions left them. Older files
    are brought there too: instances gain the digest of their bytes; refusals recorded by SOP
    Instance UID are rewritten to a digest (SHA-256, unkeyed: the key is not known here) and the
    UID is gone (the file is vacuumed after this step: ``scrub_after``)."""
    if columns(conn, "instances") and "digest" not in columns(conn, "instances"):
        conn.execute("ALTER TABLE instances ADD COLUMN digest TEXT NOT NULL DEFAULT ''")
    if "sop_uid" in columns(conn, "refusals"):
        for rid, uid in conn.execute("SELECT id, sop_uid FROM refusals").fetchall():
            old = "uid-sha256-" + hashlib.sha256(str(uid).encode()).hexdigest()[:20]
            conn.execute("UPDATE refusals SET sop_uid=? WHERE id=?", (old, rid))
        conn.execute("ALTER TABLE refusals RENAME COLUMN sop_uid TO uid_digest")
    sql(_V1_TABLES)(conn)


#: The anonymised node's schema: append a step to change it (never edit one that shipped).
SCHEMA = Schema("anonymised node store", (_v1,), owner=True, scrub_after=frozenset({1}))


@dataclass(frozen=True)
class AnonStudy:
    """A study row."""

    id: int
    study_uid: str
    protocol: str
    subject: str
    session: str
    expected: int | None
    state: AnonState
    reason: str
    attempts: int
    uploaded_at: float | None


#: Studies whose instances may still be replaced by a re-sent copy with other bytes.
REPLACEABLE = (AnonState.RECEIVING, AnonState.READY)


@dataclass(frozen=True)
class Held:
    """An instance already stored: its study, the study's state, and the digest of its bytes."""

    study_uid: str
    state: AnonState
    digest: str


@dataclass(frozen=True)
class Refusal:
    """An instance refused at intake: when, the digest of its UID, its problems (JSON text)."""

    at: float
    uid_digest: str
    problems: str


class Listed(NamedTuple):
    """A study as the queue lists it (a tuple: the queue reads a thousand at a time)."""

    id: int
    protocol: str
    subject: str
    session: str
    state: AnonState
    reason: str
    attempts: int
    expected: int | None
    manifest: str | None
    updated: float


@dataclass(frozen=True)
class Holding:
    """What the node holds of an announced study, for the identifiable node's status request:
    instances announced, those of them stored (each passed the gate), and the study's state."""

    announced: int
    stored: int
    state: AnonState


class InstanceCount(NamedTuple):
    """A study's instances of one SOP class: how many, how many uploaded, the first arrival."""

    study_id: int
    sop_class: str
    n: int
    uploaded: int
    first: float


class AnonStore(Database):
    """The anonymised node's database."""

    SCHEMAS = (auditchain.SCHEMA, SCHEMA)

    def held(self, sop_uid: str) -> Held | None:
        """The stored copy of an instance, if any."""
        rows = self.query(
            "SELECT s.study_uid, s.state, i.digest FROM instances i JOIN studies s"
            " ON s.id = i.study_id WHERE i.sop_uid=?",
            (sop_uid,),
        )
        if not rows:
            return None
        return Held(rows[0]["study_uid"], AnonState(rows[0]["state"]), rows[0]["digest"])

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
    def _maybe_ready(conn: sqlite3.Connection, study_id: int) -> None:
        row = conn.execute(
            "SELECT s.state, s.expected, COUNT(i.sop_uid) n FROM studies s LEFT JOIN instances i"
            " ON i.study_id = s.id WHERE s.id=? GROUP BY s.id",
            (study_id,),
        ).fetchone()
        if (
            row["state"] == AnonState.RECEIVING
            and row["expected"] is not None
            and row["n"] >= row["expected"]
        ):
            conn.execute("UPDATE studies SET state=? WHERE id=?", (AnonState.READY, study_id))
            audit(
                conn,
                study_id,
                "intake",
                f"{AnonState.RECEIVING} -> {AnonState.READY}",
                f"{row['n']} instance(s)",
            )

    def refuse(self, uid_digest: str, problems: list[str]) -> None:
        """Record an instance refused at intake: a digest of its UID and its problems (attribute
        paths and kinds), never the UID or any value."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO refusals (at, uid_digest, problems) VALUES (?,?,?)",
                (time.time(), uid_digest, json.dumps(problems)),
            )

    def set_state(
        self,
        study_id: int,
        state: AnonState,
        actor: str,
        detail: str = "",
        *,
        reason: str | None = None,
        attempts: int | None = None,
        next_attempt: float | None = None,
        uploaded_at: float | None = None,
        purged: bool | None = None,
    ) -> None:
        """Move a study to a state (and set each field given; None leaves it as it is), free
        its lease, audit who did it."""
        state = AnonState(state)  # ValueError for a state that does not exist
        with self.tx() as c:
            before = c.execute("SELECT state FROM studies WHERE id=?", (study_id,)).fetchone()
            if before is None:
                raise KeyError(study_id)
            c.execute(
                "UPDATE studies SET state=?, lease_until=0, updated=?,"
                " reason=COALESCE(?, reason), attempts=COALESCE(?, attempts),"
                " next_attempt=COALESCE(?, next_attempt), uploaded_at=COALESCE(?, uploaded_at),"
                " purged=COALESCE(?, purged) WHERE id=?",
                (
                    state, time.time(), reason, attempts, next_attempt, uploaded_at,
                    None if purged is None else int(purged), study_id,
                ),
            )  # fmt: skip
            audit(c, study_id, actor, f"{before['state']} -> {state}", detail)

    def claim(self, states: tuple[AnonState, ...], lease_s: float) -> AnonStudy | None:
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

    def ready_in(self, protocols: list[str]) -> list[int]:
        """Studies waiting for approval in these trials (row ids)."""
        marks = ",".join("?" * len(protocols))
        rows = self.query(
            f"SELECT id FROM studies WHERE state=? AND protocol IN ({marks})",  # noqa: S608 - placeholders only
            (AnonState.READY, *protocols),
        )
        return [int(r["id"]) for r in rows]

    def uploaded_before(self, cutoff: float) -> list[int]:
        """Uploaded studies whose local copies are still here, uploaded before ``cutoff``."""
        rows = self.query(
            "SELECT id FROM studies WHERE state=? AND purged=0 AND uploaded_at < ?",
            (AnonState.UPLOADED, cutoff),
        )
        return [int(r["id"]) for r in rows]

    def study(self, study_id: int) -> AnonStudy | None:
        """One study."""
        rows = self.query("SELECT * FROM studies WHERE id=?", (study_id,))
        return _study(rows[0]) if rows else None

    def studies(self, state: AnonState | None = None) -> list[AnonStudy]:
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

    def holding(self, study_uid: str) -> Holding | None:
        """What is held of a study announced by its manifest (None: unknown, or no manifest)."""
        announced = self.announced(study_uid)
        if announced is None:
            return None
        rows = self.query(
            "SELECT s.state, i.sop_uid FROM studies s LEFT JOIN instances i ON i.study_id = s.id"
            " WHERE s.study_uid=?",
            (study_uid,),
        )
        stored = sum(1 for r in rows if r["sop_uid"] in announced.sop_uids)
        return Holding(len(announced.sop_uids), stored, _STATE[rows[0]["state"]])

    def held_study(self, study_uid: str) -> int | None:
        """The row id of a study whose files are still here (not purged), by its UID."""
        rows = self.query("SELECT id FROM studies WHERE study_uid=? AND purged=0", (study_uid,))
        return int(rows[0]["id"]) if rows else None

    def study_uids(self) -> dict[int, str]:
        """Every study's UID, by row id."""
        return {r["id"]: r["study_uid"] for r in self.query("SELECT id, study_uid FROM studies")}

    def protocols(self) -> list[str]:
        """The trials with studies here, sorted."""
        return [
            r["protocol"] for r in self.query("SELECT DISTINCT protocol FROM studies ORDER BY 1")
        ]

    def listing(self, state: str = "", protocol: str = "", study_id: int = 0) -> list[Listed]:
        """Studies for the queue (every one, or those in a state, of a trial, or one)."""
        where: list[str] = []
        args: list[object] = []
        if state:
            where.append("state=?")
            args.append(state)
        if protocol:
            where.append("protocol=?")
            args.append(protocol)
        if study_id:
            where.append("id=?")
            args.append(study_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        columns = (
            "id, protocol, subject, session, state, reason, attempts, expected, manifest, updated"
        )
        sql = f"SELECT {columns} FROM studies{clause}"  # noqa: S608 - our fragments only
        found = self.query(sql, tuple(args))
        return [
            Listed(r[0], r[1], r[2], r[3], _STATE[r[4]], r[5], r[6], r[7], r[8], r[9])
            for r in found
        ]

    def instance_counts(self, study_id: int = 0) -> list[InstanceCount]:
        """Instances per study and SOP class (of one study, or all), in one pass."""
        sql = "SELECT study_id, sop_class, COUNT(*), COALESCE(SUM(uploaded), 0), MIN(received)"
        sql += " FROM instances" + (" WHERE study_id=?" if study_id else "")
        found = self.query(sql + " GROUP BY study_id, sop_class", (study_id,) if study_id else ())
        return [InstanceCount._make(r) for r in found]

    def refusals(self, *, newest_first: bool = False) -> list[Refusal]:
        """Instances refused at intake (oldest first unless ``newest_first``)."""
        sql = "SELECT at, uid_digest, problems FROM refusals ORDER BY id"
        found = self.query(sql + (" DESC" if newest_first else ""))
        return [Refusal(float(r["at"]), str(r["uid_digest"]), r["problems"]) for r in found]

    def counts(self) -> dict[str, int]:
        """Studies per state, and refusals."""
        found = {
            r["state"]: r["n"]
            for r in self.query("SELECT state, COUNT(*) n FROM studies GROUP BY state")
        }
        out = {str(s): int(found.get(s, 0)) for s in STATES}
        out["refused_instances"] = int(self.query("SELECT COUNT(*) n FROM refusals")[0]["n"])
        return out


def _study(row: sqlite3.Row) -> AnonStudy:
    values = {k: row[k] for k in AnonStudy.__dataclass_fields__}
    values["state"] = AnonState(values["state"])
    return AnonStudy(**values)
