"""A C-STORE SCP that answers Success only once the instance is durable.

The handler is given a ``store`` callable (dependency injection): it must write the bytes
durably and index them, and return normally, or raise. Every outcome maps to a named status;
handlers never raise into pynetdicom. Sockets get TCP_NODELAY: without it every file stalls
~44 ms on loopback.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from uploader.errors import NotDicomError, RetriableError, WithheldError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
PROCESSING_FAILURE = 0x0110  # Failure: Processing failure


@dataclass(frozen=True)
class Received:
    """What the store callable gets for one C-STORE."""

    data: bytes  # the whole file: preamble, file meta, data set (as received)
    calling_aet: str
    called_aet: str


StoreFn = Callable[[Received], None]


class NoDelayServer(ThreadedAssociationServer):
    """The association server, with TCP_NODELAY on every accepted connection."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def _handle_store(event: Any, store: StoreFn) -> int:
    """Handle a C-STORE request. Statuses: 0x0000 stored (durably); 0xA700 out of resources
    (disk full, database busy: the sender may retry); 0xC000 not DICOM we can read;
    0x0110 any other failure."""
    try:
        data = event.encoded_dataset(include_meta=True)
        requestor = event.assoc.requestor
        called = (
            getattr(requestor.primitive, "called_ae_title", "") or event.assoc.acceptor.ae_title
        )
        store(Received(data, requestor.ae_title.strip(), str(called).strip()))
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


def make_ae(
    ae_title: str,
    allowed_calling: list[str],
    max_associations: int,
    sop_classes: list[str] | None = None,
    transfer_syntaxes: list[str] | None = None,
) -> AE:
    """An AE accepting storage (every class and syntax unless lists are given), and C-ECHO."""
    ae = AE(ae_title=ae_title)
    classes = sop_classes or [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    for uid in classes:
        ae.add_supported_context(uid, transfer_syntaxes or ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(allowed_calling)
    ae.maximum_associations = max_associations
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    return ae


def start_scp(ae: AE, host: str, port: int, store: StoreFn) -> ThreadedAssociationServer:
    """Start serving in background threads; return the server (``.shutdown()`` to stop)."""
    handlers: list[Any] = [(evt.EVT_C_STORE, _handle_store, [store])]
    server = cast(Any, ae).make_server(
        (host, port), evt_handlers=handlers, server_class=NoDelayServer
    )
    thread = threading.Thread(target=server.serve_forever, name="scp-acceptor", daemon=True)
    thread.start()
    cast(Any, ae)._servers.append(
        server
    )  # so that server.shutdown() finds it, as pynetdicom expects
    return cast(ThreadedAssociationServer, server)
