"""The identifiable node's store: SQLite (WAL) index of patients' studies and instances; the state
column is the work queue.

Each thread gets its own connection. Transactions are short and ``BEGIN IMMEDIATE``; a worker
claims a study with a lease and releases it with the state it reached, in one transaction that
also writes the audit row. Identifiers live here (this is the identifiable node), never in logs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

from uploader.store import auditchain
from uploader.store.migrate import Schema, sql
from uploader.store.sqlite import Database
from uploader.store.sqlite import audit as _audit


class StudyState(StrEnum):
    """Where a study is (the stored strings are these values)."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    OPTED_OUT = "opted_out"
    NEEDS_REVIEW = "needs_review"
    VALIDATED = "validated"
    PSEUDONYMISED = "pseudonymised"
    FORWARDED = "forwarded"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"  # by staff, with a reason; an admin may purge its files
    CONFIRMED = "confirmed"  # the anonymised node holds every announced instance
    REFUSED_DOWNSTREAM = "refused_downstream"  # the anonymised node's staff rejected it


STATES = tuple(StudyState)
#: States a worker moves on by itself (the others wait for staff or are done).
WORK_STATES = (
    StudyState.RECEIVING,
    StudyState.COMPLETE,
    StudyState.VALIDATED,
    StudyState.PSEUDONYMISED,
)
#: States whose study the anonymised node is asked about (``forward.status_url``).
CHECKED_STATES = (StudyState.FORWARDED, StudyState.CONFIRMED)
#: States a late instance does not reopen (a rejection is for good: a sender cannot undo it).
_STAY = (
    StudyState.RECEIVING,
    StudyState.OPTED_OUT,
    StudyState.QUARANTINED,
    StudyState.REJECTED,
)
#: States a conflicting copy of an instance stops (a study still receiving stops at `complete`).
_STOPPED_BY_CONFLICT = (StudyState.COMPLETE, StudyState.VALIDATED, StudyState.PSEUDONYMISED)


class SetAsideKind(StrEnum):
    """Why a copy of an instance was kept in quarantine for staff."""

    QUARANTINED = "quarantined"  # it could not be read or de-identified
    CONFLICT = "conflict"  # a second copy of a known instance, with other bytes


class BulkStatus(StrEnum):
    """A bulk retrieval row's outcome."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    NO_MATCH = "no match"


class Decisions(TypedDict, total=False):
    """What staff decided on a study (or a bulk CSV said in advance)."""

    override: bool  # go on although validation failed
    relabel: dict[str, str]  # structure names: old -> new
    protocol: str  # the trial
    subject: str  # the subject ID
    session: str  # the session label
    held: bool  # staff held it: a late instance does not send it on (a release does)


#: Version 1: the tables as every release before schema versions made them (the audit table is
#: the core's: ``uploader.store.auditchain``).
_V1 = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL DEFAULT '',
    other_ids TEXT NOT NULL DEFAULT '',
    protocol TEXT,
    source TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'receiving',
    reason TEXT NOT NULL DEFAULT '',
    report TEXT,
    decisions TEXT NOT NULL DEFAULT '{}',
    subject TEXT,
    session TEXT,
    first_seen REAL NOT NULL,
    last_received REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, next_attempt);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    series_uid TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    out_path TEXT,
    out_sop_uid TEXT,
    forwarded INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_id);
CREATE TABLE IF NOT EXISTS assignments (
    study_uid TEXT PRIMARY KEY,
    protocol TEXT,
    decisions TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS bulk_rows (
    job TEXT NOT NULL,
    line INTEGER NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    matched INTEGER NOT NULL DEFAULT 0,
    arrived INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, line)
);
CREATE TABLE IF NOT EXISTS set_aside (
    id INTEGER PRIMARY KEY,
    study_id INTEGER,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    protocol TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    subject TEXT NOT NULL,
    session TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (protocol, study_uid)
);
"""
#: Version 2: what the staff pages show of each study's patient (issue 16), filled from the
#: instances' headers by ``Store.fill_patient_summaries``.
_V2 = """
CREATE TABLE IF NOT EXISTS patient_summary (
    study_id INTEGER PRIMARY KEY REFERENCES studies(id),
    name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    study_date TEXT NOT NULL DEFAULT '',
    accession TEXT NOT NULL DEFAULT ''
);
"""
#: The identifiable node's schema: append a step to change it (never edit one that shipped).
SCHEMA = Schema("identifiable node store", (sql(_V1), sql(_V2)), owner=True)


