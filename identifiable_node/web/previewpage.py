"""The preview of de-identification: for one instance per series, its header before and after
(the engine `uploader script preview` runs, with this node's key, the study's trial, relabels
and manual IDs), each element marked removed, replaced, added or kept."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from pydicom import dcmread

from identifiable_node import decisions as staff
from identifiable_node.deidpool import study_identifiers
from identifiable_node.store import Store, Study
from identifiable_node.trials import Trials
from uploader.deid.batch import modality_label
from uploader.deid.preview import Preview, preview
from uploader.web.accounts import Session
from uploader.web.site import Site, row_id
from uploader.web.studyfiles import StudyFiles


def previews(
    store: Store, trials: Trials, files: StudyFiles, study: Study, pid: str
) -> list[tuple[str, Preview]]:
    """(series title, preview of its first instance) for each series of the study."""
    settings = trials.settings(pid, staff.final_relabel(study))
    instances = store.instances(study.id)
    label = modality_label({i.modality for i in instances})
    ident = study_identifiers([Path(i.path) for i in instances], settings.profile)
    subject, session = study.decided.get("subject"), study.decided.get("session")
    out = []
    for series in files.view(study.id).series:
        first = next(iter(series.paths.values()), None)
        if first is None:
            continue
        ds = dcmread(first)
        title = f"{series.modality} {series.number}: {series.description}"
        out.append((title, preview(ds, settings, label, subject, session, ident)))
    return out


def add(site: Site, store: Store, trials: Trials, files: StudyFiles, default: str | None) -> None:
    """The preview page of a study."""

    @site.page("/studies/{study_id}/preview")
    def page(request: Request, session: Session, study_id: str) -> Response:
        study = store.study(found) if (found := row_id(study_id)) else None
        if study is None:
            return site.render("error.html", session, 404, message="No such study.")
        pid = staff.protocol_id(study, default)
        if not pid or trials.get(pid) is None:
            message = "Choose the study's trial first: the preview is the trial's."
            return site.render("error.html", session, 409, message=message)
        shown = request.query_params.get("all", "") == "1"
        return site.render(
            "preview.html", session, study=study, pid=pid, shown=shown,
            previews=previews(store, trials, files, study, pid),
        )  # fmt: skip
