"""Staff and IT commands on a node's store: status, review, purge, link export.

These print patient data only where staff need it to decide (``review show`` names the study by
its row number, its trial and the validation report; never the patient's name).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from identifiable_node import decisions as staff
from identifiable_node.config import Config, load_config
from identifiable_node.folder import folder_problems
from identifiable_node.folder import read_health as read_folder_health
from identifiable_node.service import open_store
from identifiable_node.store import Store, Study, StudyState
from identifiable_node.trials import Trials
from identifiable_node.web import patients
from identifiable_node.web.nodepages import csv_cells
from uploader.deid.pseudonyms import read_key
from uploader.errors import ConfigError
from uploader.health import print_health, read_health
from uploader.timefmt import iso_utc

ATTENTION = (StudyState.NEEDS_REVIEW, StudyState.QUARANTINED, StudyState.OPTED_OUT)


def run(args: argparse.Namespace) -> int:
    """Run one admin command; return its exit code."""
    config = load_config(args.config)
    store, _spool = open_store(config)
    if args.command == "status":
        data_dir = config.node.data_dir
        health = read_health(data_dir)
        journal, folder = _journal_status(data_dir), _folder_status(data_dir)
        return _status(store, args.json, journal, folder, health)
    if args.command == "review":
        return _review(store, args, config)
    if args.command == "purge":
        if not args.opted_out:
            raise ConfigError("on the identifiable node, purge takes --opted-out")
        return _purge(store)
    return _links(store, args.protocol)


def _journal_status(data_dir: Path) -> dict[str, object] | None:
    """The running node's ingest journal state (None when the node is not running)."""
    if not (data_dir / "node.ready").exists():
        return None
    try:
        state: dict[str, object] = json.loads((data_dir / "journal" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _folder_status(data_dir: Path) -> dict[str, object] | None:
    """The running node's watched-folder health (None when the node or its folder is off)."""
    if not (data_dir / "node.ready").exists():
        return None
    return read_folder_health(data_dir)


def _journal_problems(journal: dict[str, object] | None) -> list[str]:
    if not journal:
        return []
    problems = []
    if journal.get("failing_spool_writes"):
        problems.append(
            f"{journal['failing_spool_writes']} received instance(s) cannot be written to the "
            "spool (disk full or failing?): they are safe in the journal, retried"
        )
    if journal.get("checkpoints_stopped"):
        problems.append("a spool fsync failed: fix the disk, then restart the node")
    if journal.get("retired"):
        problems.append("the journal's disk failed: instances are stored the slow way; restart")
    return problems


def _status(
    store: Store,
    as_json: bool,
    journal: dict[str, object] | None = None,
    folder: dict[str, Any] | None = None,
    health: list[str] | None = None,
) -> int:
    counts = store.counts()
    waiting = [s for s in store.studies() if s.state in ATTENTION]
    problems = [f"journal: {p}" for p in _journal_problems(journal)]
    aside = Counter(str(r.kind) for r in store.set_aside_rows())
    if health is None:  # else the health registry names the folder's trouble (no repeats)
        problems += [f"folder: {p}" for p in folder_problems(folder)]
    if as_json:
        print(
            json.dumps(
                {
                    "counts": counts,
                    "running": health is not None,
                    "unhealthy": health or [],
                    "journal": journal,
                    "folder": folder,
                    "set_aside": dict(aside),
                    "problems": problems,
                    "attention": [
                        {
                            "study": s.id,
                            "state": s.state,
                            "protocol": s.protocol,
                            "reason": s.reason,
                        }
                        for s in waiting
                    ],
                },
                indent=2,
            )
        )
        return 0
    for state, n in counts.items():
        print(f"{state:14s} {n}")
    for s in waiting:
        print(f"study {s.id}: {s.state} ({s.protocol or 'no trial'}): {s.reason}")
    for problem in problems:
        print(problem)
    print_health(health)
    if aside:
        kept = ", ".join(f"{n} {kind}" for kind, n in sorted(aside.items()))
        print(f"kept in quarantine for staff: {kept} (see `uploader review show`)")
    if folder is not None:
        print(
            f"folder: {'running' if folder.get('alive') else 'STOPPED'}, "
            f"{folder.get('taken', 0)} taken, {folder.get('quarantined', 0)} quarantined, "
            f"{folder.get('left_alone', 0)} entry(ies) left alone"
        )
        for entry in folder.get("entries", []):
            print(f"  {entry}")
    return 0


def _trials(config: Config) -> Trials:
    node = config.node
    key = read_key(node.key_file)
    return Trials(node.protocols_dir, key, node.site, node.site_script, dict(config.manual_ids))


def _review(store: Store, args: argparse.Namespace, config: Config) -> int:
    if args.action == "list":  # what waits for staff: to review, or quarantined
        to_review = (StudyState.NEEDS_REVIEW, StudyState.QUARANTINED)
        waiting = [s for s in store.studies() if s.state in to_review]
        for s in waiting:
            print(f"{s.id}\t{s.state}\t{s.protocol or '-'}\t{s.session or '-'}\t{s.reason}")
        return 0
    if args.study is None:
        raise ConfigError("give the study number (see `uploader review list`)")
    study = store.study(args.study)
    if study is None:
        raise ConfigError(f"no study {args.study}")
    if args.action == "show":
        return _show(store, study)
    if args.action == "reject":  # the pages' Reject: a reason needed, and it never leaves
        try:
            staff.reject(store, study.id, args.reason or "", args.by)
        except staff.Refused as exc:
            raise ConfigError(f"study {study.id}: {exc}") from exc
        print(f"study {study.id}: rejected")
        return 0
    relabel = None
    if args.relabel:
        pairs = [r.split("=", 1) for r in args.relabel]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--relabel takes OLD=NEW")
        relabel = dict(pairs)
    trials = _trials(config) if args.trial or args.subject else None
    try:  # the same decision path as the staff pages, with the same checks
        staff.approve(
            store, study.id, args.by, override=bool(args.override), relabel=relabel,
            protocol=args.trial, subject=args.subject, trials=trials,
            patient=patients.facts(store, study),
        )  # fmt: skip
    except staff.Refused as exc:
        raise ConfigError(f"study {study.id}: {exc}") from exc
    print(f"study {study.id}: decision recorded; it goes through the pipeline again")
    return 0


def _show(store: Store, study: Study) -> int:
    print(f"study {study.id}: {study.state}, trial {study.protocol or '-'}: {study.reason}")
    if study.session:  # the same names the anonymised node shows for this study
        print(f"  subject {study.subject}, session {study.session}")
    report = json.loads(study.report or "{}")
    for c in report.get("checks", []):
        print(f"  {c['status'].upper():4s} {c['check']}: {c['message']}")
    if report.get("relabel"):
        print(f"  relabel: {report['relabel']}")
    for aside in store.set_aside_rows(study.id):
        print(f"  {aside.kind.upper()}: {aside.reason} (kept in {aside.path})")
    for row in store.audit_rows(study.id):
        print(f"  {iso_utc(row.at)} {row.actor}: {row.action} {row.detail}")
    return 0


def _purge(store: Store) -> int:
    purged = 0
    for study in store.studies(StudyState.OPTED_OUT):
        staff.purge_files(store, study, "purge")
        purged += 1
    print(f"purged {purged} opted-out stud{'y' if purged == 1 else 'ies'}")
    return 0


def _links(store: Store, protocol: str | None) -> int:
    w = csv.writer(sys.stdout)
    w.writerow(["protocol", "patient_id", "study_uid", "subject", "session"])
    for r in store.links(protocol):
        w.writerow(csv_cells([r.protocol, r.patient_id, r.study_uid, r.subject, r.session]))
    return 0
