"""A C-STORE SCP that answers Success only once the instance is durable.

pynetdicom's acceptor (three threads and two polling loops per association, a pydicom data set
per command) reaches a quarter of dcmtk storescp's rate here, so the node receives with this
purpose-built acceptor of the DICOM upper layer (PS3.8) for the two services it offers:
Storage (C-STORE) and Verification (C-ECHO). pynetdicom stays our query/retrieve SCU.

One thread per association reads PDUs with blocking calls; a C-STORE's data set fragments are
joined once, preceded by file meta information built here, and given to the ``store`` callable
(dependency injection): it must write the bytes durably and index them, and return normally, or
raise. Every outcome maps to a named status. Sockets get TCP_NODELAY: without it every file
stalls ~44 ms on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from uploader.errors import NotDicomError, RetriableError, WithheldError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
PROCESSING_FAILURE = 0x0110  # Failure: Processing failure
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported
UNRECOGNIZED_OPERATION = 0x0211  # Refused: Unrecognized operation

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# Our implementation class UID (a 2.25 UUID-derived root made once for this product).
IMPLEMENTATION_CLASS_UID = "2.25.207426181543870383302773931298716632741"
IMPLEMENTATION_VERSION = "UPLOADER_1"

_C_STORE_RQ = 0x0001
_C_ECHO_RQ = 0x0030
_C_CANCEL_RQ = 0x0FFF
_NO_DATA_SET = 0x0101
_MAX_PDU = 1 << 20  # what we accept per PDU (advertised); larger PDUs abort the association
_MAX_REQUEST = 1 << 16  # an A-ASSOCIATE-RQ larger than this is not a real request
_MAX_COMMAND = 1 << 16  # a command set larger than this is not a real one
_MIN_PEER_PDU = 256  # a peer that cannot take a C-STORE response is not a real peer
_FRAGMENT_COST = 256  # bytes a fragment is counted as, at least: empty ones are not free
_REQUEST_WAIT_S = 10.0  # the association request must arrive within this (ARTIM), at most
_MIN_RATE = 1024  # bytes a PDU under way must bring per timeout, or the association ends
_WAITING_PER_HOST = 4  # connections one host may hold before its association request


Buffer = bytes | memoryview


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


def default_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows (the default when none are configured)."""
    from pynetdicom import AllStoragePresentationContexts

    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


def default_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pynetdicom knows (compressed ones are stored as received)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    return [str(ts) for ts in ALL_TRANSFER_SYNTAXES]


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


class _AbortError(Exception):
    """The peer broke the protocol or went silent: abort the association."""


