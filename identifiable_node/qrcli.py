"""``uploader qr find | retrieve``: query PACS, retrieve one query's studies or a bulk CSV."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from identifiable_node.bulk import Bulk
from identifiable_node.config import load_config
from identifiable_node.ingest import Ingestor
from identifiable_node.service import open_store
from identifiable_node.store import BulkStatus
from uploader.dicomnet import quiet_pynetdicom
from uploader.dicomnet.qr import Peer, find, study_query
from uploader.errors import ConfigError
from uploader.node.protocols import load_protocols


def run(args: argparse.Namespace) -> int:
    """Run ``qr find`` or ``qr retrieve``; 0 when every row arrived, 1 otherwise."""
    config = load_config(args.config)
    quiet_pynetdicom()
    peer = Peer(config.pacs.ae_title, config.pacs.host, config.pacs.port, config.scp.ae_title)
    if args.action == "find":
        matches = find(peer, study_query(args.patient_id, args.accession, args.date, args.modality))
        if args.json:
            print(json.dumps([m.__dict__ for m in matches], indent=2))
        else:
            for m in matches:
                print(
                    f"{m.study_date}  {m.patient_id}  {m.accession}  {m.modalities}  {m.study_uid}"
                )
            print(f"{len(matches)} stud{'y' if len(matches) == 1 else 'ies'}")
        return 0
    store, spool = open_store(config)
    take = None
    if config.pacs.retrieve == "get":
        ingestor = Ingestor(store, spool)

        def take(data: bytes, trial: str | None = None) -> None:
            ingestor.take_bytes(data, source="qr:get", protocol=trial)

    trials = load_protocols(config.node.protocols_dir).keys()  # a row's Trial must be one
    bulk = Bulk(store, peer, config.scp.ae_title, config.pacs.concurrency, take, trials=trials)
    job = _load(bulk, args, config.node.data_dir)
    total = len(bulk.report(job))
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="row", file=sys.stderr) as bar:
            rows = bulk.run(job, bar.update)
    else:
        rows = bulk.run(job)
    if args.json:
        print(json.dumps({"job": job, "rows": [r.__dict__ for r in rows]}, indent=2))
    else:
        for r in rows:
            counts = f"{r.matched} matched, {r.arrived} arrived, {r.failed} failed"
            note = f" ({r.message})" if r.message else ""
            print(f"line {r.line}: {r.status}: {counts}{note}")
    return 0 if all(r.status == BulkStatus.DONE for r in rows) else 1


def _load(bulk: Bulk, args: argparse.Namespace, data_dir: Path) -> str:
    """Record the request's rows (a bulk CSV, or the one row of --patient-id/--accession)."""
    if args.csv is not None:
        return bulk.load(args.csv)
    if not (args.patient_id or args.accession):
        raise ConfigError("qr retrieve needs --csv FILE, or --patient-id / --accession")
    with _one_row_csv(args, data_dir) as source:
        return bulk.load(source)


@contextmanager
def _one_row_csv(args: argparse.Namespace, data_dir: Path) -> Iterator[Path]:
    """The request as a one-row bulk CSV. It holds a Patient ID or an accession number, so it
    lives under the node's own state directory (``tmp/``, owner-only) and is removed once
    loaded, whatever happens."""
    parent = data_dir / "tmp"
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="qr-", dir=parent))
    try:
        path = folder / "request.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["Patient ID", "Accession Number", "Study Date", "Modality", "Trial"])
            w.writerow(
                [args.patient_id, args.accession, args.date, args.modality, args.trial or ""]
            )
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
