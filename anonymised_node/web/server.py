"""The staff pages' own HTTPS server (uvicorn, on ``web.listen``), beside the intake's."""

from __future__ import annotations

import functools
import logging

import uvicorn

from anonymised_node.config import Config
from anonymised_node.store import AnonStore
from anonymised_node.web.pages import build_site
from uploader.errors import ConfigError
from uploader.transport.forwardsig import ForwardKey
from uploader.web.accounts import Accounts
from uploader.web.serve import PagesThread as CorePagesThread

log = logging.getLogger(__name__)


def web_server(config: Config, store: AnonStore) -> uvicorn.Server | None:
    """The pages' server (not started), or None when ``web.listen`` is empty.

    Raises:
        ConfigError: pages asked for over HTTPS but the node has no certificate.
    """
    web, intake = config.web, config.intake
    if not web.listen:
        return None
    tls = not web.allow_plain_http
    if tls and (intake.tls_cert is None or intake.tls_key is None):
        raise ConfigError(
            "web.listen: the pages are served over HTTPS with the node's certificate: set "
            "intake.tls_cert and intake.tls_key (or web.allow_plain_http for a loopback test)"
        )
    accounts = Accounts(
        store.path,
        idle_s=web.idle_timeout_min * 60,
        absolute_s=web.absolute_timeout_h * 3600,
        max_failures=web.throttle_failures,
        window_s=web.throttle_window_min * 60,
    )
    key = ForwardKey.from_file(intake.forward_key_file)  # refusals are recorded by its digests
    digest = functools.lru_cache(maxsize=100_000)(key.uid_digest)
    site = build_site(store, accounts, tls=tls, cache_mb=web.render_cache_mb, digest=digest)
    host, port = web.address()
    return uvicorn.Server(
        uvicorn.Config(
            site.app,
            host=host,
            port=port,
            ssl_certfile=str(intake.tls_cert) if tls else None,
            ssl_keyfile=str(intake.tls_key) if tls else None,
            log_level="warning",
            access_log=False,
        )
    )


class PagesThread(CorePagesThread):
    """The core's pages thread; if the pages stop on their own, the intake stops too."""

    def __init__(self, pages: uvicorn.Server, intake: uvicorn.Server) -> None:
        super().__init__(pages, lambda: setattr(intake, "should_exit", True))
        self.intake = intake
