"""Admin pages: the node (health, AE title and ports, protocols with their `protocol check`
result), the link table export, and the users of the pages."""

from __future__ import annotations

import csv
import io
import json

from fastapi import Request
from fastapi.responses import Response

from identifiable_node.config import Config
from identifiable_node.store import Store
from identifiable_node.trials import Trials
from uploader.health import read_health
from uploader.protocols.loader import check_protocol
from uploader.web.accounts import Session
from uploader.web.roles import Role
from uploader.web.site import Site

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cells(values: list[str]) -> list[str]:
    """A CSV row a spreadsheet will not run: a value a sender made to start like a formula
    (``=HYPERLINK(...)`` as a patient ID) is written with a leading apostrophe, as text."""
    return [f"'{v}" if str(v).startswith(_FORMULA) else str(v) for v in values]


def add(site: Site, config: Config, store: Store, trials: Trials) -> None:
    """The node page, the link export and the users page (admins only)."""

    @site.page("/node", role=Role.ADMIN)
    def node(request: Request, session: Session) -> Response:
        data_dir = config.node.data_dir
        try:
            ready = json.loads((data_dir / "node.ready").read_text())
        except (OSError, ValueError):
            ready = {}
        protocols = []
        for pid, (_protocol, path) in sorted(trials.protocols.items()):
            found, problems = check_protocol(path)
            protocols.append((pid, path.name, found is not None, [str(p) for p in problems]))
        return site.render(
            "node.html", session, health=read_health(data_dir), config=config,
            scp_port=ready.get("scp_port", config.scp.port), protocols=protocols,
            counts=store.counts(), links=len(store.link_rows()),
        )  # fmt: skip

    @site.page("/links.csv", role=Role.ADMIN)
    def links(request: Request, session: Session) -> Response:
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["protocol", "patient_id", "study_uid", "subject", "session"])
        for r in store.link_rows():
            out.writerow(
                csv_cells(
                    [r["protocol"], r["patient_id"], r["study_uid"], r["subject"], r["session"]]
                )
            )
        store.audit(
            0,
            session.user.name,
            "link table exported",
            f"{buf.getvalue().count(chr(10)) - 1} row(s)",
        )
        headers = {"Content-Disposition": 'attachment; filename="links.csv"'}
        return Response(buf.getvalue(), media_type="text/csv", headers=headers)

    @site.page("/users", role=Role.ADMIN)
    def users(request: Request, session: Session) -> Response:
        return site.render("users.html", session, users=site.accounts.users())
