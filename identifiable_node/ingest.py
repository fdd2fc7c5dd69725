"""Ingest: every way in (C-STORE, watched folder, retrieval) ends here, durable before indexed.

An instance is acknowledged (or its source file released) only after its bytes are fsynced in
the spool and its row is committed. A file that is not DICOM goes to quarantine with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.errors import InvalidDicomError

from identifiable_node.journal_writer import JournalWriter, idle_status
from identifiable_node.store import SetAsideKind, Store
from uploader.dicom_header import scan, text
from uploader.dicomfile import read_dicom
from uploader.errors import NotDicomError
from uploader.store.journal import Journal
from uploader.store.spool import Spool, durable_write

log = logging.getLogger(__name__)

_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "OtherPatientIDs",
]


@dataclass(frozen=True)
class Header:
    """What indexing needs of one instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    patient_id: str
    other_ids: str


_FAST_TAGS = {
    "study": 0x0020000D,
    "series": 0x0020000E,
    "sop": 0x00080018,
    "modality": 0x00080060,
    "patient": 0x00100020,
    "others": 0x00101000,
}
_FAST_WANTED = frozenset(_FAST_TAGS.values())


def fast_header(data: bytes) -> Header | None:
    """The header by a walk of the element headers (``dicom_header``), or ``None`` when the walk
    cannot be certain (then pydicom reads it)."""
    found = scan(data, _FAST_WANTED)
    if found is None:
        return None
    values = {
        key: text(found.get(tag), each=key in ("patient", "others"))
        for key, tag in _FAST_TAGS.items()
    }
    if any(v is None for v in values.values()) or "\\" in (values["patient"] or ""):
        return None
    if not values["study"] or not values["sop"]:
        return None
    return Header(
        study_uid=values["study"] or "",
        series_uid=values["series"] or "",
        sop_uid=values["sop"] or "",
        modality=values["modality"] or "OT",
        patient_id=values["patient"] or "",
        other_ids=values["others"] or "",
    )


