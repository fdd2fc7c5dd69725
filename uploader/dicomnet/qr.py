"""Query/retrieve SCU: C-FIND at study level and C-MOVE to our own SCP (pynetdicom).

A peer's refusal is a value (a status in the result), our misuse raises. Sockets get
TCP_NODELAY once the association is up.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from uploader.errors import RetriableError

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
#: Storage classes offered for C-GET (an association has room for 128 contexts in all).
GET_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",  # PET Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (the node's policy decides)
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
)
_PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class Peer:
    """The PACS and who we are to it."""

    ae_title: str
    host: str
    port: int
    our_ae_title: str


@dataclass(frozen=True)
class Match:
    """One study a C-FIND found (identifiers: hospital side only)."""

    study_uid: str
    patient_id: str
    accession: str
    study_date: str
    modalities: str


@dataclass
class MoveResult:
    """How a C-MOVE ended: the final status and the sub-operation counts."""

    status: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every sub-operation completed."""
        return self.status == 0 and self.failed == 0


@contextmanager
def associate(
    peer: Peer, context: str, storage: tuple[str, ...] = (), handlers: list[Any] | None = None
) -> Iterator[Association]:
    """An association with the PACS for one SOP class (plus storage as SCP, for C-GET).

    Raises:
        RetriableError: the PACS refused or could not be reached.
    """
    from pynetdicom import ALL_TRANSFER_SYNTAXES
    from pynetdicom.presentation import build_role

    ae = AE(ae_title=peer.our_ae_title)
    ae.add_requested_context(context)
    for uid in storage:
        ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES[:4])
    roles = [build_role(uid, scp_role=True) for uid in storage]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = cast(Any, ae).associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        ext_neg=roles or None,
        evt_handlers=handlers or [],
    )
    if not assoc.is_established:
        raise RetriableError(
            f"the PACS {peer.ae_title} at {peer.host}:{peer.port} refused or is down"
        )
    sock = cast(Any, assoc).dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield assoc
    finally:
        assoc.release()


def study_query(
    patient_id: str = "",
    accession: str = "",
    study_date: str = "",
    modality: str = "",
    study_uid: str = "",
) -> Dataset:
    """A study-level C-FIND identifier; empty values are return keys."""
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study_uid
    q.PatientID = patient_id
    q.AccessionNumber = accession
    q.StudyDate = study_date
    q.ModalitiesInStudy = modality
    return q


def find(peer: Peer, query: Dataset) -> list[Match]:
    """Run a study-level C-FIND; return the matches.

    Raises:
        RetriableError: no association, or the PACS ended the find with a failure status.
    """
    found = []
    with associate(peer, FIND) as assoc:
        for status, identifier in assoc.send_c_find(query, FIND):
            code = int(getattr(status, "Status", 0xC000)) if status else 0xC000
            if code in _PENDING and identifier is not None:
                mods = identifier.get("ModalitiesInStudy", "")
                found.append(
                    Match(
                        study_uid=str(identifier.get("StudyInstanceUID", "")),
                        patient_id=str(identifier.get("PatientID", "")),
                        accession=str(identifier.get("AccessionNumber", "")),
                        study_date=str(identifier.get("StudyDate", "")),
                        modalities="\\".join(mods) if isinstance(mods, list) else str(mods),
                    )
                )
            elif code not in (0x0000, *_PENDING):
                raise RetriableError(f"C-FIND ended with status 0x{code:04X}")
    return found


def move(peer: Peer, study_uid: str, destination: str) -> MoveResult:
    """C-MOVE one study to ``destination`` (our SCP's AE title); return the outcome."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with associate(peer, MOVE) as assoc:
        return _outcome(assoc.send_c_move(query, destination, MOVE))


def _outcome(responses: Any) -> MoveResult:
    """Fold a C-MOVE / C-GET response stream into its final status and sub-operation counts."""
    result = MoveResult()
    for status, _identifier in responses:
        if not status:
            result.status = 0xC000
            result.errors.append("no response from the PACS")
            continue
        result.status = int(status.Status)
        result.completed = int(status.get("NumberOfCompletedSuboperations", result.completed))
        result.failed = int(status.get("NumberOfFailedSuboperations", result.failed))
        result.warning = int(status.get("NumberOfWarningSuboperations", result.warning))
    if result.status in _PENDING:
        result.status = 0
    return result


def get(peer: Peer, study_uid: str, store: Callable[[bytes], None]) -> MoveResult:
    """C-GET one study: the PACS sends the instances back on our association to ``store``.

    ``store`` must keep each instance durably before returning; it is answered 0x0000 only then.
    """
    from pynetdicom import evt

    def on_store(event: Any) -> int:
        try:
            store(event.encoded_dataset(include_meta=True))
        except Exception:
            return 0xA700
        return 0x0000

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with associate(peer, GET, GET_STORAGE, [(evt.EVT_C_STORE, on_store)]) as assoc:
        return _outcome(assoc.send_c_get(query, GET))
