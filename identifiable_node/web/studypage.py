"""The study page: patient, state, trial drop-down with the live validation report, the ROI
table, manual IDs, and Release / Hold / Reject (Purge for admins). Every decision goes through
``identifiable_node.decisions``, the path `uploader review` takes too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydicom import dcmread

from identifiable_node import decisions as staff
from identifiable_node.config import Config
from identifiable_node.store import Store, Study
from identifiable_node.trials import Trials
from identifiable_node.web import patients
from identifiable_node.web.worklist import LABEL
from uploader.protocols.model import Protocol
from uploader.protocols.nomenclature import suggest
from uploader.protocols.study import rois
from uploader.protocols.validate import Report
from uploader.store.spool import Spool
from uploader.web.accounts import Session
from uploader.web.roles import Role
from uploader.web.site import Site, row_id, shown
from uploader.web.studyfiles import StudyFiles

DONE = {
    "trial": "Trial chosen: the report below is the study's under it.",
    "relabel": "ROI names saved and the study validated again.",
    "ids": "Manual IDs saved.",
    "release": "Released: the study is de-identified and forwarded.",
    "hold": "Held.",
    "reject": "Rejected.",
    "purge": "The study's files were deleted.",
}


@dataclass(frozen=True)
class RoiRow:
    """One line of the ROI table."""

    name: str  # as received
    new: str  # the staff's relabel ("" for none)
    status: str  # the report's verdict on the name it will carry
    message: str
    suggestion: str


def roi_rows(
    store: Store, study: Study, protocol: Protocol | None, report: Report | None
) -> list[RoiRow]:
    """The study's ROI names with the report's verdict and a suggestion for each."""
    relabel: dict[str, str] = dict(study.decided.get("relabel", {}))
    checks = {c.check: c for c in report.checks} if report else {}
    names = _protocol_names(protocol)
    out = []
    for inst in store.instances(study.id):
        if inst.modality != "RTSTRUCT":
            continue
        try:
            found = rois(dcmread(inst.path, stop_before_pixels=True))
        except Exception:  # noqa: S112 - unreadable: the pipeline quarantines it with the reason
            continue
        for roi in found:
            new = relabel.get(roi.name, "")
            final = new or roi.name
            check = checks.get(f"roi:{final}")
            status = check.status if check else ""
            hint = report.relabel.get(final, "") if report else ""
            if not hint and status == "fail":
                close = suggest(final, extra=tuple(names))
                hint = close[0] if close else ""
            out.append(RoiRow(roi.name, new, status, check.message if check else "", hint))
    return out


def _protocol_names(protocol: Protocol | None) -> list[str]:
    s = protocol.structures if protocol else None
    if s is None:
        return []
    return sorted({x.name for x in (*s.required, *s.optional) if x.name})


def add(
    site: Site, config: Config, store: Store, spool: Spool, trials: Trials, *, files: StudyFiles
) -> None:
    """The study page and its decisions."""
    default = config.node.default_protocol
    root = Path(spool.spool)

    def get(study_id: str) -> Study | None:
        return store.study(found) if (found := row_id(study_id)) else None

    def show(
        session: Session, study: Study, error: str = "", done: str = "", status: int = 200
    ) -> Response:
        pid = staff.protocol_id(study, default)
        protocol = trials.get(pid) if pid else None
        report = staff.validate(store, trials, root, study, pid) if protocol else None
        patients.fill(store)
        context: dict[str, Any] = {
            "study": study, "label": LABEL.get(study.state, study.state), "pid": pid,
            "patient": store.summary(study.id), "trials": sorted(trials.protocols),
            "report": report, "rois": roi_rows(store, study, protocol, report),
            "names": _protocol_names(protocol), "error": error, "done": done,
            "progress": _progress(store, study), "audit": store.audit_rows(study.id),
            "aside": store.set_aside_rows(study.id), "open": study.state in staff.OPEN,
            "manual": protocol.pseudonym if protocol else None, "view": files.view(study.id),
        }  # fmt: skip
        return site.render("study.html", session, status, **context)

    @site.page("/studies/{study_id}")
    def study_page(request: Request, session: Session, study_id: str) -> Response:
        study = get(study_id)
        if study is None:
            return site.render("error.html", session, 404, message="No such study.")
        return show(session, study, done=DONE.get(request.query_params.get("done", ""), ""))

    @site.page("/studies/{study_id}/state")
    def state(request: Request, session: Session, study_id: str) -> Response:
        study = get(study_id)
        if study is None:
            return site.render("error.html", session, 404, message="No such study.")
        return site.render(
            "study_state.html", session, study=study, label=LABEL.get(study.state, study.state),
            progress=_progress(store, study),
        )  # fmt: skip

    @site.action("/studies/{study_id}/{decision}")
    def decide(
        request: Request, session: Session, form: dict[str, str], study_id: str, decision: str
    ) -> Response:
        study = get(study_id)
        if study is None:
            return site.render("error.html", session, 404, message="No such study.")
        by = session.user.name
        admin = session.user.role is Role.ADMIN
        try:
            if decision == "trial":
                staff.choose_trial(store, trials, study.id, form.get("trial", ""), by)
            elif decision == "relabel":
                known = staff.roi_names(store, study.id)
                as_shown = {shown(n): n for n in known}  # the form names them as shown
                names = {
                    as_shown.get(k[4:], k[4:]): v for k, v in form.items() if k.startswith("new:")
                }
                facts = patients.facts(store, study)
                staff.relabel(store, study.id, names, by, names=known, patient=facts)
            elif decision == "ids":
                facts = patients.facts(store, study)
                staff.set_ids(
                    store, trials, study.id, form.get("subject", ""), form.get("session", ""),
                    by=by, patient=facts, default=default,
                )  # fmt: skip
            elif decision == "release":
                staff.release(store, trials, root, study.id, by=by, default=default)
            elif decision == "hold":
                staff.hold(store, study.id, form.get("reason", ""), by)
            elif decision == "reject":
                staff.reject(store, study.id, form.get("reason", ""), by)
            elif decision == "purge":
                staff.purge(store, study.id, by, admin=admin)
            else:
                return site.render("error.html", session, 404, message="No such decision.")
        except staff.Refused as exc:
            fresh = store.study(study.id) or study
            return show(session, fresh, error=str(exc), status=409)
        return RedirectResponse(f"/studies/{study.id}?done={decision}", status_code=303)


def _progress(store: Store, study: Study) -> dict[str, int]:
    instances = store.instances(study.id)
    return {
        "received": len(instances),
        "deidentified": sum(1 for i in instances if i.out_path is not None),
        "forwarded": sum(1 for i in instances if i.forwarded),
    }
