"""One accepted association of our C-STORE acceptor, from A-ASSOCIATE-RQ to release or abort.

The state machine of the upper layer for the acceptor's side (PS3.8 section 9.2, the states we
can be in: awaiting the request, associated, released or aborted): it reads PDUs with blocking
calls, negotiates with the server's policy, joins a message's fragments and answers C-ECHO
and C-STORE. The bytes are the codec's (:mod:`uploader.dicomnet.pdu`,
:mod:`uploader.dicomnet.dimse`); admission and policy are the server's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from uploader.dicomnet import dimse
from uploader.dicomnet.dimse import CommandField, Tag
from uploader.dicomnet.pdu import (
    Abort,
    AcceptedContext,
    AcseRejectReason,
    AssociateAccept,
    AssociateReject,
    Buffer,
    ContextResult,
    PduError,
    PduType,
    PdvControl,
    PresentationRejectReason,
    RejectResult,
    RejectSource,
    Release,
    UserInformation,
    UserRejectReason,
    command_pdus,
    iter_pdvs,
    parse_associate_rq,
    pdu_header,
)
from uploader.errors import NotDicomError, RetriableError, WithheldError
from uploader.version import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)

MAX_PDU = 1 << 20  # what we accept per PDU (advertised); larger PDUs abort the association
_MAX_REQUEST = 1 << 16  # an A-ASSOCIATE-RQ larger than this is not a real request
_MAX_COMMAND = 1 << 16  # a command set larger than this is not a real one
_MIN_PEER_PDU = 256  # a peer that cannot take a C-STORE response is not a real peer
_FRAGMENT_COST = 256  # bytes a fragment is counted as, at least: empty ones are not free
_REQUEST_WAIT_S = 10.0  # the association request must arrive within this (ARTIM), at most
_MIN_RATE = 1024  # bytes a PDU under way must bring per timeout, or the association ends


@dataclass(frozen=True)
class Received:
    """What the store callable gets for one C-STORE: the file in parts (preamble and file meta,
    then the data set's fragments as received), so that it is written without a copy."""

    parts: tuple[Buffer, ...]
    calling_aet: str
    called_aet: str
    crc32: int  # of the parts in order, computed as they arrived (for the ingest journal)

    @property
    def data(self) -> bytes:
        """The whole file."""
        return b"".join(self.parts)


StoreFn = Callable[[Received], None]


@dataclass
class ScpOptions:
    """What the acceptor offers and to whom."""

    ae_title: str
    allowed_calling: list[str] = field(default_factory=list)  # empty: any
    max_associations: int = 10
    sop_classes: list[str] = field(default_factory=list)  # empty: every storage class
    transfer_syntaxes: list[str] = field(default_factory=list)  # empty: all
    timeout_s: float = 60.0  # silence before an association is aborted; also the time a PDU
    # (and the association request) may take to arrive once begun
    max_instance_bytes: int = 1 << 30  # a larger data set aborts the association


class Admission(Protocol):
    """What an association needs of its server: policy, admission and the store callable."""

    options: ScpOptions
    store: StoreFn

    def negotiate(self, abstract: str, syntaxes: tuple[str, ...]) -> tuple[ContextResult, str]:
        """The result for a proposed presentation context and the transfer syntax."""

    def admit(self, assoc: Association) -> bool:
        """True if the association may proceed (counted as active until ``leave``)."""

    def leave(self, assoc: Association) -> None:
        """The association has ended."""


class AbortError(Exception):
    """The peer broke the protocol or went silent: abort the association."""


class ClosedError(Exception):
    """The peer closed the connection."""


def store_status(store: StoreFn, received: Received) -> int:
    """Call the store callable; map its outcome to a C-STORE status. Statuses: 0x0000 stored
    (durably); 0xA700 out of resources (disk full, database busy: the sender may retry); 0xC000
    not DICOM we can read; 0x0110 any other failure."""
    try:
        store(received)
    except (OSError, RetriableError) as exc:
        log.error("C-STORE refused, storage unavailable: %s", type(exc).__name__)  # noqa: TRY400 - expected, no traceback
        return dimse.OUT_OF_RESOURCES
    except (NotDicomError, WithheldError) as exc:
        log.warning("C-STORE refused: %s", type(exc).__name__)
        return dimse.CANNOT_UNDERSTAND
    except Exception as exc:
        log.exception("C-STORE failed: %s", type(exc).__name__)
        return dimse.PROCESSING_FAILURE
    return dimse.SUCCESS


@dataclass
class _Context:
    abstract_syntax: str
    transfer_syntax: str


@dataclass
class _Message:
    """A DIMSE message being received on one presentation context."""

    context_id: int
    command: list[bytes] = field(default_factory=list)
    fields: dict[int, bytes] | None = None
    meta: bytes = b""  # a C-STORE's file meta, made when its command set is whole
    data: list[Buffer] = field(default_factory=list)
    crc: int = 0  # of meta and data so far
    size: int = 0  # bytes held so far


class Association:
    """One accepted connection, from A-ASSOCIATE-RQ to release or abort."""

    def __init__(self, server: Admission, sock: socket.socket, host: str = "") -> None:
        self.server = server
        self.sock = sock
        self.host = host
        self.calling = ""
        self.called = ""
        self.contexts: dict[int, _Context] = {}
        self.peer_max_pdu = 0
        self.stored = 0

    # -- reading ------------------------------------------------------------------------
    def _read_exact(self, n: int, deadline: float | None) -> memoryview:
        """``n`` bytes: by ``deadline`` (monotonic) if given; else each timeout must bring at
        least ``_MIN_RATE`` bytes (a slow link is fine, a trickle that holds a slot is not)."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        timeout = self.server.options.timeout_s
        window, window_start = 0, time.monotonic()
        while got < n:
            now = time.monotonic()
            if deadline is not None:
                if deadline <= now:
                    raise AbortError("the association request did not arrive in time")
                self.sock.settimeout(min(deadline - now, timeout))
            elif now - window_start >= timeout:
                if window < _MIN_RATE:
                    raise AbortError("the peer sends too slowly")
                window, window_start = 0, now
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError as exc:
                raise AbortError("no data from the peer within the timeout") from exc
            except OSError as exc:
                raise ClosedError from exc
            if k == 0:
                raise ClosedError
            got += k
            window += k
        return view

    def _read_pdu(self, limit: int, *, first: bool = False) -> tuple[int, memoryview]:
        """A whole PDU (the first, the association request, within a short deadline)."""
        timeout = self.server.options.timeout_s
        deadline = time.monotonic() + min(timeout, _REQUEST_WAIT_S) if first else None
        self.sock.settimeout(timeout)
        kind, length = pdu_header(self._read_exact(6, deadline))
        if length > limit:
            raise AbortError(f"PDU of {length} bytes exceeds {limit}")
        body = self._read_exact(length, deadline)
        self.sock.settimeout(timeout)  # for what we send next
        return kind, body

    # -- sending ------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClosedError from exc

    def _send_abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(Abort().encode())

    def _send_command(self, context_id: int, command: bytes) -> None:
        # Each PDU within the peer's maximum (at least _MIN_PEER_PDU: checked at association).
        for pdu in command_pdus(context_id, command, self.peer_max_pdu):
            self._send(pdu)

    # -- association ----------------------------------------------------------------------
    def run(self) -> None:
        """Serve the connection to its end, then close it (never raises)."""
        try:
            if self._associate():
                self._serve()
        except (AbortError, PduError) as exc:
            log.warning("association from %s aborted: %s", self.calling or "?", exc)
            self._send_abort()
        except ClosedError:
            log.info("association from %s: connection closed", self.calling or "?")
        except Exception as exc:  # a defect here must not take the thread down silently
            log.exception("association from %s failed: %s", self.calling or "?", type(exc).__name__)
            self._send_abort()
        finally:
            self.server.leave(self)
            self.sock.close()
        if self.stored:
            log.info("association from %s: %d instance(s) stored", self.calling, self.stored)

    def _reject(self, reject: AssociateReject, why: str) -> bool:
        log.warning("association from %s rejected: %s", self.calling or "?", why)
        self._send(reject.encode())
        return False

    def _associate(self) -> bool:
        """Negotiate; return True once accepted (False: rejected)."""
        kind, body = self._read_pdu(_MAX_REQUEST, first=True)
        if kind != PduType.ASSOCIATE_RQ:
            raise AbortError("expected an A-ASSOCIATE-RQ")
        request = parse_associate_rq(body)
        self.called = request.called_ae
        self.calling = request.calling_ae
        opts = self.server.options
        permanent, user = RejectResult.PERMANENT, RejectSource.SERVICE_USER
        if not request.protocol_version & 1:
            return self._reject(
                AssociateReject(
                    permanent,
                    RejectSource.SERVICE_PROVIDER_ACSE,
                    AcseRejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
                ),
                "protocol version not supported",
            )
        if request.application_context != dimse.APPLICATION_CONTEXT:
            return self._reject(
                AssociateReject(
                    permanent, user, UserRejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED
                ),
                "application context not supported",
            )
        if opts.allowed_calling and self.calling not in opts.allowed_calling:
            return self._reject(
                AssociateReject(permanent, user, UserRejectReason.CALLING_AE_NOT_RECOGNIZED),
                "calling AE title not allowed",
            )
        if not self.server.admit(self):
            return self._reject(
                AssociateReject(
                    RejectResult.TRANSIENT,
                    RejectSource.SERVICE_PROVIDER_PRESENTATION,
                    PresentationRejectReason.LOCAL_LIMIT_EXCEEDED,
                ),
                "too many associations",
            )
        self.peer_max_pdu = request.user.max_pdu_length
        if 0 < self.peer_max_pdu < _MIN_PEER_PDU:
            raise AbortError(f"the peer's maximum PDU length {self.peer_max_pdu} is too small")
        accepted = []
        for cx in request.contexts:
            result, chosen = self.server.negotiate(cx.abstract_syntax, cx.transfer_syntaxes)
            if result == ContextResult.ACCEPTANCE:
                self.contexts[cx.context_id] = _Context(cx.abstract_syntax, chosen)
            accepted.append(AcceptedContext(cx.context_id, result, chosen))
        accept = AssociateAccept(
            1,
            request.titles,
            dimse.APPLICATION_CONTEXT,
            tuple(accepted),
            UserInformation(MAX_PDU, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME),
        )
        self._send(accept.encode())
        return True

    def _serve(self) -> None:
        message: _Message | None = None
        while True:
            kind, body = self._read_pdu(MAX_PDU + 1024)  # some peers overshoot a little
            if kind == PduType.P_DATA_TF:
                message = self._p_data(body, message)
            elif kind == PduType.RELEASE_RQ:
                self._send(Release(reply=True).encode())
                return
            elif kind == PduType.ABORT:
                log.warning("association from %s aborted by the peer", self.calling)
                return
            else:
                raise AbortError(f"unexpected PDU type {kind}")

    def _p_data(self, body: memoryview, message: _Message | None) -> _Message | None:
        for pdv in iter_pdvs(body):
            if pdv.context_id not in self.contexts:
                raise AbortError(f"presentation context {pdv.context_id} was not accepted")
            if message is None:
                message = _Message(pdv.context_id)
            elif message.context_id != pdv.context_id:
                raise AbortError("a message switched presentation context")
            if self._fragment(message, pdv.fragment, pdv.control):
                self._dispatch(message)
                message = None
        return message

    def _fragment(self, message: _Message, fragment: Buffer, control: int) -> bool:
        """Add a PDV's fragment to the message; return True when the message is whole."""
        if control & PdvControl.COMMAND:
            if message.fields is not None:
                raise AbortError("command fragment after the command set")
            message.command.append(bytes(fragment))
            message.size += max(len(fragment), _FRAGMENT_COST)
            if message.size > _MAX_COMMAND:
                raise AbortError("a command set larger than 64 KiB")
            if not control & PdvControl.LAST:
                return False
            fields = message.fields = dimse.parse_command(b"".join(message.command))
            if dimse.us(fields.get(Tag.COMMAND_FIELD)) == CommandField.C_STORE_RQ:
                message.meta = dimse.file_meta(
                    dimse.uid_text(fields.get(Tag.AFFECTED_SOP_CLASS_UID)),
                    dimse.uid_text(fields.get(Tag.AFFECTED_SOP_INSTANCE_UID)),
                    self.contexts[message.context_id].transfer_syntax,
                    self.calling,
                )
                message.crc = zlib.crc32(message.meta)
            return dimse.us(fields.get(Tag.COMMAND_DATA_SET_TYPE)) == dimse.NO_DATA_SET
        if message.fields is None:
            raise AbortError("data set fragment before the command set")
        message.size += max(len(fragment), _FRAGMENT_COST)
        if message.size > self.server.options.max_instance_bytes:
            raise AbortError("a data set larger than the configured maximum")
        message.data.append(fragment)  # a view of this PDU's own buffer
        message.crc = zlib.crc32(fragment, message.crc)  # while the next PDU is on its way
        return bool(control & PdvControl.LAST)

    def _dispatch(self, message: _Message) -> None:
        fields = message.fields or {}
        command = dimse.us(fields.get(Tag.COMMAND_FIELD))
        if command < 0:
            raise AbortError("a command set without a command field")
        msg_id = fields.get(Tag.MESSAGE_ID, b"\0\0")
        context = self.contexts[message.context_id]
        if command == CommandField.C_CANCEL_RQ:
            return
        status = dimse.UNRECOGNIZED_OPERATION
        if command == CommandField.C_ECHO_RQ:
            status = dimse.SUCCESS
        elif command == CommandField.C_STORE_RQ:
            status = self._store(context, message)
        reply = [
            (Tag.COMMAND_FIELD, struct.pack("<H", (command | dimse.RESPONSE_BIT) & 0xFFFF)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, msg_id),
            (Tag.COMMAND_DATA_SET_TYPE, struct.pack("<H", dimse.NO_DATA_SET)),
            (Tag.STATUS, struct.pack("<H", status)),
        ]
        for tag in (Tag.AFFECTED_SOP_CLASS_UID, Tag.AFFECTED_SOP_INSTANCE_UID):
            if tag in fields:
                reply.append((tag, fields[tag]))
        self._send_command(message.context_id, dimse.encode_command(reply))

    def _store(self, context: _Context, message: _Message) -> int:
        sop_class = dimse.text((message.fields or {}).get(Tag.AFFECTED_SOP_CLASS_UID))
        if sop_class != context.abstract_syntax or context.abstract_syntax == dimse.VERIFICATION:
            return dimse.SOP_CLASS_NOT_SUPPORTED
        received = Received((message.meta, *message.data), self.calling, self.called, message.crc)
        status = store_status(self.server.store, received)
        if status == dimse.SUCCESS:
            self.stored += 1
        return status