@dataclass(frozen=True)
class Study:
    """A study row."""

    id: int
    study_uid: str
    patient_id: str
    other_ids: str
    protocol: str | None
    source: str
    state: StudyState
    reason: str
    report: str | None
    decisions: str
    subject: str | None
    session: str | None
    first_seen: float
    last_received: float
    attempts: int

    @property
    def decided(self) -> Decisions:
        """Staff decisions (override, relabel, trial, subject, session)."""
        value: Decisions = json.loads(self.decisions or "{}")
        return value


@dataclass(frozen=True)
class Instance:
    """An instance row."""

    sop_uid: str
    study_id: int
    series_uid: str
    modality: str
    path: str
    out_path: str | None
    out_sop_uid: str | None
    forwarded: int


@dataclass(frozen=True)
class SetAside:
    """A copy kept in quarantine for staff."""

    id: int
    study_id: int | None
    kind: SetAsideKind
    path: str
    reason: str
    at: float


@dataclass(frozen=True)
class Link:
    """Original patient/study -> trial subject/session."""

    protocol: str
    patient_id: str
    study_uid: str
    subject: str
    session: str


@dataclass(frozen=True)
class BulkRow:
    """What happened to one row of a bulk retrieval CSV."""

    line: int
    status: BulkStatus
    matched: int
    arrived: int
    failed: int
    message: str


