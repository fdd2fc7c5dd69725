"""The anonymised node's commands, registered with ``uploader`` (entry point group
``uploader.commands``): ``uploader anonymised [run|status|review|purge|users|audit]``.

Importing this module is cheap: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from uploader.node.commands import NodeCommands, Verb, config_argument
from uploader.web.usercli import verbs as web_verbs

if TYPE_CHECKING:
    from pydantic import BaseModel


def _config_model() -> type[BaseModel]:
    from anonymised_node.config import Config

    return Config


def _run(args: argparse.Namespace) -> int:
    from anonymised_node.service import run

    return run(args.config)


def _admin(args: argparse.Namespace) -> int:
    from anonymised_node.admin import run

    return run(args)


def _database(config: Path) -> Path:
    """The node's SQLite file (the pages' accounts and the audit log live there too)."""
    from anonymised_node.config import load_config
    from anonymised_node.service import open_store

    return open_store(load_config(config)).path


def _status_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--json", action="store_true")


def _review_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("action", choices=["list", "show", "approve", "reject"])
    p.add_argument("study", type=int, nargs="?", help="the study's number (from `review list`)")
    p.add_argument("--reason", help="why the study is rejected")
    p.add_argument("--by", default=os.environ.get("USER", "staff"), help="who decides (audit)")


def _purge_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--rejected", action="store_true", required=True, help="rejected studies")


COMMANDS = NodeCommands(
    name="anonymised",
    help="the anonymised (research-side) node: run it (--config FILE), or VERB --help",
    verbs=(
        Verb("run", "run the node (foreground)", config_argument, _run),
        Verb(
            "status",
            "the node's health, studies per state, and refused instances",
            _status_arguments,
            _admin,
        ),
        Verb("review", "list, show, approve and reject studies", _review_arguments, _admin),
        Verb("purge", "delete the files of rejected studies", _purge_arguments, _admin),
        *web_verbs(_database),
    ),
    config_model=_config_model,
)
