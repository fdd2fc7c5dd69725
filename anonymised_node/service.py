"""The anonymised node: the HTTPS intake (uvicorn) and the push worker.

Uvicorn owns the main thread and stops on SIGTERM; the worker then finishes its step.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import uvicorn

from anonymised_node.config import Config, load_config
from anonymised_node.gate import Gate
from anonymised_node.intake import make_app
from anonymised_node.push import Pusher
from anonymised_node.store import AnonStore
from identifiable_node.config import read_secret
from uploader.errors import ConfigError
from uploader.protocols.loader import load_protocol
from uploader.protocols.model import Protocol
from uploader.store.spool import durable_write
from uploader.transport.forwardsig import ForwardKey

log = logging.getLogger(__name__)


def open_store(config: Config) -> AnonStore:
    """The node's database under ``node.data_dir``."""
    return AnonStore(config.node.data_dir / "anonymised.sqlite")


def load_protocols(folder: Path) -> dict[str, Protocol]:
    """The trials this node serves (their allow-lists, auto-approval)."""
    found: dict[str, Protocol] = {}
    for path in sorted(folder.glob("*.y*ml")) if folder.exists() else []:
        protocol = load_protocol(path)
        if protocol.id in found:  # the gate judges by the protocol: which one would be ambiguous
            raise ConfigError(f"{path}: protocol {protocol.id} is also defined elsewhere")
        found[protocol.id] = protocol
    return found


def run(config_path: Path) -> int:
    """Serve until SIGTERM; return the exit code."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.node.log_level)
    store = open_store(config)
    protocols = load_protocols(config.node.protocols_dir)
    intake = config.intake
    token = read_secret(intake.token_file, "intake token")
    review = (
        read_secret(intake.review_token_file, "review token") if intake.review_token_file else None
    )
    app = make_app(
        store,
        config.node.data_dir,
        intake,
        token=token,
        gate=Gate(protocols),
        key=ForwardKey.from_file(intake.forward_key_file),
        review_token=review,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=intake.host,
            port=intake.port,
            ssl_certfile=str(intake.tls_cert) if intake.tls_cert else None,
            ssl_keyfile=str(intake.tls_key) if intake.tls_key else None,
            log_level="warning",
            access_log=False,
        )
    )
    stop = threading.Event()
    pusher = Pusher(config, store, protocols)

    def work() -> None:
        while not stop.is_set():
            try:
                busy = pusher.step()
            except Exception:
                log.exception("push worker step failed")
                busy = False
            if not busy:
                stop.wait(config.workers.idle_s)

    def announce() -> None:
        while not server.started and not stop.is_set():
            time.sleep(0.05)
        ready = {"pid": os.getpid(), "port": intake.port}
        durable_write(config.node.data_dir / "node.ready", json.dumps(ready).encode())

    worker = threading.Thread(target=work, name="push", daemon=True)
    worker.start()
    threading.Thread(target=announce, name="announce", daemon=True).start()
    server.run()  # returns on SIGTERM / SIGINT
    stop.set()
    worker.join(timeout=30)
    (config.node.data_dir / "node.ready").unlink(missing_ok=True)
    return 0
