"""Query/retrieve from PACS, one study or a CSV of thousands, persisted and resumable.

The CSV follows XNAT DQR's bulk format: ``Accession Number``, ``Patient ID``, ``Study Date``
(``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``), and optional relabel columns ``Subject`` and
``Session``, plus our ``Trial``. The job is keyed by the file's content: running the same file
again resumes it (rows done are not asked again). Retrievals run with bounded concurrency.
``stop()`` ends a running job at once: the associations in flight are cut, and the rows they
served stay pending (nothing of them is recorded), so the next run asks for them again.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from identifiable_node.store import BulkRow, BulkStatus, Store
from uploader.dicomnet.qr import Cancel, Peer, QueryCancelledError, find, get, move, study_query
from uploader.errors import ConfigError, RetriableError

log = logging.getLogger(__name__)
COLUMNS = {
    "Accession Number": "accession",
    "Patient ID": "patient_id",
    "Study Date": "study_date",
    "Modality": "modality",
    "Subject": "subject",
    "Session": "session",
    "Trial": "trial",
}
_DATE = r"^\d{8}(-\d{8})?$|^-\d{8}$|^\d{8}-$"


RowReport = BulkRow  # what happened to one CSV row


def read_rows(
    path: Path, trials: Collection[str] | None = None
) -> list[tuple[int, dict[str, str]]]:
    """Read and check a bulk CSV; return (line, request) pairs. ``trials``: the node's trials,
    the only ones a row may name (None: not checked).

    Raises:
        ConfigError: unreadable, no usable column, a bad date or a trial the node does not have
            (FILE:LINE: message).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [
                (i + 2, {k.strip(): (v or "").strip() for k, v in r.items() if k})
                for i, r in enumerate(reader)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the CSV: {exc}") from exc
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ConfigError(
            f"{path}:1: unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})"
        )
    if not {"Accession Number", "Patient ID"} & set(header):
        raise ConfigError(f"{path}:1: needs an 'Accession Number' or a 'Patient ID' column")
    out = []
    for line, row in rows:
        request = {COLUMNS[k]: v for k, v in row.items() if k in COLUMNS and v}
        if not request.get("accession") and not request.get("patient_id"):
            raise ConfigError(
                f"{path}:{line}: the row has neither an accession number nor a patient ID"
            )
        if request.get("study_date") and not re.match(_DATE, request["study_date"]):
            raise ConfigError(f"{path}:{line}: Study Date must be YYYYMMDD or YYYYMMDD-YYYYMMDD")
        trial = request.get("trial")
        if trial and trials is not None and trial not in trials:
            known = ", ".join(sorted(trials)) or "none"
            raise ConfigError(
                f"{path}:{line}: Trial {trial[:64]!r} is not one of this node's ({known})"
            )
        out.append((line, request))
    return out


class Bulk:
    """A persisted bulk retrieval."""

    def __init__(
        self,
        store: Store,
        peer: Peer,
        destination: str,
        concurrency: int,
        take: Callable[..., None] | None = None,
        *,
        trials: Collection[str] | None = None,
    ) -> None:
        """``take``: store one instance retrieved by C-GET (None: retrieve by C-MOVE);
        ``trials``: the node's trials, the only ones a CSV's Trial column may name."""
        self.store, self.peer, self.destination = store, peer, destination
        self.trials = trials
        self.concurrency, self.take = concurrency, take
        self.cancel = Cancel()

    def stop(self) -> None:
        """End every running row now; the rows in flight stay pending. Final: a stopped Bulk
        runs nothing more."""
        self.cancel.set()

    def load(self, path: Path) -> str:
        """Record the CSV's rows (once per content); return the job ID."""
        rows = read_rows(path, self.trials)
        job = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.store.add_bulk_rows(job, rows)
        return job

    def run(self, job: str, progress: Callable[[int], None] | None = None) -> list[RowReport]:
        """Retrieve every row not yet done; return every row's report."""
        pending = self.store.pending_bulk_rows(job)
        with ThreadPoolExecutor(self.concurrency) as pool:
            try:
                for _ in pool.map(lambda r: self._row(job, *r), pending):
                    if progress is not None and not self.cancel.is_set():
                        progress(1)
            except BaseException:  # Ctrl-C: cut what is in flight rather than wait for it
                self.stop()
                raise
        return self.report(job)

    def report(self, job: str) -> list[RowReport]:
        """Every row's outcome so far."""
        return self.store.bulk_rows(job)

    def _row(self, job: str, line: int, req: dict[str, str]) -> None:
        matched = arrived = failed = 0
        if self.cancel.is_set():
            return  # stopped: the row stays pending
        try:
            query = study_query(
                req.get("patient_id", ""),
                req.get("accession", ""),
                req.get("study_date", ""),
                req.get("modality", ""),
            )
            matches = find(self.peer, query, self.cancel)
            matched = len(matches)
            for m in matches:
                self.store.assign(
                    m.study_uid,
                    req.get("trial") or None,
                    subject=req.get("subject", ""),
                    session=req.get("session", ""),
                )
                if self.take is None:
                    result = move(self.peer, m.study_uid, self.destination, self.cancel)
                else:
                    take = partial(self.take, trial=req.get("trial"))
                    result = get(self.peer, m.study_uid, take, self.cancel)
                arrived += result.completed
                failed += result.failed + (0 if result.ok or result.failed else 1)
            status = (
                BulkStatus.DONE
                if matched and not failed
                else (BulkStatus.FAILED if failed else BulkStatus.NO_MATCH)
            )
            message = (
                ""
                if status == BulkStatus.DONE
                else ("nothing matched" if not matched else f"{failed} failed")
            )
        except QueryCancelledError:
            return  # cut short by stop(): the row stays pending, to be asked again
        except RetriableError as exc:
            status, message = BulkStatus.FAILED, str(exc)
        self.store.finish_bulk_row(
            job, line, status, matched=matched, arrived=arrived, failed=failed, message=message
        )
