"""Staff accounts, server-side sessions and sign-in throttling, in the node's own SQLite file.

Passwords are kept as argon2id hashes (argon2-cffi's defaults). A session is an opaque random
token in a cookie; the table holds only its SHA-256, so a copy of the database opens no session.
Sessions end when revoked (sign-out, account disabled or password changed), after the idle
timeout, or at the absolute timeout, whichever comes first. Sign-in failures are counted per
account and per address; past the limit every attempt is refused until the window passes, with
the same message whether or not the account exists.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from uploader.errors import ConfigError
from uploader.store import auditchain
from uploader.store.migrate import Schema, sql
from uploader.store.sqlite import Database, audit
from uploader.web.roles import Role

#: Version 1: the tables as the release before schema versions made them.
_V1 = """
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
"""
#: The staff pages' tables, a core schema in either node's file (versioned as ``web``): append a
#: step to change it (never edit one that shipped).
SCHEMA = Schema("web", (sql(_V1),))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
_DUMMY = _HASHER.hash("not-a-password-of-anyone")  # same work when the account does not exist


@dataclass(frozen=True)
class User:
    """An account (never its hash)."""

    name: str
    role: Role
    disabled: bool


@dataclass(frozen=True)
class Session:
    """A live session: who, and the CSRF token its forms must carry."""

    user: User
    csrf: str
    created: float


class SignInRefused(Exception):  # noqa: N818 - a refusal, shown to the user as it is
    """Sign-in failed; ``throttled`` says whether it was the limit (HTTP 429) or the password."""

    def __init__(self, throttled: bool) -> None:
        super().__init__("too many attempts" if throttled else "wrong name or password")
        self.throttled = throttled


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """Return a valid account name, or raise ConfigError saying what a name may hold."""
    if not _NAME.match(name):
        raise ConfigError(f"account name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    """Return an acceptable password, or raise ConfigError (never quoting it)."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


