"""The anonymised node: the HTTPS intake (uvicorn) and the push worker.

SIGTERM or SIGINT sets a flag; the node's parts then stop in the order ``AnonymisedNode`` gives:
the intake stops taking instances, the pages stop, the worker finishes its step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from anonymised_node.config import Config, load_config
from anonymised_node.gate import Gate
from anonymised_node.intake import make_app
from anonymised_node.push import Pusher
from anonymised_node.store import AnonStore
from anonymised_node.web.server import PagesThread, web_server
from uploader.deid.patterns import Detector, default_detector, load_site_patterns
from uploader.health import Health
from uploader.node.config import read_secret
from uploader.node.lifecycle import Node
from uploader.node.protocols import load_protocols as load_node_protocols
from uploader.node.ready import announce, withdraw
from uploader.node.worker import worker_thread
from uploader.preflight import Problems
from uploader.protocols.model import Protocol
from uploader.transport.forwardsig import ForwardKey

log = logging.getLogger(__name__)


def open_store(config: Config) -> AnonStore:
    """The node's database under ``node.data_dir``."""
    return AnonStore(config.node.data_dir / "anonymised.sqlite")


def load_protocols(folder: Path) -> dict[str, Protocol]:
    """The trials this node serves (their allow-lists, auto-approval), refusing duplicate IDs."""
    return {pid: protocol for pid, (protocol, _path) in load_node_protocols(folder).items()}


def audit_patterns(config: Config) -> Detector:
    """The intake's knowledge-free detectors: the packaged audit table, plus the audit rows of
    the sites' table (``node.site_patterns``) when one is set.

    Raises:
        ConfigError: the table cannot be read or a row does not compile.
    """
    site = config.node.site_patterns
    if site is None:
        return default_detector(audit=True)
    return Detector(load_site_patterns(site), audit=True)


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
    site = config.node.site_patterns
    problems.readable(site, "site pattern table (node.site_patterns)")
    if site is not None:
        problems.check(lambda: load_site_patterns(site))
    problems.raise_if_any()
    assert token is not None and protocols is not None
    return protocols, token, review


class AnonymisedNode(Node):
    """The running anonymised node. Parts come up in this order and stop in the reverse: the
    health registry, the push worker, the staff pages, the HTTPS intake, the ready file. So on
    stop the ready file goes first, then the intake stops taking instances (requests under way
    finish), then the pages, then the push worker finishes its step. If the intake or the
    pages end by themselves, the node stops."""

    def __init__(
        self,
        config: Config,
        protocols: dict[str, Protocol],
        token: str,
        review: str | None,
        on_stop_step: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_stop_step)
        self.config, self.protocols, self.token, self.review = config, protocols, token, review
        self.patterns = audit_patterns(config)
        self.pages_thread: PagesThread | None = None
        self.worker: threading.Thread | None = None
        self.intake_failed = False

    def _start(self) -> None:
        config, stop = self.config, self.stopping
        store = open_store(config)
        intake = config.intake
        app = make_app(
            store,
            config.node.data_dir,
            intake,
            token=self.token,
            gate=Gate(self.protocols, self.patterns),
            key=ForwardKey.from_file(intake.forward_key_file),
            review_token=self.review,
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
        health = Health(config.node.data_dir)
        self.started("health", health.close)
        push_part = health.component("push", stale_after_s=config.workers.lease_s + 60)
        pusher = Pusher(config, store, self.protocols)
        worker = worker_thread("push", pusher.step, stop, push_part, config.workers.idle_s)
        health.watch_thread("push", worker)
        worker.start()
        self.worker = worker
        self.started("push worker", lambda: worker.join(timeout=30))
        pages = web_server(config, store)  # staff pages on web.listen; None when not configured
        if pages is not None:
            self.pages_thread = pages_thread = PagesThread(pages, server)
            health.watch_thread("web", pages_thread)
            pages_thread.start()
            self.started("pages", lambda: _stop_pages(pages_thread))
        intake_thread = threading.Thread(
            target=self._serve, args=(server,), name="intake", daemon=True
        )
        intake_thread.start()
        self.started("intake", lambda: _stop_server(server, intake_thread))
        announcer = threading.Thread(
            target=self._announce, args=(server, pages, health), name="announce", daemon=True
        )
        announcer.start()
        health.start(stop)
        self.started("ready file", lambda: _withdraw(config.node.data_dir, announcer))

    def _serve(self, server: uvicorn.Server) -> None:
        """The intake's thread: when its server ends, by itself or asked to, the node stops."""
        try:
            server.run()
        except SystemExit:  # uvicorn exits so when it cannot bind (it logged why)
            pass
        except Exception:
            log.exception("the HTTPS intake failed")
        finally:
            if not self.stopping.is_set():
                self.intake_failed = not (
                    self.pages_thread is not None and self.pages_thread.failed
                )
            self.request_stop()

    def _announce(
        self, server: uvicorn.Server, pages: uvicorn.Server | None, health: Health
    ) -> None:
        stop = self.stopping
        while not (server.started and (pages is None or pages.started)) and not stop.is_set():
            time.sleep(0.05)
        if stop.is_set():
            return
        health.probe("intake", lambda: None if server.started else "the HTTPS intake stopped")
        announce(self.config.node.data_dir, {"pid": os.getpid(), "port": self.config.intake.port})

    @property
    def failed(self) -> bool:
        """True when the intake or the pages ended by themselves (the node did not serve)."""
        pages_failed = self.pages_thread is not None and self.pages_thread.failed
        return pages_failed or self.intake_failed


def _withdraw(data_dir: Path, announcer: threading.Thread) -> None:
    """Remove the ready file once the thread that writes it has ended (it ends on stop)."""
    announcer.join(timeout=5)
    withdraw(data_dir)


def _stop_pages(thread: PagesThread) -> None:
    """Ask the pages' server to finish (requests under way complete) and wait for it."""
    thread.stop()
    thread.join(timeout=30)


def _stop_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Ask uvicorn to finish (requests under way complete) and wait for it."""
    server.should_exit = True
    thread.join(timeout=30)


def run(config_path: Path) -> int:
    """Serve until SIGTERM; return the exit code."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.node.log_level)
    protocols, token, review = preflight(config, config_path)  # nothing created before this
    node = AnonymisedNode(config, protocols, token, review)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        node.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with node:
        node.wait()
    return 1 if node.failed or node.stop_failures else 0
