"""TLS failures are told apart: a certificate we do not trust is refused for good; a connection
broken off during the handshake (the repository restarting) is worth retrying."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from uploader.errors import PermanentError, RetriableError
from uploader.transport.stowrs import StowClient

from .peers import make_cert


@contextmanager
def tls_server(cert: Path, *, break_off: bool) -> Iterator[int]:
    """Accepts connections: completes the handshake with ``cert`` (then closes), or closes
    in the middle of the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_suffix(".key"))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                if break_off:
                    conn.recv(65536)  # the client's hello, then gone (an EOF in the handshake)
                    continue
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(100)
                except (ssl.SSLError, OSError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_an_untrusted_certificate_is_permanent_and_a_broken_handshake_retriable(
    tmp_path: Path,
) -> None:
    served, trusted = make_cert(tmp_path, "served"), make_cert(tmp_path, "trusted")
    with tls_server(served, break_off=False) as port:
        client = StowClient(f"https://127.0.0.1:{port}/dicom-web", ca_bundle=trusted, timeout_s=5)
        with pytest.raises(PermanentError, match="certificate is not trusted"):
            client.post_json(f"https://127.0.0.1:{port}/x", {})
    with tls_server(served, break_off=True) as port:
        client = StowClient(f"https://127.0.0.1:{port}/dicom-web", ca_bundle=served, timeout_s=5)
        with pytest.raises(RetriableError):
            client.post_json(f"https://127.0.0.1:{port}/x", {})
