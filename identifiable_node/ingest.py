"""Ingest: every way in (C-STORE, watched folder, retrieval) ends here, durable before indexed.

An instance is acknowledged (or its source file released) only after its bytes are fsynced in
the spool and its row is committed. A file that is not DICOM goes to quarantine with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.errors import InvalidDicomError

from identifiable_node.store import Store
from uploader.dicom_header import scan, text
from uploader.dicomfile import read_dicom
from uploader.errors import NotDicomError
from uploader.hardening import describe
from uploader.store.journal import Journal, Record
from uploader.store.spool import Spool, durable_write, fsync_files, quick_write

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


@dataclass
class _Pending:
    """A journaled instance whose spool file is still to be written."""

    record: Record
    path: Path
    study_uid: str
    failures: int = 0  # spool writes that failed
    retry_at: float = 0.0  # monotonic time of the next try


class Ingestor:
    """Stores instances durably and indexes them.

    With a journal (the node's C-STORE path), an instance is durable once journaled. A writer
    thread (``start``/``stop``) writes the spool files from the journal once arrivals pause for
    ``write_delay_s`` (or the journal is a quarter full), so that it does not compete with the
    receiver for the CPU, and checkpoints the journal. Without a journal, each instance is a
    durable file of its own before ``take_bytes`` returns.
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
        self.write_delay_s = write_delay_s
        self.checkpoint_idle_s = checkpoint_idle_s
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._waiting: Counter[str] = Counter()  # study UID -> instances without a spool file
        self._journaled: set[Path] = set()  # their spool paths (the first copy is the one kept)
        self._unsynced: list[Path] = []
        self._last_append = 0.0
        self._stopping = False  # no new journal appends
        self._closing = False  # the writer's last pass
        self._inflight = 0  # journal appends under way
        self._checkpoints_stopped = False  # after a failed spool fsync, until restart
        self._published: dict[str, object] = {}
        self._published_at = 0.0  # at most once a second
        self._thread: threading.Thread | None = None

    # -- the journal's writer -------------------------------------------------------------
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
        """Start the writer thread (with a journal)."""
        if self.journal is not None and self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="spool-writer", daemon=True)
            self._thread.start()

    def stop(self, wait_s: float = 30.0) -> None:
        """Refuse new journal appends (they are stored the slow way), wait for those under
        way, write what is pending, checkpoint the journal (clean if it can be), stop."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.wait_for(lambda: self._inflight == 0, timeout=wait_s)
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=wait_s)
        self._thread = None

    def busy(self, study_uid: str) -> bool:
        """True while some of the study's instances have no spool file yet."""
        with self._cond:
            return self._waiting[study_uid] > 0

    def _writer(self) -> None:
        while True:
            try:
                if self._writer_turn():
                    return
            except Exception as exc:  # a defect must not leave the journal undrained
                log.error("spool writer: %s", describe(exc))  # noqa: TRY400 - no values
                time.sleep(1.0)

    def _writer_turn(self) -> bool:
        """One turn of the writer; True when it is done (the node is stopping)."""
        journal = self.journal
        assert journal is not None
        with self._cond:
            self._cond.wait(timeout=self.write_delay_s)
            closing = self._closing
            now = time.monotonic()
            quiet = now - self._last_append >= self.write_delay_s
            full = self._pending_bytes > journal.capacity // 4
            batch: list[_Pending] = []
            if closing or quiet or full:  # items that failed wait for their own time
                batch = [i for i in self._pending if i.retry_at <= now or closing]
                taken = {id(i) for i in batch}
                self._pending = deque(i for i in self._pending if id(i) not in taken)
                self._pending_bytes = sum(i.record.size for i in self._pending)
        failed = [item for item in batch if not self._write_out(item)]
        if failed and not closing:  # the journal keeps them: try again later, less often
            with self._cond:
                for item in failed:
                    item.failures += 1
                    item.retry_at = time.monotonic() + min(60.0, 2.0**item.failures)
                self._pending.extendleft(reversed(failed))
                self._pending_bytes += sum(item.record.size for item in failed)
        idle = time.monotonic() - self._last_append >= self.checkpoint_idle_s
        if self._unsynced and (closing or idle or journal.used() > journal.capacity // 2):
            self._checkpoint(clean=closing)
        elif closing:
            self._checkpoint(clean=True)
        self._publish()
        return closing  # anything not written stays in the journal for the next start

    def status(self) -> dict[str, object]:
        """The journal's state for `uploader status` (no identifiers)."""
        journal = self.journal
        with self._cond:
            waiting = len(self._pending)
            failing = sum(1 for i in self._pending if i.failures)
        return {
            "waiting_for_spool_files": waiting,
            "failing_spool_writes": failing,
            "checkpoints_stopped": self._checkpoints_stopped,
            "retired": bool(journal and journal.retired),
            "used_mb": round((journal.used() if journal else 0) / (1 << 20), 1),
        }

    def _publish(self) -> None:
        """Write the status beside the journal when it changed (read by `uploader status`)."""
        if self.journal is None or time.monotonic() - self._published_at < 1.0:
            return
        state = self.status()
        if state != self._published:
            self._published_at = time.monotonic()
            target = self.journal.folder / "status.json"
            with contextlib.suppress(OSError):  # only a report: never in the way
                target.with_suffix(".tmp").write_text(json.dumps(state))
                target.with_suffix(".tmp").replace(target)
                self._published = state

    def _write_out(self, item: _Pending) -> bool:
        """Write one spool file from the journal; False if the disk refused."""
        journal = self.journal
        assert journal is not None
        try:
            quick_write(item.path, [journal.read(item.record)])
        except OSError as exc:
            if item.failures in (0, 3) or item.failures % 10 == 0:  # not a line per retry
                log.error(  # noqa: TRY400 - expected, no traceback
                    "spool write failed (%d time(s)), the journal keeps it: %s",
                    item.failures + 1,
                    type(exc).__name__,
                )
            return False
        item.record.written = True
        with self._cond:
            self._unsynced.append(item.path)
            self._journaled.discard(item.path)
            self._waiting[item.study_uid] -= 1
            if self._waiting[item.study_uid] <= 0:
                del self._waiting[item.study_uid]
        return True

    def _checkpoint(self, *, clean: bool = False) -> None:
        """fsync the spool files written since the last checkpoint, then checkpoint. If an
        fsync fails, checkpoints stop until the node restarts: a retried fsync can succeed
        without the data having reached the disk, and the journal still holds it."""
        if self.journal is None or self._checkpoints_stopped:
            return
        with self._cond:
            paths, self._unsynced = self._unsynced, []
        seq = self.journal.checkpointable()
        try:
            fsync_files(paths)
        except OSError as exc:
            self._checkpoints_stopped = True
            log.error(  # noqa: TRY400 - expected, no traceback
                "spool fsync failed (%s): the journal keeps everything until a restart",
                type(exc).__name__,
            )
            return
        try:
            self.journal.checkpoint(seq, clean=clean)
        except OSError as exc:
            log.error("journal checkpoint failed, will retry: %s", type(exc).__name__)  # noqa: TRY400 - expected, no traceback

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
        with self._cond:
            journaled = path in self._journaled  # sent again before its spool file is written
        if not path.exists() and not journaled:
            parts = [data] if isinstance(data, bytes) else data
            if not self._journal(header, path, parts, crc, (source, protocol)):
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
        """The first copy's bytes: its spool file, or its journal record if not yet written."""
        with self._cond:
            pending = next((i for i in self._pending if i.path == path), None)
        if pending is not None and self.journal is not None:
            with contextlib.suppress(OSError):
                return self.journal.read(pending.record)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _journal(
        self,
        header: Header,
        path: Path,
        parts: Sequence[bytes | memoryview],
        crc: int | None,
        origin: tuple[str, str | None],
    ) -> bool:
        """Journal the instance and queue its spool file; False: store it the slow way."""
        if self.journal is None or self._thread is None or not self._thread.is_alive():
            return False
        with self._cond:
            if self._stopping:
                return False
            self._inflight += 1
        try:
            meta = {"path": str(path.relative_to(self.spool.root)), "source": origin[0]}
            record = self.journal.append({**meta, "protocol": origin[1]}, parts, crc)
            if record is None:
                return False  # the journal is full until the next checkpoint
            with self._cond:
                self._last_append = time.monotonic()
                self._waiting[header.study_uid] += 1
                self._journaled.add(path)
                self._pending.append(_Pending(record, path, header.study_uid))
                self._pending_bytes += record.size
            return True
        finally:
            with self._cond:
                self._inflight -= 1
                if self._stopping:  # stop() waits for the last one; otherwise let the writer
                    self._cond.notify_all()  # sleep: waking it per instance costs the receiver

    def take_file(self, path: Path, *, source: str, protocol: str | None) -> bool:
        """Store a file from the watched folder (the caller releases it afterwards).

        Raises:
            NotDicomError: not DICOM (the caller quarantines it).
        """
        data = path.read_bytes()
        return self.take_bytes(data, source=source, protocol=protocol)

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
                self.spool.quarantine(path, path.name, "spooled file unreadable at start-up")
                path.unlink()
                continue
            added += self._index(header, path, "rescan", None)
        if added:
            log.warning("start-up rescan indexed %d spooled instance(s)", added)
        return added
