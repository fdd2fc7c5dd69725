"""Staff accounts, sessions and the audit chain, without a browser: the `users` and `audit`
commands, sign-in throttling, session expiry and revocation, a changed audit row detected."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import uploader.web.accounts as accounts_module
from uploader.web.accounts import Accounts, Role, SignInRefused

from .conftest import run_cli

PASSWORD = "correct horse battery"


@pytest.fixture
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with its lowest costs: these tests are about sessions and throttling, not the
    hash's cost (the commands' tests keep the shipped parameters), and a default-cost hash
    takes ~0.3 s per sign-in on this machine."""
    quick = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(accounts_module, "_HASHER", quick)
    monkeypatch.setattr(accounts_module, "_DUMMY", quick.hash("not-a-password-of-anyone"))


def _config(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "anon.yaml"
    data = tmp_path / "data"
    config.write_text(f"node: {{data_dir: {data}}}\nintake: {{allow_plain_http: true}}\n")
    return config, data / "anonymised.sqlite"


@pytest.mark.integration
def test_users_commands_add_list_passwd_disable(tmp_path: Path) -> None:
    config, db = _config(tmp_path)
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    added = run_cli(
        "users", "add", "alice", "--role", "admin", "--password-file", secret, "--config", config
    )
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    assert (
        run_cli("users", "add", "bob", "--password-file", secret, "--config", config).returncode
        == 0
    )
    listed = run_cli("users", "list", "--config", config)
    assert listed.stdout.splitlines() == ["alice\tadmin\tactive", "bob\treviewer\tactive"]
    again = run_cli("users", "add", "bob", "--password-file", secret, "--config", config)
    assert again.returncode == 2 and "exists already" in again.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    weak = run_cli("users", "add", "carol", "--password-file", short, "--config", config)
    assert weak.returncode == 2 and "at least 10 characters" in weak.stderr
    # a password is never an argument
    argv = run_cli("users", "add", "dave", "--password", PASSWORD, "--config", config)
    assert argv.returncode == 2 and "unrecognized arguments" in argv.stderr
    accounts = Accounts(db)
    token, _s = accounts.sign_in("bob", PASSWORD, "10.0.0.1")
    new = tmp_path / "new"
    new.write_text("another long password\n")
    assert (
        run_cli("users", "passwd", "bob", "--password-file", new, "--config", config).returncode
        == 0
    )
    assert accounts.session(token) is None  # a changed password signs the account out
    with pytest.raises(SignInRefused):
        accounts.sign_in("bob", PASSWORD, "10.0.0.1")
    token, _s = accounts.sign_in("bob", "another long password", "10.0.0.1")
    ended = run_cli("users", "signout", "bob", "--config", config)
    assert ended.returncode == 0 and "1 session(s) of bob ended" in ended.stdout
    assert accounts.session(token) is None
    token, _s = accounts.sign_in("bob", "another long password", "10.0.0.1")
    assert run_cli("users", "disable", "bob", "--config", config).returncode == 0
    assert accounts.session(token) is None
    with pytest.raises(SignInRefused) as refused:
        accounts.sign_in("bob", "another long password", "10.0.0.1")
    assert not refused.value.throttled  # a disabled account reads as a wrong password
    assert "bob\treviewer\tdisabled" in run_cli("users", "list", "--config", config).stdout
    hashes = [r[0] for r in sqlite3.connect(db).execute("SELECT hash FROM web_users")]
    assert all(h.startswith("$argon2id$") for h in hashes)


@pytest.mark.integration
def test_password_from_standard_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    config, db = _config(tmp_path)
    exe = Path(sys.executable).parent / "uploader"
    done = subprocess.run(
        [exe, "users", "add", "erin", "--password-file", "-", "--config", config],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    Accounts(db).sign_in("erin", PASSWORD, "127.0.0.1")


def _age(db: Path, column: str, seconds: float) -> None:
    """Move every session's clock back (as if that much time had passed)."""
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE web_sessions SET {column} = {column} - ?", (seconds,))


@pytest.mark.usefixtures("quick_hashes")
def test_sessions_expire_when_idle_or_old_and_are_revocable(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    accounts = Accounts(db, idle_s=1800, absolute_s=12 * 3600)
    accounts.add("alice", Role.REVIEWER, PASSWORD)
    token, session = accounts.sign_in("alice", PASSWORD, "127.0.0.1")
    assert accounts.session(token) == session
    assert accounts.session("not-a-token") is None
    _age(db, "seen", 1700)
    assert accounts.session(token) is not None  # used: the idle clock restarts
    _age(db, "seen", 1700)
    assert accounts.session(token) is not None
    _age(db, "seen", 1801)
    assert accounts.session(token) is None  # idle too long
    token, _s = accounts.sign_in("alice", PASSWORD, "127.0.0.1")
    _age(db, "created", 12 * 3600 + 1)
    assert accounts.session(token) is None  # busy, but past the absolute timeout
    audit = [r[0] for r in sqlite3.connect(db).execute("SELECT action FROM audit")]
    assert audit.count("session expired") == 2
    token, _s = accounts.sign_in("alice", PASSWORD, "127.0.0.1")
    accounts.revoke(token)
    assert accounts.session(token) is None
    t1, _ = accounts.sign_in("alice", PASSWORD, "127.0.0.1")
    t2, _ = accounts.sign_in("alice", PASSWORD, "127.0.0.2")
    assert accounts.revoke_all("alice") == 2
    assert accounts.session(t1) is None and accounts.session(t2) is None
    stored = [
        r[0]
        for r in sqlite3.connect(tmp_path / "db.sqlite").execute(
            "SELECT token_hash FROM web_sessions"
        )
    ]
    assert t1 not in stored and len(stored[0]) == 64  # only a digest of the cookie is kept


@pytest.mark.usefixtures("quick_hashes")
def test_sign_in_is_throttled_per_account_and_per_address(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "db.sqlite", max_failures=5, window_s=60)
    accounts.add("alice", Role.REVIEWER, PASSWORD)
    for _ in range(5):
        with pytest.raises(SignInRefused) as wrong:
            accounts.sign_in("alice", "wrong password", "10.0.0.1")
        assert not wrong.value.throttled
    with pytest.raises(SignInRefused) as limited:  # even the right password, from anywhere
        accounts.sign_in("alice", PASSWORD, "10.9.9.9")
    assert limited.value.throttled
    # an address trying many names is stopped too, names that exist or not alike
    for name in ("x1", "x2", "x3", "x4", "x5"):
        with pytest.raises(SignInRefused) as unknown:
            accounts.sign_in(name, "guess", "10.0.0.2")
        assert str(unknown.value) == "wrong name or password"
    accounts.add("bob", Role.REVIEWER, PASSWORD)
    with pytest.raises(SignInRefused) as by_address:
        accounts.sign_in("bob", PASSWORD, "10.0.0.2")
    assert by_address.value.throttled
    accounts.sign_in("bob", PASSWORD, "10.0.0.3")


@pytest.mark.integration
def test_audit_chain_detects_a_changed_or_removed_row(tmp_path: Path) -> None:
    config, db = _config(tmp_path)
    accounts = Accounts(db)
    accounts.add("alice", Role.ADMIN, PASSWORD)
    token, _s = accounts.sign_in("alice", PASSWORD, "127.0.0.1")
    accounts.revoke(token)
    ok = run_cli("audit", "verify", "--config", config)
    assert ok.returncode == 0 and "audit chain intact: 3 row(s)" in ok.stdout, ok.stdout
    actions = [r[0] for r in sqlite3.connect(db).execute("SELECT action FROM audit ORDER BY id")]
    assert actions == ["account added", "sign-in", "sign-out"]
    exported = run_cli("audit", "export", "--config", config).stdout.splitlines()
    assert exported[0].startswith("id,at,study_id,actor,action") and len(exported) == 4
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET actor='mallory' WHERE id=2")
    bad = run_cli("audit", "verify", "--config", config)
    assert bad.returncode == 1 and "BROKEN at row 2" in bad.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET actor='alice' WHERE id=2")
    assert run_cli("audit", "verify", "--config", config).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit WHERE id=2")
    gone = run_cli("audit", "verify", "--config", config)
    assert gone.returncode == 1 and "BROKEN at row 3" in gone.stdout


def test_an_older_audit_table_is_chained_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, study_id INTEGER,"
            " actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')"
        )
        conn.execute("INSERT INTO audit (at, study_id, actor, action) VALUES (1.5, 1, 'x', 'y')")
    report = Accounts(db).verify_audit()
    assert report.ok and report.rows == 1


@pytest.mark.integration
def test_users_command_works_on_the_identifiable_node_too(tmp_path: Path) -> None:
    from .peers import node_config

    config = node_config(tmp_path, "https://127.0.0.1:1/dicom-web", None)
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    added = run_cli("users", "add", "ida", "--password-file", secret, "--config", config)
    assert added.returncode == 0, added.stderr
    Accounts(tmp_path / "data" / "node.sqlite").sign_in("ida", PASSWORD, "127.0.0.1")
    assert run_cli("audit", "verify", "--config", config).returncode == 0
