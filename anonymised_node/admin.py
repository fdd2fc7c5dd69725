"""Staff commands on the anonymised node: status (with refusal alerts) and review decisions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from anonymised_node.config import load_config
from anonymised_node.service import open_store
from anonymised_node.store import AnonState, AnonStore
from uploader.errors import ConfigError
from uploader.health import print_health, read_health
from uploader.timefmt import iso_utc


def run(args: argparse.Namespace) -> int:
    """``uploader status`` / ``uploader review`` against an anonymised node's configuration."""
    config = load_config(args.config)
    store = open_store(config)
    if args.command == "status":
        return _status(store, args.json, read_health(config.node.data_dir))
    if args.command == "purge":
        return _purge_rejected(store, args)
    return _review(store, args)


def _purge_rejected(store: AnonStore, args: argparse.Namespace) -> int:
    """Delete the local files of rejected studies (they are kept until staff say so)."""
    if not args.rejected:
        raise ConfigError("on the anonymised node, purge takes --rejected")
    purged = 0
    for study in store.studies(AnonState.REJECTED):
        for _uid, _c, path, _u in store.instances(study.id):
            Path(path).unlink(missing_ok=True)
        store.set_state(
            study.id,
            AnonState.REJECTED,
            os.environ.get("USER", "staff"),
            "files purged",
            purged=True,
        )
        purged += 1
    print(f"purged {purged} rejected stud{'y' if purged == 1 else 'ies'}")
    return 0


def _status(store: AnonStore, as_json: bool, health: list[str] | None = None) -> int:
    counts = store.counts()
    alerts = [dataclasses.asdict(r) for r in store.refusals()]
    if as_json:
        running = health is not None
        report = {"counts": counts, "running": running, "unhealthy": health or []}
        print(json.dumps({**report, "refusals": alerts}, indent=2))
        return 0
    for state, n in counts.items():
        print(f"{state:18s} {n}")
    for a in alerts:
        problems = json.loads(a["problems"])
        first = f" ({problems[0]}{', ...' if len(problems) > 1 else ''})" if problems else ""
        print(f"ALERT refused instance {a['uid_digest']}: {len(problems)} problem(s){first}")
    print_health(health)
    return 0


def _review(store: AnonStore, args: argparse.Namespace) -> int:
    if args.action == "list":
        for s in store.studies(AnonState.READY):
            print(f"{s.id}\tready\t{s.protocol}\t{s.session}\t{s.subject}")
        return 0
    if args.study is None:
        raise ConfigError("give the study number (see `uploader review list`)")
    study = store.study(args.study)
    if study is None:
        raise ConfigError(f"no study {args.study}")
    if args.action == "show":
        names = f"{study.subject} / {study.session}"
        print(f"study {study.id}: {study.state}; trial {study.protocol}, {names}")
        for uid, sop_class, _path, uploaded in store.instances(study.id):
            print(f"  {uid} {sop_class}{' uploaded' if uploaded else ''}")
        for row in store.audit_rows(study.id):
            print(f"  {iso_utc(row.at)} {row.actor}: {row.action} {row.detail}")
        return 0
    return _decide(store, study.id, study.state, args)


def _decide(store: AnonStore, study_id: int, state: str, args: argparse.Namespace) -> int:
    """The same decision path as the staff pages (anonymised_node.web.decisions)."""
    from anonymised_node.web.decisions import Refused, decide

    who = args.by or os.environ.get("USER", "staff")
    if args.action == "reject" and not (args.reason or "").strip():
        raise ConfigError("a rejection needs --reason")
    try:
        decide(store, study_id, args.action, args.reason or "", who, admin=True)
    except Refused as exc:
        raise ConfigError(f"study {study_id}: {exc}") from exc
    print(f"study {study_id}: {args.action}d by {who}")
    return 0
