"""The identifiable node's pages on the core's web layer: worklist, study, users.

Staff here see patient data (this is the hospital's own node): name, ID, study date and
accession are shown to signed-in staff only, and never written to a log line.
"""

from __future__ import annotations

import time
from pathlib import Path

from identifiable_node.config import Config
from identifiable_node.trials import Trials
from identifiable_node.web import nodepages, studypage, worklist
from uploader.store.db import Store
from uploader.store.spool import Spool
from uploader.web.accounts import Accounts
from uploader.web.site import Site

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def build_site(
    config: Config, store: Store, spool: Spool, trials: Trials, accounts: Accounts, *, tls: bool
) -> Site:
    """The staff pages of the identifiable node."""
    site = Site(accounts, title="Worklist · identifiable node", templates=TEMPLATES, tls=tls)
    site.env.filters["when"] = _when
    worklist.add(site, store, trials)
    studypage.add(site, config, store, spool, trials)
    nodepages.add(site, store)
    return site
