"""The quarantine page: files that could not be ingested or de-identified, with the reason;
staff retry one (back into ingest), an admin deletes one. Both audited."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from identifiable_node import decisions as staff
from identifiable_node.ingest import Ingestor
from uploader.web.accounts import Session
from uploader.web.roles import Role
from uploader.web.site import Site
from uploader.web.site import row_id as parse_id

DONE = {"retry": "Taken back into ingest.", "delete": "Deleted."}


def add(site: Site, ingestor: Ingestor) -> None:
    """The quarantine page and its two actions."""
    store = ingestor.store

    def take(path: Path) -> bool:
        return ingestor.take_file(path, source="quarantine retry", protocol=None)

    def show(session: Session, error: str = "", done: str = "", status: int = 200) -> Response:
        rows = store.set_aside_rows()
        return site.render("quarantine.html", session, status, rows=rows, error=error, done=done)

    @site.page("/quarantine")
    def page(request: Request, session: Session) -> Response:
        return show(session, done=DONE.get(request.query_params.get("done", ""), ""))

    @site.action("/quarantine/{row_id}/{what}")
    def act(
        request: Request, session: Session, form: dict[str, str], row_id: str, what: str
    ) -> Response:
        wanted = parse_id(row_id) or 0
        try:
            if what == "retry":
                staff.retry_quarantined(store, take, wanted, session.user.name)
            elif what == "delete":
                admin = session.user.role is Role.ADMIN
                staff.delete_quarantined(store, wanted, session.user.name, admin=admin)
            else:
                return site.render("error.html", session, 404, message="No such action.")
        except staff.Refused as exc:
            return show(session, error=str(exc), status=409)
        return RedirectResponse(f"/quarantine?done={what}", status_code=303)
