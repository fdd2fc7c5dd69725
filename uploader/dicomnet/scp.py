"""A C-STORE SCP that answers Success only once the instance is durable.

pynetdicom's acceptor (three threads and two polling loops per association, a pydicom data set
per command) reaches a quarter of dcmtk storescp's rate here, so the node receives with this
purpose-built acceptor of the DICOM upper layer (PS3.8) for the two services it offers:
Storage (C-STORE) and Verification (C-ECHO). pynetdicom stays our query/retrieve SCU.

Three rooms: the codec (:mod:`~uploader.dicomnet.pdu` for PDUs, :mod:`~uploader.dicomnet.dimse`
for command sets and file meta; pure, no sockets), the association
(:mod:`~uploader.dicomnet.association`, one thread per connection: the state machine) and this
module, the server: it listens, admits connections, holds the negotiation policy and stops.

A C-STORE's data set fragments are joined once, preceded by file meta information, and given
to the ``store`` callable (dependency injection): it must write the bytes durably and index
them, and return normally, or raise. Every outcome maps to a named status. Sockets get
TCP_NODELAY: without it every file stalls ~44 ms on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from uploader.dicomnet.association import (
    Association,
    Received,
    ScpOptions,
    StoreFn,
    store_status,
)
from uploader.dicomnet.dimse import (
    CANNOT_UNDERSTAND,
    IMPLICIT_VR_LE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    VERIFICATION,
)
from uploader.dicomnet.pdu import ContextResult

__all__ = [
    "CANNOT_UNDERSTAND",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "SUCCESS",
    "UNRECOGNIZED_OPERATION",
    "Received",
    "ScpOptions",
    "StoreFn",
    "StoreServer",
    "default_sop_classes",
    "default_transfer_syntaxes",
    "start_scp",
    "store_status",
]

log = logging.getLogger(__name__)

_WAITING_PER_HOST = 4  # connections one host may hold before its association request


def default_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows (the default when none are configured)."""
    from pynetdicom import AllStoragePresentationContexts

    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


def default_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pynetdicom knows (compressed ones are stored as received)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    return [str(ts) for ts in ALL_TRANSFER_SYNTAXES]


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
        self._active: set[Association] = set()  # negotiated associations
        self._connections: dict[Association, threading.Thread] = {}
        self._stopping = threading.Event()
        self._listener = socket.create_server((host, port))
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name="scp-accept", daemon=True)
        self._thread.start()

    def negotiate(self, abstract: str, syntaxes: tuple[str, ...]) -> tuple[ContextResult, str]:
        """The result (accepted, abstract syntax or transfer syntaxes not supported) and the
        transfer syntax: the first the requestor proposed that we accept."""
        if abstract not in self._classes:
            return ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, (
                syntaxes[0] if syntaxes else IMPLICIT_VR_LE
            )
        wanted = self._syntaxes if abstract != VERIFICATION else self._syntaxes | {IMPLICIT_VR_LE}
        for ts in syntaxes:
            if ts in wanted:
                return ContextResult.ACCEPTANCE, ts
        return ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, (
            syntaxes[0] if syntaxes else IMPLICIT_VR_LE
        )

    def admit(self, assoc: Association) -> bool:
        """True (and counted as active) unless the server is full or stopping."""
        with self._lock:
            if len(self._active) >= self.options.max_associations or self._stopping.is_set():
                return False
            self._active.add(assoc)
            return True

    def leave(self, assoc: Association) -> None:
        """Forget an association that has ended."""
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
        assoc = Association(self, conn, host)
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
