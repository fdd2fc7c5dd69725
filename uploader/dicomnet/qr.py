"""Query/retrieve SCU: C-FIND at study level and C-MOVE to our own SCP (pynetdicom).

A peer's refusal is a value (a status in the result), our misuse raises. Sockets get
TCP_NODELAY once the association is up. A ``Cancel`` given to ``find``, ``move`` or ``get`` ends
their associations at once when it is set (a node stopping while the PACS has not answered), from
the moment the connection opens, even before the PACS accepts the association.
"""

from __future__ import annotations

import contextlib
import socket
import threading
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


class QueryCancelledError(RetriableError):
    """A query or retrieval was cancelled before it ended: it did not happen, ask again."""


class Cancel:
    """Cancels the associations it is given: setting it shuts their sockets, so pynetdicom's
    threads (waiting for the PACS's answer for up to its timeouts) end at once."""

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._live: set[Any] = set()

    def is_set(self) -> bool:
        """Whether it has been set."""
        return self._set

    def set(self) -> None:
        """Cancel every live association, and every one started from now on."""
        with self._lock:
            self._set = True
            live = list(self._live)
        for assoc in live:
            _shut(assoc)

    def check(self) -> None:
        """Raises:
        QueryCancelledError: it has been set.
        """
        if self._set:
            raise QueryCancelledError("cancelled: the node is stopping")

    def opened(self, event: Any) -> None:
        """pynetdicom's EVT_CONN_OPEN handler (in its thread): the association is live."""
        with self._lock:
            self._live.add(event.assoc)
            cancelled = self._set
        if cancelled:
            _shut(event.assoc)

    def closed(self, assoc: Any) -> None:
        """The association has ended."""
        with self._lock:
            self._live.discard(assoc)


def _shut(assoc: Any) -> None:
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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
    peer: Peer,
    context: str,
    storage: tuple[str, ...] = (),
    handlers: list[Any] | None = None,
    cancel: Cancel | None = None,
) -> Iterator[Association]:
    """An association with the PACS for one SOP class (plus storage as SCP, for C-GET).

    Raises:
        RetriableError: the PACS refused or could not be reached.
        QueryCancelledError: ``cancel`` was set before or while it ran (checked again at its end).
    """
    from pynetdicom import ALL_TRANSFER_SYNTAXES, evt
    from pynetdicom.presentation import build_role

    cancel = cancel or Cancel()  # none given: one never set
    cancel.check()
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
        evt_handlers=[*(handlers or []), (evt.EVT_CONN_OPEN, cancel.opened)],
    )
    try:
        cancel.check()
        if not assoc.is_established:
            raise RetriableError(
                f"the PACS {peer.ae_title} at {peer.host}:{peer.port} refused or is down"
            )
        sock = cast(Any, assoc).dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            yield assoc
        except RetriableError:
            cancel.check()  # a failure because the socket was shut is the cancel
            raise
        finally:
            if cancel.is_set():
                assoc.abort()  # its socket is shut: a release would wait for an answer
            else:
                assoc.release()
        cancel.check()  # what it answered may be cut short: it did not happen
    finally:
        cancel.closed(assoc)


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


def find(peer: Peer, query: Dataset, cancel: Cancel | None = None) -> list[Match]:
    """Run a study-level C-FIND; return the matches.

    Raises:
        RetriableError: no association, or the PACS ended the find with a failure status.
        QueryCancelledError: ``cancel`` was set.
    """
    found = []
    with associate(peer, FIND, cancel=cancel) as assoc:
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


def move(peer: Peer, study_uid: str, destination: str, cancel: Cancel | None = None) -> MoveResult:
    """C-MOVE one study to ``destination`` (our SCP's AE title); return the outcome.

    Raises:
        RetriableError: no association.
        QueryCancelledError: ``cancel`` was set.
    """
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with associate(peer, MOVE, cancel=cancel) as assoc:
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


def get(
    peer: Peer, study_uid: str, store: Callable[[bytes], None], cancel: Cancel | None = None
) -> MoveResult:
    """C-GET one study: the PACS sends the instances back on our association to ``store``.

    ``store`` must keep each instance durably before returning; it is answered 0x0000 only then.

    Raises:
        RetriableError: no association.
        QueryCancelledError: ``cancel`` was set.
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
    handlers = [(evt.EVT_C_STORE, on_store)]
    with associate(peer, GET, GET_STORAGE, handlers, cancel) as assoc:
        return _outcome(assoc.send_c_get(query, GET))
