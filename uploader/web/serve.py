"""Running a node's pages: uvicorn on ``web.listen`` in a thread the node watches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from uploader.web.settings import WebSettings

log = logging.getLogger(__name__)


def pages_server(app: Any, web: WebSettings, cert: Path | None, key: Path | None) -> uvicorn.Server:
    """The pages' server (not started): HTTPS with ``cert``/``key`` unless plain HTTP is set."""
    host, port = web.address()
    tls = not web.allow_plain_http
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=str(cert) if tls and cert else None,
            ssl_keyfile=str(key) if tls and key else None,
            log_level="warning",
            access_log=False,
        )
    )


class PagesThread(threading.Thread):
    """Runs the pages' server; if it stops on its own (port taken, crash), ``on_failure`` stops
    the node: a node whose pages are gone must not look healthy."""

    def __init__(self, pages: uvicorn.Server, on_failure: Callable[[], None]) -> None:
        super().__init__(name="web", daemon=True)
        self.pages, self.on_failure = pages, on_failure
        self.failed = False
        self.stopping = False

    def run(self) -> None:
        try:
            self.pages.run()
        except BaseException:  # uvicorn exits with SystemExit when it cannot bind
            log.exception("the staff pages' server failed")
        if not self.stopping:
            self.failed = True
            log.error(
                "the staff pages stopped (web.listen %s): stopping the node", self.pages.config.port
            )
            self.on_failure()

    def stop(self) -> None:
        """Ask the pages' server to finish (the node is shutting down)."""
        self.stopping = True
        self.pages.should_exit = True
