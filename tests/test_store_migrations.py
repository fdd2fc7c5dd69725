"""Each store's schema is versioned and migrated on open, from every earlier version.

Version 0 is a file made before versions were recorded: the DDL below is copied from the release
before this change (as its code left a new file), filled with rows, then opened with today's
code: the rows are there, the versions are recorded, and the stores work on them. A file newer
than the code is refused with one line naming the file and both versions. No processes, no
network: these run in well under a second each.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from anonymised_node.store import SCHEMA as ANON_SCHEMA
from anonymised_node.store import AnonState, AnonStore
from identifiable_node.store import SCHEMA as IDENT_SCHEMA
from identifiable_node.store import BulkStatus, SetAsideKind, Store, StudyState
from uploader.store import auditchain
from uploader.store.auditchain import GENESIS, row_hash
from uploader.store.migrate import NewerSchemaError, Schema, migrate, sql, version
from uploader.web.accounts import SCHEMA as WEB_SCHEMA
from uploader.web.accounts import Accounts

from .conftest import run_cli

# ---- the shapes earlier releases wrote (copied, not imported: they must never change) -------

#: The identifiable node's tables (uploader/store/db.py before schema versions).
IDENTIFIABLE_V0 = """
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
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    study_id INTEGER,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
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

#: What the audit chain (issue 15) added to every file's audit table on open.
CHAIN_V0 = """
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
"""