class _ClosedError(Exception):
    """The peer closed the connection."""


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxI", kind, len(body)) + body


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """An explicit VR little endian element (file meta information)."""
    if vr in (b"OB", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sxxI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str) -> bytes:
    """Preamble, ``DICM`` and the group 0002 of a Part 10 file for a received data set."""
    ae = source_aet.encode("ascii", "replace")
    body = b"".join(
        [
            _element(2, 0x0001, b"OB", b"\x00\x01"),
            _element(2, 0x0002, b"UI", _uid(sop_class)),
            _element(2, 0x0003, b"UI", _uid(sop_instance)),
            _element(2, 0x0010, b"UI", _uid(transfer_syntax)),
            _element(2, 0x0012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
            _element(2, 0x0013, b"SH", IMPLEMENTATION_VERSION.encode()),
            _element(2, 0x0016, b"AE", ae + b" " * (len(ae) % 2)),
        ]
    )
    return b"\0" * 128 + b"DICM" + _element(2, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def parse_command(data: bytes) -> dict[int, bytes]:
    """A command set (implicit VR little endian, group 0000): element number -> raw value."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            raise _AbortError("malformed command set")
        out[elem] = data[pos : pos + length]
        pos += length
    return out


def _items(data: memoryview) -> list[tuple[int, memoryview]]:
    """The items of an A-ASSOCIATE-RQ's variable field (or of an item): (type, value)."""
    out: list[tuple[int, memoryview]] = []
    pos = 0
    while pos + 4 <= len(data):
        kind, length = data[pos], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if pos + 4 + length > len(data):
            raise _AbortError("truncated A-ASSOCIATE-RQ item")
        out.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _text(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace")


def _uid_text(value: bytes | None) -> str:
    """A UID of the command set; a peer that sends anything but a UID breaks the protocol."""
    text = (value or b"").rstrip(b"\0 ").decode("ascii", "replace")
    if not text or len(text) > 64 or any(c not in "0123456789." for c in text):
        raise _AbortError("a command set with an invalid UID")
    return text


def _us(value: bytes | None) -> int:
    return struct.unpack("<H", value)[0] if value and len(value) == 2 else -1


def encode_command(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A command set from (element, value) pairs, with its group length."""
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


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
    data: list[memoryview] = field(default_factory=list)
    crc: int = 0  # of meta and data so far
    size: int = 0  # bytes held so far


class _Association:
    """One accepted connection, from A-ASSOCIATE-RQ to release or abort."""

    def __init__(self, server: StoreServer, sock: socket.socket, host: str = "") -> None:
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
                    raise _AbortError("the association request did not arrive in time")
                self.sock.settimeout(min(deadline - now, timeout))
            elif now - window_start >= timeout:
                if window < _MIN_RATE:
                    raise _AbortError("the peer sends too slowly")
                window, window_start = 0, now
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError as exc:
                raise _AbortError("no data from the peer within the timeout") from exc
            except OSError as exc:
                raise _ClosedError from exc
            if k == 0:
                raise _ClosedError
            got += k
            window += k
        return view

    def _read_pdu(self, limit: int, *, first: bool = False) -> tuple[int, memoryview]:
        """A whole PDU (the first, the association request, within a short deadline)."""
        timeout = self.server.options.timeout_s
        deadline = time.monotonic() + min(timeout, _REQUEST_WAIT_S) if first else None
        self.sock.settimeout(timeout)
        head = self._read_exact(6, deadline)
        kind, length = head[0], struct.unpack(">I", head[2:6])[0]
        if length > limit:
            raise _AbortError(f"PDU of {length} bytes exceeds {limit}")
        body = self._read_exact(length, deadline)
        self.sock.settimeout(timeout)  # for what we send next
        return kind, body

    # -- sending ------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _ClosedError from exc

    def _send_abort(self, source: int = 2, reason: int = 0) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(_pdu(7, struct.pack(">xxBB", source, reason)))

    def _send_command(self, context_id: int, command: bytes) -> None:
        # PDV length = control header + context id + fragment; respect the peer's maximum
        # (at least _MIN_PEER_PDU: checked at association).
        room = (self.peer_max_pdu or len(command) + 6) - 6
        chunks = [command[i : i + room] for i in range(0, len(command), room)] or [b""]
        for i, chunk in enumerate(chunks):
            control = 0x03 if i == len(chunks) - 1 else 0x01
            pdv = struct.pack(">IBB", len(chunk) + 2, context_id, control) + chunk
            self._send(_pdu(4, pdv))

    # -- association ----------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self._associate():
                self._serve()
        except _AbortError as exc:
            log.warning("association from %s aborted: %s", self.calling or "?", exc)
            self._send_abort()
        except _ClosedError:
            log.info("association from %s: connection closed", self.calling or "?")
        except Exception as exc:  # a defect here must not take the thread down silently
            log.exception("association from %s failed: %s", self.calling or "?", type(exc).__name__)
            self._send_abort()
        finally:
            self.server.leave(self)
            self.sock.close()
        if self.stored:
            log.info("association from %s: %d instance(s) stored", self.calling, self.stored)

    def _reject(self, result: int, source: int, reason: int, why: str) -> bool:
        log.warning("association from %s rejected: %s", self.calling or "?", why)
        self._send(_pdu(3, struct.pack(">xBBB", result, source, reason)))
        return False

    def _associate(self) -> bool:
        """Negotiate; return True once accepted (False: rejected)."""
        kind, body = self._read_pdu(_MAX_REQUEST, first=True)
        if kind != 1 or len(body) < 68:
            raise _AbortError("expected an A-ASSOCIATE-RQ")
        version = struct.unpack(">H", body[0:2])[0]
        self.called = bytes(body[4:20]).decode("ascii", "replace").strip()
        self.calling = bytes(body[20:36]).decode("ascii", "replace").strip()
        app_context, proposed, user = self._parse_request(body[68:])
        opts = self.server.options
        if not version & 1:
            return self._reject(1, 2, 2, "protocol version not supported")
        if app_context != APPLICATION_CONTEXT:
            return self._reject(1, 1, 2, "application context not supported")
        if opts.allowed_calling and self.calling not in opts.allowed_calling:
            return self._reject(1, 1, 3, "calling AE title not allowed")
        if not self.server.admit(self):
            return self._reject(2, 3, 2, "too many associations")
        self.peer_max_pdu = user.get(0x51, 0)
        if 0 < self.peer_max_pdu < _MIN_PEER_PDU:
            raise _AbortError(f"the peer's maximum PDU length {self.peer_max_pdu} is too small")
        items = [_item(0x10, APPLICATION_CONTEXT.encode())]
        for context_id, abstract, syntaxes in proposed:
            result, chosen = self.server.negotiate(abstract, syntaxes)
            if result == 0:
                self.contexts[context_id] = _Context(abstract, chosen)
            sub = _item(0x40, chosen.encode())
            items.append(_item(0x21, struct.pack(">BxBx", context_id, result) + sub))
        info = (
            _item(0x51, struct.pack(">I", _MAX_PDU))
            + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
            + _item(0x55, IMPLEMENTATION_VERSION.encode())
        )
        items.append(_item(0x50, info))
        head = struct.pack(">HH", 1, 0) + bytes(body[4:68])
        self._send(_pdu(2, head + b"".join(items)))
        return True

    @staticmethod
    def _parse_request(
        data: memoryview,
    ) -> tuple[str, list[tuple[int, str, list[str]]], dict[int, int]]:
        app_context = ""
        proposed: list[tuple[int, str, list[str]]] = []
        user: dict[int, int] = {}
        for kind, value in _items(data):
            if kind == 0x10:
                app_context = _text(bytes(value))
            elif kind == 0x20:
                if len(value) < 4:
                    raise _AbortError("truncated presentation context")
                subs = _items(value[4:])
                abstract = next((_text(bytes(v)) for k, v in subs if k == 0x30), "")
                syntaxes = [_text(bytes(v)) for k, v in subs if k == 0x40]
                proposed.append((value[0], abstract, syntaxes))
            elif kind == 0x50:
                for sub, v in _items(value):
                    if sub == 0x51 and len(v) == 4:
                        user[0x51] = struct.unpack(">I", v)[0]
        return app_context, proposed, user

    def _serve(self) -> None:
        message: _Message | None = None
        while True:
            kind, body = self._read_pdu(_MAX_PDU + 1024)  # some peers overshoot a little
            if kind == 4:
                message = self._p_data(body, message)
            elif kind == 5:
                self._send(_pdu(6, b"\0\0\0\0"))
                return
            elif kind == 7:
                log.warning("association from %s aborted by the peer", self.calling)
                return
            else:
                raise _AbortError(f"unexpected PDU type {kind}")

    def _p_data(self, body: memoryview, message: _Message | None) -> _Message | None:
        pos = 0
        while pos < len(body):
            if pos + 6 > len(body):
                raise _AbortError("truncated PDV")
            length, context_id, control = struct.unpack(">IBB", body[pos : pos + 6])
            if length < 2 or pos + 4 + length > len(body):
                raise _AbortError("PDV length out of range")
            fragment = body[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if context_id not in self.contexts:
                raise _AbortError(f"presentation context {context_id} was not accepted")
            if message is None:
                message = _Message(context_id)
            elif message.context_id != context_id:
                raise _AbortError("a message switched presentation context")
            if self._fragment(message, fragment, control):
                self._dispatch(message)
                message = None
        return message

    def _fragment(self, message: _Message, fragment: memoryview, control: int) -> bool:
        """Add a PDV's fragment to the message; return True when the message is whole."""
        if control & 1:  # command
            if message.fields is not None:
                raise _AbortError("command fragment after the command set")
            message.command.append(bytes(fragment))
            message.size += max(len(fragment), _FRAGMENT_COST)
            if message.size > _MAX_COMMAND:
                raise _AbortError("a command set larger than 64 KiB")
            if not control & 2:
                return False
            fields = message.fields = parse_command(b"".join(message.command))
            if _us(fields.get(0x0100)) == _C_STORE_RQ:
                message.meta = file_meta(
                    _uid_text(fields.get(0x0002)),
                    _uid_text(fields.get(0x1000)),
                    self.contexts[message.context_id].transfer_syntax,
                    self.calling,
                )
                message.crc = zlib.crc32(message.meta)
            return _us(fields.get(0x0800)) == _NO_DATA_SET
        if message.fields is None:
            raise _AbortError("data set fragment before the command set")
        message.size += max(len(fragment), _FRAGMENT_COST)
        if message.size > self.server.options.max_instance_bytes:
            raise _AbortError("a data set larger than the configured maximum")
        message.data.append(fragment)  # a view of this PDU's own buffer
        message.crc = zlib.crc32(fragment, message.crc)  # while the next PDU is on its way
        return bool(control & 2)

    def _dispatch(self, message: _Message) -> None:
        fields = message.fields or {}
        command = _us(fields.get(0x0100))
        if command < 0:
            raise _AbortError("a command set without a command field")
        msg_id = fields.get(0x0110, b"\0\0")
        context = self.contexts[message.context_id]
        if command == _C_CANCEL_RQ:
            return
        status = UNRECOGNIZED_OPERATION
        if command == _C_ECHO_RQ:
            status = SUCCESS
        elif command == _C_STORE_RQ:
            status = self._store(context, message)
        reply = [
            (0x0100, struct.pack("<H", (command | 0x8000) & 0xFFFF)),
            (0x0120, msg_id),
            (0x0800, struct.pack("<H", _NO_DATA_SET)),
            (0x0900, struct.pack("<H", status)),
        ]
        if 0x0002 in fields:
            reply.append((0x0002, fields[0x0002]))
        if 0x1000 in fields:
            reply.append((0x1000, fields[0x1000]))
        self._send_command(message.context_id, encode_command(reply))

    def _store(self, context: _Context, message: _Message) -> int:
        sop_class = _text((message.fields or {}).get(0x0002))
        if sop_class != context.abstract_syntax or context.abstract_syntax == VERIFICATION:
            return SOP_CLASS_NOT_SUPPORTED
        received = Received((message.meta, *message.data), self.calling, self.called, message.crc)
        return store_status(self.server.store, received)


def store_status(store: StoreFn, received: Received) -> int:
    """Call the store callable; map its outcome to a C-STORE status. Statuses: 0x0000 stored
    (durably); 0xA700 out of resources (disk full, database busy: the sender may retry); 0xC000
    not DICOM we can read; 0x0110 any other failure."""
    try:
        store(received)
    except (OSError, RetriableError) as exc:
        log.error("C-STORE refused, storage unavailable: %s", type(exc).__name__)  # noqa: TRY400 - expected, no traceback
        return OUT_OF_RESOURCES
    except (NotDicomError, WithheldError) as exc:
        log.warning("C-STORE refused: %s", type(exc).__name__)
        return CANNOT_UNDERSTAND
    except Exception as exc:
        log.exception("C-STORE failed: %s", type(exc).__name__)
        return PROCESSING_FAILURE
    return SUCCESS


class StoreServer:
    """Listens, accepts associations (each in its own thread), and stops on ``shutdown()``.

    Connections are capped at twice ``max_associations`` from the moment they are accepted
    (the others are closed at once), so that silent connections cannot pile up threads, and one
    host may hold at most four connections that have not yet asked for an association (which
    must come within 10 s), so that one host cannot lock the others out.
    """

    def __init__(self, options: ScpOptions, host: str, port: int, store: StoreFn) -> None:
        self.options = options
        self.store = store
        self._classes = set(options.sop_classes or default_sop_classes()) | {VERIFICATION}
        self._syntaxes = set(options.transfer_syntaxes or default_transfer_syntaxes())
        self._lock = threading.Lock()
        self._active: set[_Association] = set()  # negotiated associations
        self._connections: dict[_Association, threading.Thread] = {}
        self._stopping = threading.Event()
        self._listener = socket.create_server((host, port))
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name="scp-accept", daemon=True)
        self._thread.start()

    def negotiate(self, abstract: str, syntaxes: list[str]) -> tuple[int, str]:
        """Result (0 accepted, 3 abstract syntax or 4 transfer syntaxes not supported) and the
        transfer syntax: the first the requestor proposed that we accept."""
        if abstract not in self._classes:
            return 3, syntaxes[0] if syntaxes else IMPLICIT_VR_LE
        wanted = self._syntaxes if abstract != VERIFICATION else self._syntaxes | {IMPLICIT_VR_LE}
        for ts in syntaxes:
            if ts in wanted:
                return 0, ts
        return 4, syntaxes[0] if syntaxes else IMPLICIT_VR_LE

    def admit(self, assoc: _Association) -> bool:
        with self._lock:
            if len(self._active) >= self.options.max_associations or self._stopping.is_set():
                return False
            self._active.add(assoc)
            return True

    def leave(self, assoc: _Association) -> None:
        with self._lock:
            self._active.discard(assoc)
            self._connections.pop(assoc, None)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, address = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    break
                time.sleep(0.1)  # out of descriptors, say: keep listening
                continue
            try:
                self._start(conn, address)
            except Exception as exc:  # no thread to be had: refuse this one, keep listening
                log.error("connection refused: %s", type(exc).__name__)  # noqa: TRY400 - expected, no traceback
                conn.close()

    def _start(self, conn: socket.socket, address: tuple[str, int]) -> None:
        host = address[0]
        with self._lock:
            full = len(self._connections) >= 2 * self.options.max_associations
            waiting = sum(1 for a in self._connections if a.host == host and a not in self._active)
        if full or waiting >= _WAITING_PER_HOST:  # silent connections from one host: capped
            log.warning("connection refused: too many connections")
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.options.timeout_s)
        assoc = _Association(self, conn, host)
        thread = threading.Thread(target=assoc.run, name="scp-association", daemon=True)
        with self._lock:
            self._connections[assoc] = thread
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._connections.pop(assoc, None)
            raise

    def alive(self) -> bool:
        """True while the server accepts connections (its accept thread runs)."""
        return self._thread.is_alive() and not self._stopping.is_set()

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Stop listening; end every connection (an instance being stored is finished first:
        its sender sees the connection close and sends it again if it got no answer). Waits at
        most ``wait_s`` in all."""
        deadline = time.monotonic() + wait_s
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=wait_s)
        with self._lock:
            connections = list(self._connections.items())
        for assoc, _thread in connections:
            with contextlib.suppress(OSError):
                assoc.sock.shutdown(socket.SHUT_RD)
        for _assoc, thread in connections:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def start_scp(options: ScpOptions, host: str, port: int, store: StoreFn) -> StoreServer:
    """Start serving in background threads; return the server (``.shutdown()`` to stop)."""
    return StoreServer(options, host, port, store)
