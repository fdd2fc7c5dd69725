"""The identifiable node's staff pages' HTTPS server (uvicorn on ``web.listen``)."""

from __future__ import annotations

import uvicorn

from identifiable_node.config import Config
from identifiable_node.ingest import Ingestor
from identifiable_node.trials import Trials
from identifiable_node.web.pages import build_site
from uploader.errors import ConfigError
from uploader.web.accounts import Accounts
from uploader.web.serve import pages_server
from uploader.web.site import Site


def web_server(
    config: Config, ingestor: Ingestor, trials: Trials
) -> tuple[uvicorn.Server, Site] | None:
    """The pages' server (not started) and their site (whose ``stop`` ends what they run in the
    background), or None when ``web.listen`` is empty.

    Raises:
        ConfigError: pages asked for over HTTPS without ``web.tls_cert`` and ``web.tls_key``.
    """
    web = config.web
    if not web.listen:
        return None
    tls = not web.allow_plain_http
    if tls and (web.tls_cert is None or web.tls_key is None):
        raise ConfigError(
            "web.listen: the pages are served over HTTPS: set web.tls_cert and web.tls_key "
            "(or web.allow_plain_http for a loopback test)"
        )
    accounts = Accounts(
        ingestor.store.path,
        idle_s=web.idle_timeout_min * 60,
        absolute_s=web.absolute_timeout_h * 3600,
        max_failures=web.throttle_failures,
        window_s=web.throttle_window_min * 60,
    )
    site = build_site(config, ingestor, trials, accounts, tls=tls)
    return pages_server(site.app, web, web.tls_cert, web.tls_key), site
