"""A series' images on the pages: the slice viewer, slices with contours and dose, thumbnails.

Both nodes' study pages use these routes over their ``StudyFiles``; every image is rendered on
the server (``render``) and cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydicom import dcmread

from uploader.web.accounts import Session
from uploader.web.dose import LEVELS
from uploader.web.render import (
    PRESETS,
    NotRenderable,
    RenderCache,
    Slice,
    pixels,
    render_slice,
    thumbnail,
)
from uploader.web.site import Site, row_id
from uploader.web.studyfiles import StudyFiles, dose_for, rois_for


def add_image_routes(site: Site, files: StudyFiles, cache: RenderCache) -> None:
    """The viewer (a slice with its structures and isodoses), its slices and thumbnails, under
    ``/studies/{id}/series/{uid}/``."""

    def pick(study_id: str, series_uid: str, request: Request) -> tuple[Any, int, str] | None:
        found = row_id(study_id)
        series = files.series(found, series_uid) if found else None
        if series is None or not series.slices:
            return None
        try:
            index = int(request.query_params.get("i", len(series.slices) // 2))
        except ValueError:
            index = 0
        index = max(0, min(index, len(series.slices) - 1))
        preset = request.query_params.get("preset", "")
        return series, index, preset if preset in PRESETS else ""

    def full(series: Any, index: int) -> Slice:
        item = series.slices[index]
        sop = str(item.ds.SOPInstanceUID)
        return Slice(dcmread(series.paths[sop]), item.plane, item.spacing)

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png")

    @site.page("/studies/{study_id}/series/{series_uid}/viewer")
    def viewer(request: Request, session: Session, study_id: str, series_uid: str) -> Response:
        found = pick(study_id, series_uid, request)
        if found is None:
            return site.render("error.html", session, 404, message="No such series.")
        series, index, preset = found
        why = ""
        try:
            cache.get(("probe", study_id, series.uid, index), lambda: _probe(full(series, index)))
        except NotRenderable as exc:
            why = str(exc)
        view = files.view(int(study_id))
        dose = dose_for(view, series)
        return site.render(
            "viewer.html",
            session,
            isodoses=[(p, c, p * dose.maximum / 100) for p, c in LEVELS] if dose else [],
            study_id=study_id,
            series=series,
            index=index,
            preset=preset,
            presets=PRESETS,
            why=why,
            rois=rois_for(view, series),
        )

    @site.page("/studies/{study_id}/series/{series_uid}/slice.png")
    def slice_png(request: Request, session: Session, study_id: str, series_uid: str) -> Response:
        found = pick(study_id, series_uid, request)
        if found is None:
            return Response("no such series", status_code=404, media_type="text/plain")
        series, index, preset = found
        view = files.view(int(study_id))
        rois, dose = rois_for(view, series), dose_for(view, series)
        key = ("slice", study_id, series.uid, index, preset, len(rois), id(dose))

        def make() -> bytes:
            return render_slice(full(series, index), preset, rois, dose)

        try:
            return png(cache.get(key, make))
        except NotRenderable as exc:
            return Response(str(exc), status_code=415, media_type="text/plain")

    @site.page("/studies/{study_id}/series/{series_uid}/thumb.png")
    def thumb(request: Request, session: Session, study_id: str, series_uid: str) -> Response:
        found = pick(study_id, series_uid, request)
        if found is None:
            return Response("no such series", status_code=404, media_type="text/plain")
        series, index, _preset = found
        try:
            return png(
                cache.get(
                    ("thumb", study_id, series.uid), lambda: thumbnail(full(series, index).ds)
                )
            )
        except NotRenderable as exc:
            return Response(str(exc), status_code=415, media_type="text/plain")


def _probe(item: Slice) -> bytes:
    """Render nothing but check that the pixels decode (NotRenderable says why not)."""
    pixels(item.ds)
    return b"ok"