#: The anonymised node's tables (anonymised_node/store.py before schema versions).
ANONYMISED_V0 = """
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

#: The staff pages' tables (uploader/web/accounts.py before schema versions).
WEB_V0 = """
CREATE TABLE IF NOT EXISTS web_users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, changed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, seen REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS web_failures (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, account TEXT NOT NULL, address TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS web_failures_at ON web_failures (at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, study_id INTEGER, actor TEXT NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
"""

PASSWORD = "correct horse battery"


def _old_file(path: Path, *scripts: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")  # as the nodes kept it
    for script in scripts:
        conn.executescript(script)
    return conn


def _chained_audit(conn: sqlite3.Connection, rows: list[tuple[int | None, str, str]]) -> None:
    """Audit rows as the chain wrote them (each hashed over the one before)."""
    prev = GENESIS
    for n, (study_id, actor, action) in enumerate(rows, start=1):
        h = row_hash(n, 1000.0 + n, study_id, actor, action, "", prev)
        conn.execute(
            "INSERT INTO audit (id, at, study_id, actor, action, detail, prev_hash, hash)"
            " VALUES (?,?,?,?,?,'',?,?)",
            (n, 1000.0 + n, study_id, actor, action, prev, h),
        )
        prev = h


def _fill_identifiable(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO studies (id, study_uid, patient_id, protocol, source, state, reason,"
        " decisions, subject, session, first_seen, last_received, updated)"
        " VALUES (1, '1.2.3', 'MRN001', 'PACE-C', 'scp', 'needs_review', 'a reason',"
        " '{\"override\": true}', 'S-1', 'S-1_CT01', 1, 2, 3)"
    )
    conn.execute(
        "INSERT INTO instances (sop_uid, study_id, modality, path, received)"
        " VALUES ('1.2.3.4', 1, 'CT', '/spool/a.dcm', 4)"
    )
    conn.execute(
        "INSERT INTO set_aside (study_id, kind, path, reason, at)"
        " VALUES (1, 'conflict', '/q/a', 'other bytes', 5)"
    )
    conn.execute("INSERT INTO links VALUES ('PACE-C', 'MRN001', '1.2.3', 'S-1', 'S-1_CT01', 6)")
    conn.execute("INSERT INTO bulk_rows (job, line, request) VALUES ('j1', 2, '{\"a\": \"b\"}')")


def _check_identifiable(store: Store) -> None:
    study = store.study(1)
    assert study is not None
    assert (study.study_uid, study.patient_id, study.state) == (
        "1.2.3", "MRN001", StudyState.NEEDS_REVIEW,
    )  # fmt: skip
    assert study.decided == {"override": True} and study.reason == "a reason"
    assert [i.sop_uid for i in store.instances(1)] == ["1.2.3.4"]
    assert [(r.kind, r.reason) for r in store.set_aside_rows(1)] == [
        (SetAsideKind.CONFLICT, "other bytes")
    ]
    assert [(k.patient_id, k.subject) for k in store.links()] == [("MRN001", "S-1")]
    assert [(r.line, r.status) for r in store.bulk_rows("j1")] == [(2, BulkStatus.PENDING)]
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == IDENT_SCHEMA.version
    assert dict(conn.execute("SELECT name, version FROM schema_versions")) == {"audit": 1}


def test_identifiable_file_from_before_versions_opens_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "node.sqlite"
    conn = _old_file(db, IDENTIFIABLE_V0, CHAIN_V0)
    _fill_identifiable(conn)
    _chained_audit(conn, [(1, "ingest", "study created"), (1, "worker-1", "receiving -> x")])
    conn.close()
    store = Store(db)
    _check_identifiable(store)
    assert store.verify_audit().ok
    _check_identifiable(Store(db))  # opening again changes nothing
    store.decide(1, "staff", subject="S-2")  # and the store works on it
    assert store.audit_rows(1)[-1].action == "needs_review -> complete"
    assert store.verify_audit().ok and store.verify_audit().rows == 3


def test_identifiable_file_from_before_the_audit_chain_is_chained(tmp_path: Path) -> None:
    db = tmp_path / "node.sqlite"
    conn = _old_file(db, IDENTIFIABLE_V0)
    _fill_identifiable(conn)
    conn.execute(
        "INSERT INTO audit (at, study_id, actor, action) VALUES (7, 1, 'ingest', 'study created')"
    )
    conn.close()
    store = Store(db)
    _check_identifiable(store)
    report = store.verify_audit()
    assert report.ok and report.rows == 1


def test_anonymised_file_with_staff_accounts_opens_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "anonymised.sqlite"
    conn = _old_file(db, ANONYMISED_V0, CHAIN_V0, WEB_V0)
    conn.execute(
        "INSERT INTO studies (id, study_uid, protocol, subject, session, expected, state,"
        " updated) VALUES (1, '2.25.1', 'PACE-C', 'S-1', 'S-1_CT01', 1, 'ready', 1)"
    )
    conn.execute(
        "INSERT INTO instances (sop_uid, study_id, path, received, digest)"
        " VALUES ('2.25.2', 1, '/r/a.dcm', 2, 'd1')"
    )
    conn.execute("INSERT INTO refusals (at, uid_digest, problems) VALUES (3, 'k-1', '[\"x\"]')")
    conn.execute(
        "INSERT INTO web_users (name, role, hash, created, changed) VALUES (?,?,?,1,1)",
        ("ida", "admin", PasswordHasher().hash(PASSWORD)),
    )
    _chained_audit(conn, [(1, "intake", "study created"), (None, "admin", "account added")])
    conn.close()
    store = AnonStore(db)
    accounts = Accounts(db)
    study = store.study(1)
    assert study is not None and study.state == AnonState.READY and study.subject == "S-1"
    assert store.held("2.25.2") is not None and store.refusals()[0].uid_digest == "k-1"
    _token, session = accounts.sign_in("ida", PASSWORD, "127.0.0.1")
    assert session.user.name == "ida"
    assert accounts.verify_audit().ok
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == ANON_SCHEMA.version
    assert dict(conn.execute("SELECT name, version FROM schema_versions")) == {
        "audit": auditchain.SCHEMA.version,
        "web": WEB_SCHEMA.version,
    }


def test_a_new_file_gets_every_version(tmp_path: Path) -> None:
    Accounts(tmp_path / "a.sqlite")  # the pages' tables first, then the node's: both recorded
    AnonStore(tmp_path / "a.sqlite")
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    assert version(conn, ANON_SCHEMA) == ANON_SCHEMA.version
    assert version(conn, WEB_SCHEMA) == WEB_SCHEMA.version
    assert version(conn, auditchain.SCHEMA) == auditchain.SCHEMA.version


@pytest.mark.parametrize("opener", [Store, AnonStore, Accounts])
def test_a_file_newer_than_the_code_is_refused(tmp_path: Path, opener: type) -> None:
    db = tmp_path / "x.sqlite"
    opener(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE schema_versions SET version=7 WHERE name='audit'")
    conn.close()
    with pytest.raises(NewerSchemaError) as err:
        opener(db)
    message = str(err.value)
    assert str(db) in message and "version 7" in message and "version 1 " in message
    assert "\n" not in message


@pytest.mark.integration  # a process
def test_the_node_commands_refuse_a_newer_file_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "anon.yaml"
    data = tmp_path / "data"
    config.write_text(f"node: {{data_dir: {data}}}\nintake: {{allow_plain_http: true}}\n")
    AnonStore(data / "anonymised.sqlite")
    conn = sqlite3.connect(data / "anonymised.sqlite", isolation_level=None)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    done = run_cli("users", "list", "--config", config)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "anonymised.sqlite" in lines[0] and "version 3" in lines[0]
    assert "Traceback" not in done.stderr


# ---- the framework, on a schema of three versions -------------------------------------------

STEPS = (
    sql("CREATE TABLE t (a TEXT NOT NULL);"),
    sql("ALTER TABLE t ADD COLUMN b INTEGER NOT NULL DEFAULT 0;\nUPDATE t SET b = length(a);"),
    sql("CREATE TABLE u (a TEXT, b INTEGER);\nINSERT INTO u SELECT a, b FROM t;\nDROP TABLE t;"),
)


@pytest.mark.parametrize("owner", [True, False])
@pytest.mark.parametrize("start", [0, 1, 2])
def test_every_earlier_version_migrates_with_its_rows(
    tmp_path: Path, start: int, owner: bool
) -> None:
    db = tmp_path / "t.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, db, [Schema("toy", STEPS[:start], owner=owner)])  # the file at `start`
    if start == 1:
        conn.execute("INSERT INTO t (a) VALUES ('four')")  # step 2 fills b from a
    if start == 2:
        conn.execute("INSERT INTO t (a, b) VALUES ('four', 4)")
    done = migrate(conn, db, [Schema("toy", STEPS, owner=owner)])
    assert done == [f"toy: {start} -> 3"]
    assert version(conn, Schema("toy", STEPS, owner=owner)) == 3
    assert conn.execute("SELECT a, b FROM u").fetchall() == ([("four", 4)] if start else [])
    assert migrate(conn, db, [Schema("toy", STEPS, owner=owner)]) == []  # nothing due


def test_a_failing_step_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, db, [Schema("toy", STEPS[:1], owner=True)])
    conn.execute("INSERT INTO t (a) VALUES ('kept')")

    def broken(c: sqlite3.Connection) -> None:
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        migrate(conn, db, [Schema("toy", (*STEPS[:2], broken), owner=True)])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert [r[1] for r in conn.execute("PRAGMA table_info(t)")] == ["a"]  # step 2 undone too
    assert conn.execute("SELECT a FROM t").fetchall() == [("kept",)]


def test_two_openers_at_once_migrate_once(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").close()
    ran: list[int] = []

    def counted(c: sqlite3.Connection) -> None:
        ran.append(1)
        c.execute("CREATE TABLE once (x)")

    schema = Schema("toy", (counted,), owner=True)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        start.wait()
        try:
            migrate(conn, db, [schema])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and ran == [1]


def test_identifiable_file_at_version_1_gains_the_patient_summary(tmp_path: Path) -> None:
    """Version 1 -> 2 (the staff pages' patient summary): rows intact, the table there."""
    db = tmp_path / "node.sqlite"
    conn = _old_file(db, IDENTIFIABLE_V0, CHAIN_V0)
    _fill_identifiable(conn)
    conn.close()
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, db, [Schema(IDENT_SCHEMA.name, IDENT_SCHEMA.steps[:1], owner=True)])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert not conn.execute(
        "SELECT name FROM sqlite_master WHERE name='patient_summary'"
    ).fetchall()
    conn.close()
    store = Store(db)
    _check_identifiable(store)
    store.save_summary(1, "DOE^JANE", "19600101", "20240315", "ACC1")
    assert store.summary(1)["accession"] == "ACC1"
