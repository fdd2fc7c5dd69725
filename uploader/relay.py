"""A TCP relay: the one door between the hospital network and the identifiable node.

The identifiable node sits only on Compose's ``internal`` network, which has no default route,
and Docker publishes no port of a container that is only on internal networks. So a small
service on both networks relays DICOM connections: PACS and modalities -> our SCP, and our
Q/R SCU -> the PACS. It holds nothing (no volume, no secret), reads nothing of what it carries
and logs only connection counts, never addresses inside the data.

    python -m uploader.relay 11112=identifiable-node:11112 10104=pacs.hospital.local:104

Each route is ``LISTEN_PORT=HOST:PORT``; TCP_NODELAY is set on both sides (DICOM is chatty).
``--check`` exits 0 when every route's port is listening (the container healthcheck).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


@dataclass(frozen=True)
class Route:
    listen_port: int
    host: str
    port: int


def parse_route(text: str) -> Route:
    """``11112=identifiable-node:11112`` -> Route.

    Raises:
        ValueError: not ``PORT=HOST:PORT``.
    """
    listen, sep, target = text.partition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not colon or not host or not listen.isdigit() or not port.isdigit():
        raise ValueError(f"route {text!r}: use LISTEN_PORT=HOST:PORT")
    return Route(int(listen), host, int(port))


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
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


def _handler(route: Route) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(route.host, route.port)
        except OSError as exc:
            log.warning(
                "port %d: cannot reach %s:%d: %s",
                route.listen_port,
                route.host,
                route.port,
                exc.strerror or exc,
            )
            writer.close()
            return
        _nodelay(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def serve(routes: list[Route], stop: asyncio.Event) -> None:
    """Relay every route until ``stop`` is set."""
    servers = [
        await asyncio.start_server(_handler(r), "0.0.0.0", r.listen_port)  # type: ignore[arg-type]  # noqa: S104
        for r in routes
    ]
    for r in routes:
        log.info("relaying port %d to %s:%d", r.listen_port, r.host, r.port)
    await stop.wait()
    for s in servers:
        s.close()
        await s.wait_closed()


def listening(ports: list[int], proc_net: Path = Path("/proc/net")) -> bool:
    """True when every port is in LISTEN state (read from /proc: no connection is made)."""
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
    return set(ports) <= found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uploader.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "routes", nargs="*", help="LISTEN_PORT=HOST:PORT (default: $UPLOADER_RELAY_ROUTES)"
    )
    parser.add_argument("--check", action="store_true", help="exit 0 when all ports listen")
    args = parser.parse_args(argv)
    try:
        texts = args.routes or os.environ.get("UPLOADER_RELAY_ROUTES", "").split()
        routes = [parse_route(r) for r in texts]
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    if not routes:
        print("relay: no route given (arguments or UPLOADER_RELAY_ROUTES)", file=sys.stderr)
        return 2
    if args.check:
        return 0 if listening([r.listen_port for r in routes]) else 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(routes, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
