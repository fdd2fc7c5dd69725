"""The identifiable node's commands, registered with ``uploader`` (entry point group
``uploader.commands``): ``uploader identifiable [run|status|review|purge|link|qr|users|audit]``.

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
    from identifiable_node.config import Config

    return Config


def _run(args: argparse.Namespace) -> int:
    from identifiable_node.service import run

    return run(args.config)


def _admin(args: argparse.Namespace) -> int:
    from identifiable_node.admin import run

    return run(args)


def _qr(args: argparse.Namespace) -> int:
    from identifiable_node.qrcli import run

    return run(args)


def _database(config: Path) -> Path:
    """The node's SQLite file (the pages' accounts and the audit log live there too)."""
    from identifiable_node.config import load_config
    from identifiable_node.service import open_store

    return open_store(load_config(config))[0].path


def _status_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--json", action="store_true")


def _review_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("action", choices=["list", "show", "approve", "reject"])
    p.add_argument("study", type=int, nargs="?", help="the study's number (from `review list`)")
    p.add_argument("--override", action="store_true", help="send despite failed validation")
    p.add_argument(
        "--relabel", action="append", default=[], metavar="OLD=NEW", help="rename an ROI"
    )
    p.add_argument("--trial", help="assign this protocol ID")
    p.add_argument("--subject", help="a manual trial subject ID")
    p.add_argument("--reason", help="reject: why (needed, audited)")
    p.add_argument("--by", default=os.environ.get("USER", "staff"), help="who decides (audit)")


def _purge_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--opted-out", action="store_true", required=True, help="opted-out studies")


def _link_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["export"])
    config_argument(p)
    p.add_argument("--protocol", help="only this trial")


def _qr_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["find", "retrieve"])
    config_argument(p)
    p.add_argument("--patient-id", default="")
    p.add_argument("--accession", default="")
    p.add_argument("--date", default="", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    p.add_argument("--modality", default="")
    p.add_argument("--trial", help="retrieve: the protocol ID the studies belong to")
    p.add_argument("--csv", type=Path, help="retrieve: an XNAT DQR-style bulk CSV")
    p.add_argument("--json", action="store_true")


COMMANDS = NodeCommands(
    name="identifiable",
    help="the identifiable (hospital-side) node: run it (--config FILE), or VERB --help",
    verbs=(
        Verb("run", "run the node (foreground)", config_argument, _run),
        Verb(
            "status",
            "the node's health, studies per state, and those needing attention",
            _status_arguments,
            _admin,
        ),
        Verb(
            "review", "list, show and decide studies waiting for staff", _review_arguments, _admin
        ),
        Verb("purge", "delete the files of opted-out studies", _purge_arguments, _admin),
        Verb("link", "the link table original -> pseudonym", _link_arguments, _admin),
        Verb("qr", "query and retrieve from PACS", _qr_arguments, _qr),
        *web_verbs(_database),
    ),
    config_model=_config_model,
)
