"""``uploader users ...`` (staff accounts) and ``uploader audit ...`` on a node's database.

Passwords come from a prompt (asked twice) or a file (``--password-file``, ``-`` for standard
input): never from an argument, which other users of the machine can read in the process list.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from uploader.errors import ConfigError
from uploader.node.commands import Verb, config_argument
from uploader.web.roles import Role

if TYPE_CHECKING:
    from uploader.web.accounts import Accounts


def verbs(database: Callable[[Path], Path]) -> tuple[Verb, Verb]:
    """The ``users`` and ``audit`` commands of a node whose database ``database(config)`` is."""

    def run_on_node(args: argparse.Namespace) -> int:
        return run(args, database(args.config))

    return (
        Verb(
            "users",
            "staff accounts of the node's pages",
            _users_arguments,
            run_on_node,
            allow_abbrev=False,  # no --password abbreviating --password-file: never an argument
        ),
        Verb(
            "audit",
            "the node's audit log: verify its hash chain, export it",
            _audit_arguments,
            run_on_node,
        ),
    )


def _users_arguments(us: argparse.ArgumentParser) -> None:
    us.add_argument("action", choices=["add", "passwd", "disable", "signout", "list"])
    us.add_argument("name", nargs="?", help="the account (add, passwd, disable, signout)")
    config_argument(us)
    us.add_argument("--role", choices=[r.value for r in Role], default=Role.REVIEWER.value)
    us.add_argument(
        "--password-file", type=Path, help="read the password from FILE ('-': standard input)"
    )


def _audit_arguments(au: argparse.ArgumentParser) -> None:
    au.add_argument("action", choices=["verify", "export"])
    config_argument(au)


def _password(source: Path | None) -> str:
    if source is not None:
        try:
            text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the password file ({exc.strerror})") from exc
        return text.rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def run(args: argparse.Namespace, database: Path) -> int:
    """Run ``users`` or ``audit`` against the node database at ``database``."""
    from uploader.web.accounts import Accounts, check_name  # argon2 loads only when needed

    accounts = Accounts(database)
    if args.command == "audit":
        return _audit(accounts, args.action)
    if args.action == "list":
        for user in accounts.users():
            print(f"{user.name}\t{user.role.value}\t{'disabled' if user.disabled else 'active'}")
        return 0
    if not args.name:
        raise ConfigError(f"users {args.action} needs the account name")
    if args.action == "add":
        accounts.add(args.name, Role(args.role), _password(args.password_file))
        print(f"account {args.name} added ({args.role})")
    elif args.action == "passwd":
        accounts.set_password(args.name, _password(args.password_file))
        print(f"password of {args.name} changed; its sessions are signed out")
    elif args.action == "signout":
        ended = accounts.revoke_all(check_name(args.name))
        print(f"{ended} session(s) of {args.name} ended")
    else:
        accounts.disable(args.name)
        print(f"account {args.name} disabled; its sessions are signed out")
    return 0


def _audit(accounts: Accounts, action: str) -> int:
    if action == "export":
        out = csv.writer(sys.stdout)
        out.writerow(["id", "at", "study_id", "actor", "action", "detail", "hash"])
        for r in accounts.audit_rows():
            out.writerow([r.id, r.at, r.study_id, r.actor, r.action, r.detail, r.hash])
        return 0
    report = accounts.verify_audit()
    if report.ok:
        print(f"audit chain intact: {report.rows} row(s); head {report.head}")
        return 0
    print(
        f"audit chain BROKEN at row {report.broken_at}: {report.problem} "
        f"({report.rows - 1} row(s) before it are intact)"
    )
    return 1
