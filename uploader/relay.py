"""A byte relay: the identifiable node's only door, through socket files, never a network.

In the Compose deployment the identifiable node has no network at all (``network_mode: none``:
only its own loopback, no route anywhere). The DICOM gateway, a small service that holds
nothing (no data, no secret) and reads nothing of what it carries, is on the hospital network
and passes each connection through a socket file in a volume the two share (``/links``):

- PACS and modalities -> gateway port 11112 -> ``/links/scp.sock`` -> the node's SCP;
- the node's C-FIND/C-MOVE -> its loopback port 10104 -> ``/links/pacs.sock`` -> the PACS;
- the node's forwarding (HTTPS, checked end to end) -> its loopback port 8443 ->
  ``/links/forward.sock`` -> the anonymised node.

One side of each link runs in the gateway (``python -m uploader.relay``), the other inside the
node (its ``links`` setting, the same code in a thread). It logs only that a peer could not be
reached, never what passed.

    python -m uploader.relay 11112=unix:/links/scp.sock unix:/links/pacs.sock=pacs:104

A route is ``LISTEN=TARGET``. LISTEN is ``PORT`` (all interfaces), ``HOST:PORT`` or
``unix:/path``; TARGET is ``HOST:PORT`` or ``unix:/path``. TCP_NODELAY is set on TCP sides
(DICOM is chatty). ``--check`` exits 0 when every route's listening side is listening (the
container healthcheck; read from /proc, no connection is made).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix: a listening unix socket
USAGE = "use LISTEN=TARGET: LISTEN is PORT, HOST:PORT or unix:/path; TARGET HOST:PORT or unix:/path"


@dataclass(frozen=True)
class Endpoint:
    """A TCP address (``host``, ``port``) or a unix socket file (``path``)."""

    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host or '*'}:{self.port}"


@dataclass(frozen=True)
class Route:
    listen: Endpoint
    target: Endpoint


def _endpoint(text: str, *, listening: bool) -> Endpoint | None:
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        return Endpoint(path=path) if path.startswith("/") else None
    if listening and text.isdigit():
        return Endpoint("", int(text))
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Endpoint(host, int(port))


def parse_route(text: str) -> Route:
    """``11112=unix:/links/scp.sock`` -> Route.

    Raises:
        ValueError: not ``LISTEN=TARGET`` (the text and the forms allowed are named).
    """
    listen, sep, target = text.partition("=")
    where, to = _endpoint(listen, listening=True), _endpoint(target, listening=False)
    if not sep or where is None or to is None:
        raise ValueError(f"route {text!r}: {USAGE}")
    return Route(where, to)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _connect(to: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if to.path:
        return await asyncio.open_unix_connection(to.path)
    return await asyncio.open_connection(to.host, to.port)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _handler(route: Route) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            up_reader, up_writer = await _connect(route.target)
        except OSError as exc:
            log.warning("%s: cannot reach %s: %s", route.listen, route.target, exc.strerror or exc)
            writer.close()
            return
        _nodelay(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def _listen(route: Route) -> asyncio.Server:
    where = route.listen
    if not where.path:
        return await asyncio.start_server(_handler(route), where.host or "0.0.0.0", where.port)  # noqa: S104
    path = Path(where.path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by an earlier run of this side: nothing listens on it now
    return await asyncio.start_unix_server(_handler(route), where.path)


async def serve(routes: list[Route], stop: asyncio.Event) -> None:
    """Relay every route until ``stop`` is set.

    Raises:
        OSError: a listening side cannot be opened (port taken, folder not writable).
    """
    servers = [await _listen(r) for r in routes]
    for r in routes:
        log.info("relaying %s to %s", r.listen, r.target)
    await stop.wait()
    for s in servers:
        s.close()
        await s.wait_closed()


def start_thread(routes: list[Route], stop: threading.Event) -> threading.Thread:
    """Relay ``routes`` in a thread until ``stop`` is set (the node's side of its links).
    The thread ends early only when a listening side cannot be opened (it logs why)."""

    def run() -> None:
        async def main() -> None:
            done = asyncio.Event()
            loop = asyncio.get_running_loop()

            def wake() -> None:
                stop.wait()
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(done.set)

            threading.Thread(target=wake, name="links-stop", daemon=True).start()
            await serve(routes, done)

        try:
            asyncio.run(main())
        except OSError as exc:
            log.error("links: cannot listen: %s", exc.strerror or type(exc).__name__)  # noqa: TRY400 - one line

    return threading.Thread(target=run, name="links", daemon=True)


def _tcp_listening(proc_net: Path) -> set[int]:
    found: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def _unix_listening(proc_net: Path) -> set[str]:
    try:
        lines = (proc_net / "unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {
        fields[7] for fields in (line.split() for line in lines)
        if len(fields) > 7 and int(fields[3], 16) & _ACCEPTING
    }  # fmt: skip


def listening(routes: list[Route], proc_net: Path = Path("/proc/net")) -> bool:
    """True when every route's listening side is listening (TCP port or unix socket file)."""
    ports = {r.listen.port for r in routes if not r.listen.path}
    paths = {r.listen.path for r in routes if r.listen.path}
    return ports <= _tcp_listening(proc_net) and paths <= _unix_listening(proc_net)


def parse_routes(texts: list[str]) -> list[Route]:
    """Every route of ``texts``.

    Raises:
        ValueError: a route that is not ``LISTEN=TARGET``.
    """
    return [parse_route(t) for t in texts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uploader.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("routes", nargs="*", help="LISTEN=TARGET (default: $UPLOADER_RELAY_ROUTES)")
    parser.add_argument("--check", action="store_true", help="exit 0 when all routes listen")
    args = parser.parse_args(argv)
    try:
        routes = parse_routes(args.routes or os.environ.get("UPLOADER_RELAY_ROUTES", "").split())
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    if not routes:
        print("relay: no route given (arguments or UPLOADER_RELAY_ROUTES)", file=sys.stderr)
        return 2
    if args.check:
        return 0 if listening(routes) else 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(routes, stop)
        except OSError as exc:
            print(f"relay: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(1) from None

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
