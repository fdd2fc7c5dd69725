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

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from uploader.dicom_header import scan, text
from uploader.errors import NotDicomError
from uploader.store.db import Store
from uploader.store.spool import Spool

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
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
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
    """Stores instances durably and indexes them."""

    def __init__(self, store: Store, spool: Spool) -> None:
        self.store = store
        self.spool = spool

    def take_bytes(
        self, data: bytes | Sequence[bytes | memoryview], *, source: str, protocol: str | None
    ) -> bool:
        """Store and index one instance (the file's bytes, or its parts in order: the header
        is then read from the first two, file meta and the start of the data set); return False
        for a duplicate (stored once).

        Raises:
            NotDicomError: the bytes are not a DICOM instance (nothing stored).
            OSError, RetriableError: the disk or database refused (nothing acknowledged).
        """
        header = None
        if not isinstance(data, bytes):
            header = fast_header(b"".join(data[:2])) if len(data) > 2 else None
            data = data if header is not None else b"".join(data)
        if header is None:
            header = read_header(cast(bytes, data))
        path = self.spool.path_for(header.sop_uid)
        if not path.exists():
            self.spool.store(header.sop_uid, data)
        return self._index(header, path, source, protocol)

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