class Store(Database):
    """The identifiable node's index. Thread-safe: one connection per thread."""

    SCHEMAS = (auditchain.SCHEMA, SCHEMA)

    # ---------------------------------------------------------------- ingest

    def add_instance(
        self,
        *,
        study_uid: str,
        sop_uid: str,
        series_uid: str,
        modality: str,
        path: str,
        patient_id: str,
        other_ids: str,
        protocol: str | None,
        source: str,
    ) -> bool:
        """Index a durably stored instance; return False if it was already known.

        A new instance for a study past ``receiving`` reopens it (a late series), except for
        opted-out, quarantined, rejected and held studies, which stay as they are. Reopening drops
        the staff's override: what they let through despite its validation was what they saw.
        """
        now = time.time()
        with self.tx() as c:
            known = c.execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
            if known:  # before any study row is made: a duplicate never leaves an empty study
                return False
            row = c.execute(
                "SELECT id, state FROM studies WHERE study_uid=?", (study_uid,)
            ).fetchone()
            if row is None:
                assigned = c.execute(
                    "SELECT protocol, decisions FROM assignments WHERE study_uid=?", (study_uid,)
                ).fetchone()
                decisions = assigned["decisions"] if assigned else "{}"
                protocol = protocol or (assigned["protocol"] if assigned else None)
                cur = c.execute(
                    "INSERT INTO studies (study_uid, patient_id, other_ids, protocol, source,"
                    " state, first_seen, last_received, updated, decisions)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        study_uid, patient_id, other_ids, protocol, source,
                        StudyState.RECEIVING, now, now, now, decisions,
                    ),
                )  # fmt: skip
                study_id = int(cur.lastrowid or 0)
                _audit(c, study_id, "ingest", "study created", source)
            else:
                study_id = int(row["id"])
            c.execute(
                "INSERT INTO instances (sop_uid, study_id, series_uid, modality, path, received)"
                " VALUES (?,?,?,?,?,?)",
                (sop_uid, study_id, series_uid, modality, path, now),
            )
            c.execute(
                "UPDATE studies SET last_received=?, updated=? WHERE id=?", (now, now, study_id)
            )
            held = c.execute(
                "SELECT json_extract(decisions, '$.held') AS held FROM studies WHERE id=?",
                (study_id,),
            ).fetchone()["held"]
            if row is not None and row["state"] not in _STAY and not held:
                c.execute(
                    "UPDATE studies SET state=?, reason='', lease_owner=NULL, lease_until=0,"
                    " decisions=json_remove(decisions, '$.override') WHERE id=?",
                    (StudyState.RECEIVING, study_id),
                )
                _audit(c, study_id, "ingest", "reopened by a late instance", row["state"])
            if protocol and row is not None:
                c.execute(
                    "UPDATE studies SET protocol=COALESCE(protocol, ?) WHERE id=?",
                    (protocol, study_id),
                )
        return True

    def set_aside(
        self,
        study_id: int | None,
        kind: SetAsideKind,
        path: str,
        reason: str,
        *,
        sop_uid: str | None = None,
        actor: str = "ingest",
    ) -> None:
        """Record a copy kept in quarantine for staff (``kind``: ``quarantined``, an instance
        that could not be read or de-identified, or ``conflict``, a second copy of an instance
        with other bytes), with an audit row. With ``sop_uid``, that instance leaves its study:
        the rest of the study goes on without it."""
        with self.tx() as c:
            if sop_uid is not None:
                c.execute("DELETE FROM instances WHERE sop_uid=?", (sop_uid,))
            c.execute(
                "INSERT INTO set_aside (study_id, kind, path, reason, at) VALUES (?,?,?,?,?)",
                (study_id, kind, path, reason, time.time()),
            )
            _audit(c, study_id, actor, f"instance {kind}", reason)

    def conflict(self, sop_uid: str, path: str, reason: str) -> int | None:
        """Record a second copy of a known instance with other bytes (kept in quarantine); a
        study still being worked on waits for staff. Return the study's row id."""
        with self.tx() as c:
            row = c.execute(
                "SELECT s.id, s.state FROM instances i JOIN studies s ON s.id = i.study_id"
                " WHERE i.sop_uid=?",
                (sop_uid,),
            ).fetchone()
            study_id = int(row["id"]) if row else None
            c.execute(
                "INSERT INTO set_aside (study_id, kind, path, reason, at) VALUES (?,?,?,?,?)",
                (study_id, SetAsideKind.CONFLICT, path, reason, time.time()),
            )
            _audit(c, study_id, "ingest", "instance conflict", reason)
            if row is not None and row["state"] in _STOPPED_BY_CONFLICT:
                c.execute(  # a study still receiving is stopped at its `complete` step
                    "UPDATE studies SET state=?, reason=?, lease_owner=NULL,"
                    " lease_until=0, updated=? WHERE id=?",
                    (
                        StudyState.NEEDS_REVIEW,
                        f"conflicting copies of an instance: {reason}",
                        time.time(),
                        study_id,
                    ),
                )
        return study_id

    def set_aside_rows(
        self, study_id: int | None = None, *, row_id: int | None = None
    ) -> list[SetAside]:
        """What was kept in quarantine for staff (of one study, one row, or all), oldest first."""
        sql = "SELECT id, study_id, kind, path, reason, at FROM set_aside"
        if row_id is not None:
            rows = self.query(sql + " WHERE id=?", (row_id,))
        elif study_id is None:
            rows = self.query(sql + " ORDER BY id")
        else:
            rows = self.query(sql + " WHERE study_id=? ORDER BY id", (study_id,))
        return [
            SetAside(
                r["id"], r["study_id"], SetAsideKind(r["kind"]), r["path"], r["reason"], r["at"]
            )
            for r in rows
        ]

    def assign(
        self, study_uid: str, protocol: str | None, *, subject: str = "", session: str = ""
    ) -> None:
        """Say in advance which trial (and subject/session) a study being retrieved belongs to."""
        decisions: Decisions = {}
        if subject:
            decisions["subject"] = subject
        if session:
            decisions["session"] = session
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO assignments VALUES (?,?,?)",
                (study_uid, protocol, json.dumps(decisions)),
            )

    def known_paths(self) -> set[str]:
        """Every spool path indexed (for the start-up rescan)."""
        return {r["path"] for r in self.query("SELECT path FROM instances")}

    # ---------------------------------------------------------------- work queue

    def claim(
        self,
        owner: str,
        lease_s: float,
        states: tuple[StudyState, ...] = WORK_STATES,
        *,
        confirm_checks: int = 0,
    ) -> Study | None:
        """Claim the next study in a work state whose lease is free; None if there is none.
        With ``confirm_checks``, forwarded and confirmed studies are claimed too (to ask the
        anonymised node what it holds of them) until that many checks were made in a row."""
        now = time.time()
        if confirm_checks:
            states = (*states, *CHECKED_STATES)
        marks = ",".join("?" * len(states))
        with self.tx() as c:
            row = c.execute(
                f"SELECT * FROM studies WHERE state IN ({marks}) AND lease_until < ? "  # noqa: S608 - placeholders only
                "AND next_attempt <= ? AND NOT (state IN (?,?) AND attempts >= ?)"
                " ORDER BY next_attempt, id LIMIT 1",
                (*states, now, now, *CHECKED_STATES, confirm_checks),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE studies SET lease_owner=?, lease_until=? WHERE id=?",
                (owner, now + lease_s, row["id"]),
            )
        return _study(row)

    def release(
        self,
        study_id: int,
        state: StudyState,
        actor: str,
        detail: str = "",
        *,
        reason: str = "",
        retry_in: float = 0.0,
        lease: str | None = None,
        attempts: int | None = None,
        report: str | None = None,
        protocol: str | None = None,
        subject: str | None = None,
        session: str | None = None,
        only_from: Collection[str] | None = None,
    ) -> bool:
        """End a claim: set the state (and each field given; None leaves it as it is), free the
        lease, write the audit row.

        ``lease``: the claim's owner; if the study is no longer leased to it (a late instance
        reopened it meanwhile), nothing changes and False is returned: the step is redone.
        ``only_from``: the states the change applies to; from another, nothing changes and
        False is returned (checked in the same transaction as the write).
        """
        state = StudyState(state)  # ValueError for a state that does not exist
        now = time.time()
        with self.tx() as c:
            before = c.execute(
                "SELECT state, lease_owner FROM studies WHERE id=?", (study_id,)
            ).fetchone()
            if lease is not None and (before is None or before["lease_owner"] != lease):
                return False
            if only_from is not None and (before is None or before["state"] not in only_from):
                return False
            c.execute(
                "UPDATE studies SET state=?, reason=?, lease_owner=NULL, lease_until=0,"
                " next_attempt=?, updated=?, attempts=COALESCE(?, attempts),"
                " report=COALESCE(?, report), protocol=COALESCE(?, protocol),"
                " subject=COALESCE(?, subject), session=COALESCE(?, session) WHERE id=?",
                (
                    state, reason, now + retry_in, now,
                    attempts, report, protocol, subject, session, study_id,
                ),
            )  # fmt: skip
            if before is None or before["state"] != state or detail:
                _audit(
                    c, study_id, actor, f"{before['state'] if before else '?'} -> {state}", detail
                )
        return True

    def study(self, study_id: int) -> Study | None:
        """Return one study by row id."""
        rows = self.query("SELECT * FROM studies WHERE id=?", (study_id,))
        return _study(rows[0]) if rows else None

    def studies(self, state: StudyState | None = None) -> list[Study]:
        """Return studies (in one state, or all)."""
        if state is None:
            return [_study(r) for r in self.query("SELECT * FROM studies ORDER BY id")]
        return [
            _study(r)
            for r in self.query("SELECT * FROM studies WHERE state=? ORDER BY id", (state,))
        ]

    def instances(self, study_id: int) -> list[Instance]:
        """Return a study's instances."""
        rows = self.query(
            "SELECT sop_uid, study_id, series_uid, modality, path, out_path, out_sop_uid, forwarded"
            " FROM instances WHERE study_id=? ORDER BY received, sop_uid",
            (study_id,),
        )
        return [Instance(**dict(r)) for r in rows]

    def set_outputs(self, outputs: list[tuple[str, str, str]]) -> None:
        """Record many instances' de-identified files: (sop_uid, out_path, out_sop_uid); an
        empty path records a withheld instance."""
        with self.tx() as c:
            c.executemany(
                "UPDATE instances SET out_path=?, out_sop_uid=? WHERE sop_uid=?",
                [(out, out_uid, sop) for sop, out, out_uid in outputs],
            )

    def mark_forwarded(self, sop_uids: list[str]) -> None:
        """Record that the target acknowledged these instances."""
        with self.tx() as c:
            c.executemany(
                "UPDATE instances SET forwarded=1 WHERE sop_uid=?", [(s,) for s in sop_uids]
            )

    def counts(self) -> dict[str, int]:
        """Studies per state (every state listed)."""
        found = {
            r["state"]: r["n"]
            for r in self.query("SELECT state, COUNT(*) n FROM studies GROUP BY state")
        }
        return {str(s): int(found.get(s, 0)) for s in STATES}

    def link(
        self, protocol: str, patient_id: str, study_uid: str, subject: str, session: str
    ) -> None:
        """Record original patient/study -> trial subject/session (it never leaves this node)."""
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO links VALUES (?,?,?,?,?,?)",
                (protocol, patient_id, study_uid, subject, session, time.time()),
            )

    def links(self, protocol: str | None = None) -> list[Link]:
        """The link table (of one trial, or all), by trial, subject and session."""
        rows = self.query(
            "SELECT protocol, patient_id, study_uid, subject, session FROM links"
            " WHERE ? IS NULL OR protocol=? ORDER BY protocol, subject, session",
            (protocol, protocol),
        )
        return [Link(**dict(r)) for r in rows]

    def decide(
        self,
        study_id: int,
        actor: str,
        *,
        override: bool | None = None,
        relabel: dict[str, str] | None = None,
        protocol: str | None = None,
        subject: str | None = None,
        session: str | None = None,
        only_from: Collection[str] | None = None,
    ) -> bool:
        """Record staff decisions on a study (merged over earlier ones; None decides nothing)
        and send it back to be worked on; with ``only_from``, only from those states (else
        nothing changes and False is returned)."""
        given: Decisions = {}
        if override is not None:
            given["override"] = override
        if relabel is not None:
            given["relabel"] = relabel
        if protocol is not None:
            given["protocol"] = protocol
        if subject is not None:
            given["subject"] = subject
        if session is not None:
            given["session"] = session
        with self.tx() as c:
            row = c.execute(
                "SELECT decisions, state FROM studies WHERE id=?", (study_id,)
            ).fetchone()
            if row is None:
                raise KeyError(study_id)
            if only_from is not None and row["state"] not in only_from:
                return False
            merged = {**json.loads(row["decisions"] or "{}"), **given}
            merged.pop("held", None)  # sent on: a hold is over
            c.execute(
                "UPDATE studies SET decisions=?, state=?, reason='', next_attempt=0,"
                " lease_owner=NULL, lease_until=0, updated=? WHERE id=?",  # a step in flight loses
                (json.dumps(merged), StudyState.COMPLETE, time.time(), study_id),
            )
            _audit(
                c,
                study_id,
                actor,
                f"{row['state']} -> {StudyState.COMPLETE}",
                "decision: " + ", ".join(sorted(given)),
            )
        return True

    # ---------------------------------------------------------------- bulk retrieval

    def add_bulk_rows(self, job: str, rows: list[tuple[int, dict[str, str]]]) -> None:
        """Record a bulk CSV's rows (line, request) as pending; rows already recorded stay."""
        with self.tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO bulk_rows (job, line, request, status) VALUES (?,?,?,?)",
                [(job, line, json.dumps(req), BulkStatus.PENDING) for line, req in rows],
            )

    def pending_bulk_rows(self, job: str) -> list[tuple[int, dict[str, str]]]:
        """(line, request) of a job's rows not yet done, by line."""
        rows = self.query(
            "SELECT line, request FROM bulk_rows WHERE job=? AND status != ? ORDER BY line",
            (job, BulkStatus.DONE),
        )
        return [(int(r["line"]), json.loads(r["request"])) for r in rows]

    def bulk_rows(self, job: str) -> list[BulkRow]:
        """Every row of a job, with its outcome so far."""
        rows = self.query(
            "SELECT line, status, matched, arrived, failed, message FROM bulk_rows"
            " WHERE job=? ORDER BY line",
            (job,),
        )
        return [
            BulkRow(
                r["line"], BulkStatus(r["status"]), r["matched"], r["arrived"], r["failed"],
                r["message"],
            )
            for r in rows
        ]  # fmt: skip

    def finish_bulk_row(
        self,
        job: str,
        line: int,
        status: BulkStatus,
        *,
        matched: int,
        arrived: int,
        failed: int,
        message: str,
    ) -> None:
        """Record what retrieving one row did."""
        with self.tx() as c:
            c.execute(
                "UPDATE bulk_rows SET status=?, matched=?, arrived=?, failed=?, message=?"
                " WHERE job=? AND line=?",
                (status, matched, arrived, failed, message, job, line),
            )

    # --- staff pages (issue 16) ---------------------------------------------------------------
    # Every read and write the identifiable node's pages make; no SQL in the page modules.

    def worklist(self, state: str = "", trial: str = "", search: str = "") -> list[WorkRow]:
        """Studies newest first with what the worklist shows (filters: state, trial, and a
        search in patient ID, name and accession)."""
        where, args = ["1=1"], []
        if state:
            where.append("s.state=?")
            args.append(state)
        if trial:
            where.append("COALESCE(json_extract(s.decisions, '$.protocol'), s.protocol)=?")
            args.append(trial)
        if search:
            like = f"%{search.replace('%', '').replace('_', '')}%"
            where.append("(s.patient_id LIKE ? OR p.name LIKE ? OR p.accession LIKE ?)")
            args += [like, like, like]
        clause = " AND ".join(where)
        sql = f"{_WORKLIST} WHERE {clause} ORDER BY s.id DESC LIMIT 500"
        rows = self.query(sql, tuple(args))
        return [WorkRow(**dict(r)) for r in rows]

    def unsummarised(self) -> list[tuple[int, str]]:
        """(study id, one instance's path) of studies whose patient summary is not yet read."""
        rows = self.query(
            "SELECT s.id, MIN(i.path) AS path FROM studies s JOIN instances i ON i.study_id=s.id"
            " WHERE s.id NOT IN (SELECT study_id FROM patient_summary) GROUP BY s.id"
        )
        return [(int(r["id"]), str(r["path"])) for r in rows]

    def save_summary(
        self, study_id: int, name: str, birth_date: str, study_date: str, accession: str
    ) -> None:
        """Keep what the worklist shows of a study's patient (read once from its files)."""
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO patient_summary VALUES (?,?,?,?,?)",
                (study_id, name, birth_date, study_date, accession),
            )

    def summary(self, study_id: int) -> dict[str, str]:
        """The patient summary of a study (empty values when not read yet)."""
        rows = self.query("SELECT * FROM patient_summary WHERE study_id=?", (study_id,))
        keys = ("name", "birth_date", "study_date", "accession")
        return {k: str(rows[0][k]) for k in keys} if rows else dict.fromkeys(keys, "")

    def trials_in_use(self) -> list[str]:
        """Every trial a study is assigned to."""
        rows = self.query(
            "SELECT DISTINCT COALESCE(json_extract(decisions, '$.protocol'), protocol) AS t"
            " FROM studies WHERE t IS NOT NULL ORDER BY t"
        )
        return [str(r["t"]) for r in rows]

    def subject_taken(self, protocol: str, subject: str, patient_id: str) -> bool:
        """True when another patient already has this subject ID in the trial."""
        rows = self.query(
            "SELECT 1 FROM links WHERE protocol=? AND subject=? AND patient_id<>?"
            " UNION SELECT 1 FROM studies WHERE patient_id<>?"
            " AND json_extract(decisions, '$.subject')=?"
            " AND COALESCE(json_extract(decisions, '$.protocol'), protocol)=? LIMIT 1",
            (protocol, subject, patient_id, patient_id, subject, protocol),
        )
        return bool(rows)

    def session_taken(self, protocol: str, session: str, study_uid: str) -> bool:
        """True when another study already has this session ID in the trial."""
        rows = self.query(
            "SELECT 1 FROM links WHERE protocol=? AND session=? AND study_uid<>?"
            " UNION SELECT 1 FROM studies WHERE study_uid<>?"
            " AND json_extract(decisions, '$.session')=?"
            " AND COALESCE(json_extract(decisions, '$.protocol'), protocol)=? LIMIT 1",
            (protocol, session, study_uid, study_uid, session, protocol),
        )
        return bool(rows)

    def note_decisions(
        self,
        study_id: int,
        actor: str,
        what: str,
        decisions: Decisions,
        *,
        only_from: Collection[str] | None = None,
    ) -> bool:
        """Record staff decisions (merged) without releasing the study: it waits for release.
        A study the pipeline has validated, or is validating, goes back to ``complete`` (any
        step in flight loses): it is validated again with these decisions, never de-identified
        under ones it was not validated with. With ``only_from``, only from those states (else
        nothing changes and False is returned)."""
        with self.tx() as c:
            row = c.execute(
                "SELECT decisions, state FROM studies WHERE id=?", (study_id,)
            ).fetchone()
            if row is None:
                raise KeyError(study_id)
            if only_from is not None and row["state"] not in only_from:
                return False
            merged = {**json.loads(row["decisions"] or "{}"), **decisions}
            again = row["state"] in (StudyState.COMPLETE, StudyState.VALIDATED)
            c.execute(  # a study waiting for staff says what was decided and that it waits
                "UPDATE studies SET decisions=?, updated=?, reason=CASE WHEN state='needs_review'"
                " THEN ? ELSE reason END WHERE id=?",
                (
                    json.dumps(merged),
                    time.time(),
                    f"{what} ({actor}): waiting for release",
                    study_id,
                ),
            )
            if again or row["state"] == StudyState.RECEIVING:  # a claim in flight loses
                c.execute(
                    "UPDATE studies SET state=?, lease_owner=NULL, lease_until=0, next_attempt=0"
                    " WHERE id=?",
                    (StudyState.COMPLETE if again else StudyState.RECEIVING, study_id),
                )
            _audit(c, study_id, actor, what, "noted: " + ", ".join(sorted(decisions)))
            if row["state"] == StudyState.VALIDATED:
                _audit(c, study_id, actor, "validated -> complete", "to be validated again")
        return True

    def set_state(
        self,
        study_id: int,
        state: StudyState,
        actor: str,
        reason: str,
        *,
        only_from: Collection[str] | None = None,
    ) -> bool:
        """A staff decision that stops a study (hold, reject): any claim in flight loses.
        With ``only_from``, only from those states (False: nothing changed)."""
        return self.release(study_id, state, actor, reason, reason=reason, only_from=only_from)

    def bulk_jobs(self) -> list[sqlite3.Row]:
        """Every bulk retrieval: job, rows, rows not yet finished (newest rows last)."""
        return self.query(
            "SELECT job, COUNT(*) AS total, SUM(status='pending') AS pending,"
            " SUM(status='done') AS done FROM bulk_rows GROUP BY job ORDER BY MIN(rowid)"
        )

    def bulk_requests(self, job: str) -> dict[int, dict[str, str]]:
        """What each row of a bulk job asks for (line -> its CSV fields)."""
        rows = self.query("SELECT line, request FROM bulk_rows WHERE job=?", (job,))
        return {int(r["line"]): dict(json.loads(r["request"])) for r in rows}

    def audit_node(self, actor: str, action: str, detail: str = "") -> None:
        """Write one audit row about the node, not a study (a link export)."""
        with self.tx() as c:
            _audit(c, None, actor, action, detail)

    def link_rows(self) -> list[sqlite3.Row]:
        """The link table (original patient/study -> subject/session), for authorised export."""
        return self.query("SELECT * FROM links ORDER BY protocol, subject, session")

    def set_aside_row(self, row_id: int) -> SetAside | None:
        """One row of what was kept in quarantine."""
        return next(iter(self.set_aside_rows(row_id=row_id)), None)

    def drop_set_aside(self, row_id: int, actor: str, what: str) -> None:
        """Forget one quarantine row (its file was deleted or taken back), audited."""
        with self.tx() as c:
            row = c.execute("SELECT study_id FROM set_aside WHERE id=?", (row_id,)).fetchone()
            c.execute("DELETE FROM set_aside WHERE id=?", (row_id,))
            _audit(c, row["study_id"] if row else None, actor, what, f"quarantine row {row_id}")