def read_header(source: bytes | Path) -> Header:
    """Read the identifying header of an instance.

    Raises:
        NotDicomError: not DICOM, or no Study/SOP Instance UID.
    """
    if isinstance(source, bytes):
        header = fast_header(source)
        if header is not None:
            return header
    try:
        fp = BytesIO(source) if isinstance(source, bytes) else source
        ds = read_dicom(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as exc:
        raise NotDicomError(f"not a readable DICOM file ({type(exc).__name__})") from exc
    study, sop = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    if not study or not sop:
        raise NotDicomError("no Study or SOP Instance UID")
    others = ds.get("OtherPatientIDs") or []
    other_ids = "\\".join(str(v) for v in (others if isinstance(others, list) else [others]))
    return Header(
        study_uid=study,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_uid=sop,
        modality=str(ds.get("Modality", "") or "OT"),
        patient_id=str(ds.get("PatientID", "") or ""),
        other_ids=str(other_ids),
    )


class Ingestor:
    """Stores instances durably and indexes them.

    With a journal (the node's C-STORE path), an instance is durable once journaled, and a
    :class:`~identifiable_node.journal_writer.JournalWriter` (``start``/``stop``) writes its
    spool file later. Without a journal, each instance is a durable file of its own before
    ``take_bytes`` returns.
    """

    def __init__(
        self,
        store: Store,
        spool: Spool,
        journal: Journal | None = None,
        *,
        write_delay_s: float = 0.2,
        checkpoint_idle_s: float = 1.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.journal = journal
        self.writer = (
            JournalWriter(
                journal,
                spool.root,
                write_delay_s=write_delay_s,
                checkpoint_idle_s=checkpoint_idle_s,
            )
            if journal is not None
            else None
        )

    # -- the journal ----------------------------------------------------------------------
    def recover(self) -> int:
        """Write out (durably) and index every journaled instance a crash left (start-up)."""
        if self.journal is None:
            return 0
        n = 0
        for meta, payload in self.journal.recover():
            path = self.spool.root / str(meta.get("path") or "")
            try:
                header = read_header(payload)
            except NotDicomError:
                continue
            if path != self.spool.path_for(header.sop_uid):
                continue  # not ours to write
            durable_write(path, payload)
            self._index(header, path, str(meta.get("source") or "journal"), meta.get("protocol"))
            n += 1
        self.journal.checkpoint(self.journal.last_seq)
        if n:
            log.warning("start-up: %d journaled instance(s) written to the spool again", n)
        return n

    def start(self) -> None:
        """Start the journal's writer (with a journal)."""
        if self.writer is not None:
            self.writer.start()

    def stop(self, wait_s: float = 30.0) -> None:
        """Stop the journal's writer once it wrote what is pending (``JournalWriter.stop``)."""
        if self.writer is not None:
            self.writer.stop(wait_s)

    def writer_alive(self) -> bool:
        """True while the journal's writer runs (False without a journal)."""
        return self.writer is not None and self.writer.alive()

    def busy(self, study_uid: str) -> bool:
        """True while some of the study's instances have no spool file yet."""
        return self.writer is not None and self.writer.busy(study_uid)

    def status(self) -> dict[str, object]:
        """The journal's state for `uploader status` (no identifiers)."""
        return self.writer.status() if self.writer is not None else idle_status()

    # -- taking instances -----------------------------------------------------------------
    def take_bytes(
        self,
        data: bytes | Sequence[bytes | memoryview],
        *,
        source: str,
        protocol: str | None,
        crc: int | None = None,
    ) -> bool:
        """Store and index one instance (the file's bytes, or its parts in order: the header
        is then read from the first two, file meta and the start of the data set); return False
        for a duplicate (stored once). ``crc``: the CRC-32 of the parts, if known.

        Raises:
            NotDicomError: the bytes are not a DICOM instance (nothing stored).
            OSError, RetriableError: the disk or database refused (nothing acknowledged).
        """
        header = None
        if not isinstance(data, bytes):
            header = fast_header(b"".join(data[:2])) if len(data) > 2 else None
            if header is None:
                data, crc = b"".join(data), None
        if header is None:
            header = read_header(cast(bytes, data))
        path = self.spool.path_for(header.sop_uid)
        # sent again before its spool file is written?
        journaled = self.writer is not None and self.writer.journaled(path)
        if not path.exists() and not journaled:
            parts = [data] if isinstance(data, bytes) else data
            writer = self.writer
            origin = (source, protocol)
            if writer is None or not writer.append(path, header.study_uid, parts, crc, origin):
                self.spool.store(header.sop_uid, data)
            return self._index(header, path, source, protocol)
        self._duplicate(header, path, data, source)
        return self._index(header, path, source, protocol)

    def _duplicate(
        self, header: Header, path: Path, data: bytes | Sequence[bytes | memoryview], source: str
    ) -> None:
        """An instance already stored arrived again: the same bytes are a no-op; other bytes
        are a conflict, both copies kept in quarantine for staff (the first stays in the study).
        Only duplicates pay for the comparison.

        Raises:
            OSError: the conflict could not be kept (nothing acknowledged).
        """
        first = self._stored_bytes(path)
        second = data if isinstance(data, bytes) else b"".join(data)
        if first is None or first == second:
            return
        name = path.stem
        reason = (
            f"a second copy of instance {name} (spool file name) arrived from {source} with "
            f"other content ({len(first)} and {len(second)} bytes): both kept here, the first "
            "stays in the study; approve the study to go on with it"
        )
        kept = self.spool.quarantine(second, f"{name}.second.dcm", reason)
        self.spool.quarantine(first, f"{name}.first.dcm", reason)
        study_id = self.store.conflict(header.sop_uid, str(kept), reason)
        log.warning(
            "study %s: a second copy of an instance with other content was kept as a conflict"
            " (spool file %s)",
            study_id,
            name,
        )

    def _stored_bytes(self, path: Path) -> bytes | None:
        """The first copy's bytes: its journal record if not yet written, or its spool file."""
        if self.writer is not None:
            pending = self.writer.pending_bytes(path)
            if pending is not None:
                return pending
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def take_file(self, path: Path, *, source: str, protocol: str | None) -> bool:
        """Store a file taken back from quarantine (the staff pages' retry).

        Raises:
            NotDicomError: not DICOM (the caller keeps it in quarantine).
        """
        return self.take_bytes(path.read_bytes(), source=source, protocol=protocol)

    def _index(self, header: Header, path: Path, source: str, protocol: str | None) -> bool:
        return self.store.add_instance(
            study_uid=header.study_uid,
            sop_uid=header.sop_uid,
            series_uid=header.series_uid,
            modality=header.modality,
            path=str(path),
            patient_id=header.patient_id,
            other_ids=header.other_ids,
            protocol=protocol,
            source=source,
        )

    def rescan(self) -> int:
        """Index spooled files whose rows were lost (a power cut before the WAL reached disk)."""
        known = self.store.known_paths()
        added = 0
        for path in self.spool.files():
            if str(path) in known:
                continue
            try:
                header = read_header(path)
            except NotDicomError:
                reason = "spooled file unreadable at start-up"
                kept = self.spool.quarantine(path, path.name, reason)
                # on the quarantine page, where staff see why and an admin deletes it
                self.store.set_aside(None, SetAsideKind.QUARANTINED, str(kept), reason)
                path.unlink()
                continue
            added += self._index(header, path, "rescan", None)
        if added:
            log.warning("start-up rescan indexed %d spooled instance(s)", added)
        return added
