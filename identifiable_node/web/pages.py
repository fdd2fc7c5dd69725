"""The identifiable node's pages on the core's web layer: worklist, study, users.

Staff here see patient data (this is the hospital's own node): name, ID, study date and
accession are shown to signed-in staff only, and never written to a log line.
"""

from __future__ import annotations

import time
from pathlib import Path

from identifiable_node.config import Config
from identifiable_node.ingest import Ingestor
from identifiable_node.trials import Trials
from identifiable_node.web import (
    nodepages,
    previewpage,
    quarantine,
    retrieve,
    studypage,
    worklist,
)
from uploader.web.accounts import Accounts
from uploader.web.images import add_image_routes
from uploader.web.render import RenderCache
from uploader.web.site import Site
from uploader.web.studyfiles import StudyFiles

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def build_site(
    config: Config, ingestor: Ingestor, trials: Trials, accounts: Accounts, *, tls: bool
) -> Site:
    """The staff pages of the identifiable node."""
    site = Site(accounts, title="Worklist · identifiable node", templates=TEMPLATES, tls=tls)
    site.env.filters["when"] = _when
    store, spool = ingestor.store, ingestor.spool
    files = StudyFiles(lambda i: [(x.sop_uid, x.path) for x in store.instances(i)])
    worklist.add(site, store, trials)
    studypage.add(site, config, store, spool, trials, files=files)
    previewpage.add(site, store, trials, files, config.node.default_protocol)
    add_image_routes(site, files, RenderCache(config.web.render_cache_mb * 1024 * 1024))
    quarantine.add(site, ingestor)
    retrieve.add(site, config, ingestor, trials).resume()  # bulk jobs a restart interrupted
    nodepages.add(site, config, store, trials)
    return site