_WORKLIST = (
    "SELECT s.id, s.state, s.reason, s.patient_id, s.subject, s.session,"
    " COALESCE(json_extract(s.decisions, '$.protocol'), s.protocol) AS trial,"
    " COALESCE(p.name, '') AS name, COALESCE(p.study_date, '') AS study_date,"
    " COALESCE(p.accession, '') AS accession,"
    " (SELECT COUNT(*) FROM instances i WHERE i.study_id=s.id) AS received,"
    " (SELECT COUNT(*) FROM instances i WHERE i.study_id=s.id"
    "  AND i.out_path IS NOT NULL) AS deidentified,"
    " (SELECT COUNT(*) FROM instances i WHERE i.study_id=s.id AND i.forwarded=1) AS forwarded"
    " FROM studies s LEFT JOIN patient_summary p ON p.study_id=s.id"
)


@dataclass(frozen=True)
class WorkRow:
    """One worklist line (patient fields: only for signed-in staff on this node)."""

    id: int
    state: str
    reason: str
    patient_id: str
    subject: str | None
    session: str | None
    trial: str | None
    name: str
    study_date: str
    accession: str
    received: int
    deidentified: int
    forwarded: int


def _study(row: sqlite3.Row) -> Study:
    keys = Study.__dataclass_fields__
    values = {k: row[k] for k in keys}
    values["state"] = StudyState(values["state"])
    return Study(**values)