class Accounts(Database):
    """The web tables of a node's SQLite file (opened beside the node's own store)."""

    SCHEMAS = (auditchain.SCHEMA, SCHEMA)

    def __init__(
        self,
        path: Path,
        *,
        idle_s: float = 1800.0,
        absolute_s: float = 43200.0,
        max_failures: int = 5,
        window_s: float = 900.0,
    ) -> None:
        super().__init__(path)
        self.idle_s, self.absolute_s = idle_s, absolute_s
        self.max_failures, self.window_s = max_failures, window_s

    # -- accounts ---------------------------------------------------------------------------
    def add(self, name: str, role: Role, password: str) -> None:
        """Create an account; ConfigError if the name is taken or invalid."""
        hashed = _HASHER.hash(check_password(password))
        now = time.time()
        try:
            with self.tx() as c:
                c.execute(
                    "INSERT INTO web_users (name, role, hash, created, changed) VALUES (?,?,?,?,?)",
                    (check_name(name), role.value, hashed, now, now),
                )
                audit(c, None, "admin", "account added", f"{name} ({role.value})")
        except sqlite3.IntegrityError as exc:
            raise ConfigError(f"account {name!r} exists already") from exc

    def set_password(self, name: str, password: str) -> None:
        """Change a password (and end the account's sessions)."""
        hashed = _HASHER.hash(check_password(password))
        self._update(name, "password changed", "hash=?, changed=?", (hashed, time.time()))

    def disable(self, name: str) -> None:
        """Disable an account (and end its sessions)."""
        self._update(name, "account disabled", "disabled=1, changed=?", (time.time(),))

    def _update(self, name: str, what: str, sets: str, args: tuple[object, ...]) -> None:
        with self.tx() as c:
            cur = c.execute(f"UPDATE web_users SET {sets} WHERE name=?", (*args, name))  # noqa: S608 - ours
            if cur.rowcount == 0:
                raise ConfigError(f"no account {name!r}")
            c.execute("UPDATE web_sessions SET revoked=1 WHERE user=?", (name,))
            audit(c, None, "admin", what, name)

    def users(self) -> list[User]:
        """Every account, by name."""
        return [
            User(r["name"], Role(r["role"]), bool(r["disabled"]))
            for r in self.query("SELECT name, role, disabled FROM web_users ORDER BY name")
        ]

    # -- sign-in ----------------------------------------------------------------------------
    def sign_in(self, name: str, password: str, address: str) -> tuple[str, Session]:
        """Check a password and open a session; return (cookie token, session).

        Raises:
            SignInRefused: wrong name or password (the same for an unknown account), or the
                account or the address has failed too often within the window.
        """
        now = time.time()
        since = now - self.window_s
        per_account = self.query(
            "SELECT COUNT(*) n FROM web_failures WHERE account=? AND at>?", (name, since)
        )[0]["n"]
        per_address = self.query(
            "SELECT COUNT(*) n FROM web_failures WHERE address=? AND at>?", (address, since)
        )[0]["n"]
        if max(per_account, per_address) >= self.max_failures:
            self._failed(name, address, "throttled")
            raise SignInRefused(throttled=True)
        rows = self.query("SELECT * FROM web_users WHERE name=?", (name,))
        good = False
        try:
            good = _HASHER.verify(rows[0]["hash"] if rows else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            good = False
        if not rows or not good or rows[0]["disabled"]:
            self._failed(name, address, "wrong name or password")
            raise SignInRefused(throttled=False)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()  # after the (slow) hash check
        with self.tx() as c:
            c.execute("DELETE FROM web_failures WHERE account=?", (name,))
            c.execute(
                "INSERT INTO web_sessions (token_hash, user, csrf, created, seen)"
                " VALUES (?,?,?,?,?)",
                (_digest(token), name, csrf, now, now),
            )
            audit(c, None, name, "sign-in", f"from {address}")
        user = User(name, Role(rows[0]["role"]), False)
        return token, Session(user, csrf, now)

    def _failed(self, name: str, address: str, why: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM web_failures WHERE at<?", (time.time() - 2 * self.window_s,))
            c.execute(
                "INSERT INTO web_failures (at, account, address) VALUES (?,?,?)",
                (time.time(), name, address),
            )
            # the typed name is not recorded: it may be a password typed in the wrong box
            audit(c, None, "-", "sign-in refused", f"{why}, from {address}")

    def session(self, token: str) -> Session | None:
        """The live session of a cookie token (its idle clock restarted), or None."""
        if not token:
            return None
        now = time.time()
        rows = self.query(
            "SELECT s.*, u.role, u.disabled FROM web_sessions s JOIN web_users u ON u.name=s.user"
            " WHERE s.token_hash=?",
            (_digest(token),),
        )
        if not rows:
            return None
        r = rows[0]
        if r["revoked"] or r["disabled"]:
            return None
        if now - r["seen"] > self.idle_s or now - r["created"] > self.absolute_s:
            self.revoke(token, "session expired", r["user"])
            return None
        with self.tx() as c:
            c.execute("UPDATE web_sessions SET seen=? WHERE token_hash=?", (now, _digest(token)))
        return Session(User(r["user"], Role(r["role"]), False), r["csrf"], r["created"])

    def revoke(self, token: str, why: str = "sign-out", user: str | None = None) -> None:
        """End a session (sign-out, expiry); audited with the user's name."""
        with self.tx() as c:
            row = c.execute(
                "SELECT user, revoked FROM web_sessions WHERE token_hash=?", (_digest(token),)
            ).fetchone()
            if row is None or row["revoked"]:
                return
            c.execute("UPDATE web_sessions SET revoked=1 WHERE token_hash=?", (_digest(token),))
            audit(c, None, user or row["user"], why, "")

    def revoke_all(self, name: str) -> int:
        """End every session of an account; return how many were live."""
        with self.tx() as c:
            cur = c.execute("UPDATE web_sessions SET revoked=1 WHERE user=? AND revoked=0", (name,))
            audit(c, None, "admin", "sessions revoked", name)
            return cur.rowcount
