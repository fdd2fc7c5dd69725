"""The anonymised node's pages on the core's web layer: queue, study, images, decisions, audit."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydicom import dcmread

from anonymised_node.store import STATES, AnonStore
from anonymised_node.web import queue
from anonymised_node.web.decisions import Refused, decide
from anonymised_node.web.dicomweb import add_dicomweb
from uploader.web.accounts import Accounts, Session
from uploader.web.images import add_image_routes
from uploader.web.render import PRESETS, RenderCache
from uploader.web.roles import Role
from uploader.web.site import Site, row_id
from uploader.web.studyfiles import StudyFiles, header_tree, rois_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
DONE = {
    "approve": "Approved: the push starts.",
    "reject": "Rejected.",
    "retry": "Queued to push again.",
    "reopen": "Re-opened: waiting for approval.",
}


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def build_site(
    store: AnonStore,
    accounts: Accounts,
    *,
    tls: bool,
    cache_mb: int,
    digest: queue.Digest | None = None,
) -> Site:
    """The staff pages of the anonymised node (``digest``: how refusals are recorded by UID)."""
    site = Site(accounts, title="Review queue · anonymised node", templates=TEMPLATES, tls=tls)
    site.env.filters["when"] = _when
    files = StudyFiles(lambda i: [(u, p) for u, _c, p, _up in store.instances(i)])
    cache = RenderCache(cache_mb * 1024 * 1024)
    _queue_pages(site, store, digest)
    _study_pages(site, store, files, digest)
    add_image_routes(site, files, cache)
    _audit_pages(site, store)
    add_dicomweb(site, store, files)
    return site


def _queue_pages(site: Site, store: AnonStore, digest: queue.Digest | None) -> None:
    def filters(request: Request) -> dict[str, str]:
        q = request.query_params
        state = q.get("state", "")
        return {
            "state": state if state in STATES else "",
            "trial": q.get("trial", ""),
            "sort": q.get("sort", "new") if q.get("sort") in queue.SORTS else "new",
        }

    @site.page("/")
    def home(request: Request, session: Session) -> Response:
        chosen = filters(request)
        rows = queue.rows(store, chosen["state"], chosen["trial"], chosen["sort"], digest=digest)
        return site.render(
            "queue.html",
            session,
            rows=rows,
            chosen=chosen,
            states=STATES,
            labels=queue.LABEL,
            trials=queue.trials(store),
            refusals=queue.unmatched_refusals(store, rows, digest) if not chosen["state"] else [],
            query=request.url.query,
        )

    @site.page("/queue/rows")
    def rows_fragment(request: Request, session: Session) -> Response:
        chosen = filters(request)
        rows = queue.rows(store, chosen["state"], chosen["trial"], chosen["sort"], digest=digest)
        return site.render("queue_rows.html", session, rows=rows, query=request.url.query)


def _study_pages(
    site: Site, store: AnonStore, files: StudyFiles, digest: queue.Digest | None
) -> None:
    def row_of(study_id: str) -> queue.Row | None:
        wanted = row_id(study_id) or 0
        found = queue.rows(store, study_id=wanted, digest=digest) if wanted else []
        return found[0] if found else None

    @site.page("/studies/{study_id}")
    def study(request: Request, session: Session, study_id: str) -> Response:
        row = row_of(study_id)
        if row is None:
            return site.render("error.html", session, 404, message="No such study.")
        view = files.view(row.id)
        audit = store.audit_rows(row.id)
        done = DONE.get(request.query_params.get("done", ""), "")
        return site.render(
            "study.html",
            session,
            row=row,
            view=view,
            audit=audit,
            done=done,
            error="",
            presets=PRESETS,
            rois={s.uid: rois_for(view, s) for s in view.series},
            instances=store.instances(row.id),
            modality=queue.MODALITY,
        )

    @site.page("/studies/{study_id}/state")
    def state(request: Request, session: Session, study_id: str) -> Response:
        row = row_of(study_id)
        if row is None:
            return site.render("error.html", session, 404, message="No such study.")
        return site.render("study_state.html", session, row=row, error="", done="")

    @site.action("/studies/{study_id}/decide")
    def decision(
        request: Request, session: Session, form: dict[str, str], study_id: str
    ) -> Response:
        row = row_of(study_id)
        if row is None:
            return site.render("error.html", session, 404, message="No such study.")
        choice = form.get("decision", "")
        try:
            admin = session.user.role is Role.ADMIN
            decide(store, row.id, choice, form.get("reason", ""), session.user.name, admin=admin)
        except Refused as exc:
            return site.render("study_state.html", session, 409, row=row, error=str(exc), done="")
        return RedirectResponse(f"/studies/{row.id}?done={choice}", status_code=303)

    @site.page("/studies/{study_id}/instances/{sop_uid}/header")
    def header(request: Request, session: Session, study_id: str, sop_uid: str) -> Response:
        found = row_id(study_id)
        path = files.path(found, sop_uid) if found else None
        if path is None:
            return site.render("error.html", session, 404, message="No such instance.")
        query = request.query_params.get("q", "")
        tree = header_tree(dcmread(path, stop_before_pixels=True), query)
        return site.render(
            "header.html", session, tree=tree, q=query, study_id=study_id, sop_uid=sop_uid
        )


def _audit_pages(site: Site, store: AnonStore) -> None:
    def select(request: Request) -> tuple[list[Any], str, str]:
        study, user = request.query_params.get("study", ""), request.query_params.get("user", "")
        rows = store.audit_rows(
            row_id(study),
            actor=user or None,
            newest_first=True,
            limit=2000,
        )
        return rows, study, user

    @site.page("/audit", role=Role.ADMIN)
    def audit(request: Request, session: Session) -> Response:
        rows, study, user = select(request)
        report = site.accounts.verify_audit()
        return site.render(
            "audit.html", session, rows=rows, study=study, user=user, report=report,
            query=request.url.query,
        )  # fmt: skip

    @site.page("/audit.csv", role=Role.ADMIN)
    def audit_csv(request: Request, session: Session) -> Response:
        rows, _study, _user = select(request)
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["id", "at", "study_id", "actor", "action", "detail", "hash"])
        for r in rows:
            out.writerow([r.id, _when(r.at), r.study_id, r.actor, r.action, r.detail, r.hash])
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
        return Response(buf.getvalue(), media_type="text/csv", headers=headers)
