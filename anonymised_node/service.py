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
from anonymised_node.web.server import PagesThread, web_server
from identifiable_node.config import read_secret
from uploader.errors import ConfigError
from uploader.health import Health, describe
from uploader.preflight import Problems
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


def preflight(config: Config, config_path: Path) -> tuple[dict[str, Protocol], str, str | None]:
    """Check everything the node will read before anything is created on disk.

    Returns the protocols, the intake token and the review token. Raises:
        ConfigError: every problem found, listed together.
    """
    problems = Problems(config_path)
    intake = config.intake
    token = problems.check(lambda: read_secret(intake.token_file, "intake token"))
    review = None
    if intake.review_token_file is not None:
        review = problems.check(lambda: read_secret(intake.review_token_file, "review token"))
    problems.readable(intake.tls_cert, "intake certificate (intake.tls_cert)")
    problems.readable(intake.tls_key, "intake key (intake.tls_key)")
    for name, target in config.targets.items():
        problems.readable(target.ca_bundle, f"CA bundle of target {name} (ca_bundle)")
        problems.readable(target.token_file, f"token of target {name} (token_file)")
        problems.readable(target.password_file, f"password of target {name} (password_file)")
    protocols = problems.check(lambda: load_protocols(config.node.protocols_dir))
    problems.raise_if_any()
    assert token is not None and protocols is not None
    return protocols, token, review


def run(config_path: Path) -> int:
    """Serve until SIGTERM; return the exit code."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.node.log_level)
    protocols, token, review = preflight(config, config_path)  # nothing created before this
    store = open_store(config)
    intake = config.intake
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
    health = Health(config.node.data_dir)
    push_part = health.component("push", stale_after_s=config.workers.lease_s + 60)
    pages = web_server(config, store)  # staff pages on web.listen; None when not configured
    pages_thread = PagesThread(pages, server) if pages is not None else None
    if pages_thread is not None:
        health.watch_thread("web", pages_thread)
        pages_thread.start()

    def work() -> None:
        while not stop.is_set():
            try:
                busy = pusher.step()
            except Exception as exc:  # counted: a step that keeps failing turns the node unhealthy
                log.exception("push worker step failed")
                push_part.failed(describe(exc))
                busy = False
            else:
                push_part.beat()
            if not busy:
                stop.wait(config.workers.idle_s)

    def announce() -> None:
        while not (server.started and (pages is None or pages.started)) and not stop.is_set():
            time.sleep(0.05)
        health.probe("intake", lambda: None if server.started else "the HTTPS intake stopped")
        ready = {"pid": os.getpid(), "port": intake.port}
        durable_write(config.node.data_dir / "node.ready", json.dumps(ready).encode())

    worker = threading.Thread(target=work, name="push", daemon=True)
    health.watch_thread("push", worker)
    worker.start()
    threading.Thread(target=announce, name="announce", daemon=True).start()
    health.start(stop)
    server.run()  # returns on SIGTERM / SIGINT
    stop.set()
    if pages_thread is not None:
        pages_thread.stop()
    worker.join(timeout=30)
    (config.node.data_dir / "node.ready").unlink(missing_ok=True)
    health.close()
    return 1 if pages_thread is not None and pages_thread.failed else 0
