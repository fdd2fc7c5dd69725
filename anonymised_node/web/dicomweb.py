"""Read-only DICOMweb over the studies the node holds (QIDO-RS and WADO-RS), behind the staff
sign-in, so a DICOMweb viewer (OHIF, ...) can open the review queue. No STOW, no delete.

Studies, series and instances are searched (exact matches on UIDs and PatientID, limit/offset);
studies, series and instances are retrieved as stored (multipart/related; application/dicom),
with their metadata (application/dicom+json, pixel data left out) and uncompressed frames.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydicom import dcmread
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool

from anonymised_node.store import AnonStore
from anonymised_node.web import queue
from uploader.web.site import Site
from uploader.web.studyfiles import Series, StudyFiles

DICOM_JSON = "application/dicom+json"
_STUDY_LEVEL = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                "PatientName", "PatientID", "StudyDescription")  # fmt: skip
_SERIES_LEVEL = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription")
_INSTANCE_LEVEL = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                   "NumberOfFrames")  # fmt: skip


def _pick(ds: Any, keywords: tuple[str, ...]) -> Dataset:
    out = Dataset()
    for k in keywords:
        if k in ds:
            setattr(out, k, ds.data_element(k).value)
    return out


def _json(items: list[Dataset], status: int = 200) -> Response:
    body = json.dumps([d.to_json_dict(bulk_data_threshold=10**9) for d in items])
    return Response(
        body, status_code=status if items or status != 200 else 200, media_type=DICOM_JSON
    )


def _multipart(paths: list[Path], kind: str = "application/dicom") -> StreamingResponse:
    boundary = secrets.token_hex(16)

    def parts() -> Iterator[bytes]:
        for path in paths:
            yield f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode()
            yield path.read_bytes()
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    media = f'multipart/related; type="{kind}"; boundary={boundary}'
    return StreamingResponse(parts(), media_type=media)


class _Reader:
    """The read-only DICOMweb resources of one node."""

    def __init__(self, store: AnonStore, files: StudyFiles) -> None:
        self.store, self.files = store, files

    def _series(self, uid: str, series_uid: str = "") -> list[Series] | None:
        study_id = self.store.held_study(uid)
        if study_id is None:
            return None
        every = self.files.view(study_id).series
        return [s for s in every if s.uid == series_uid] if series_uid else every

    def studies(self, request: Request) -> Response:
        q = request.query_params
        uids = self.store.study_uids()
        out = []
        for row in queue.rows(self.store):
            uid = uids[row.id]
            if (
                q.get("StudyInstanceUID", uid) != uid
                or q.get("PatientID", row.subject) != row.subject
            ):
                continue
            d = Dataset()
            d.StudyInstanceUID, d.PatientID = uid, row.subject
            d.ModalitiesInStudy = sorted(row.modalities)
            d.NumberOfStudyRelatedInstances = row.instances
            out.append(d)
        offset, limit = int(q.get("offset", 0) or 0), int(q.get("limit", 0) or 0)
        return _json(out[offset : offset + limit] if limit else out[offset:])

    def series(self, request: Request, uid: str) -> Response:
        found = self._series(uid)
        if found is None:
            return Response(status_code=404)
        out = []
        for s in found:
            d = _pick(s.headers[0], _STUDY_LEVEL + _SERIES_LEVEL)
            d.NumberOfSeriesRelatedInstances = len(s.headers)
            out.append(d)
        return _json(out)

    def instances(self, request: Request, uid: str, series_uid: str = "") -> Response:
        found = self._series(uid, series_uid)
        if not found:
            return Response(status_code=404)
        keys = _STUDY_LEVEL + _SERIES_LEVEL + _INSTANCE_LEVEL
        return _json([_pick(h, keys) for s in found for h in s.headers])

    def _paths(self, uid: str, series_uid: str, sop: str) -> list[Path]:
        found = self._series(uid, series_uid) or []
        return [p for s in found for u, p in s.paths.items() if not sop or u == sop]

    def retrieve(self, request: Request, uid: str, series_uid: str = "", sop: str = "") -> Response:
        paths = self._paths(uid, series_uid, sop)
        return _multipart(paths) if paths else Response(status_code=404)

    def metadata(self, request: Request, uid: str, series_uid: str = "", sop: str = "") -> Response:
        paths = self._paths(uid, series_uid, sop)
        if not paths:
            return Response(status_code=404)
        return _json([dcmread(p, stop_before_pixels=True) for p in paths])

    def frames(
        self, request: Request, uid: str, series_uid: str, sop: str, numbers: str
    ) -> Response:
        paths = self._paths(uid, series_uid, sop)
        if not paths:
            return Response(status_code=404)
        ds = dcmread(paths[0])
        if ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
            return Response("frames are served for uncompressed pixel data only", status_code=406)
        count = int(ds.get("NumberOfFrames", 1) or 1)
        size = len(ds.PixelData) // count
        try:
            wanted = [int(n) for n in numbers.split(",")]
        except ValueError:
            return Response("frame numbers are 1, 2, ...", status_code=400)
        if any(n < 1 or n > count for n in wanted):
            return Response(f"this instance has {count} frame(s)", status_code=404)
        boundary = secrets.token_hex(16)
        kind = "application/octet-stream"
        body = b"".join(
            f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode()
            + ds.PixelData[(n - 1) * size : n * size]
            + b"\r\n"
            for n in wanted
        )
        body += f"--{boundary}--\r\n".encode()
        media = f'multipart/related; type="{kind}"; boundary={boundary}'
        return Response(body, media_type=media)


def add_dicomweb(site: Site, store: AnonStore, files: StudyFiles) -> None:
    """Register the read-only DICOMweb routes under /dicom-web on the pages' server (a request
    without a live session gets 401: a viewer signs in through the pages)."""
    reader = _Reader(store, files)
    study = "/dicom-web/studies/{uid}"
    series = study + "/series/{series_uid}"
    instance = series + "/instances/{sop}"
    routes: list[tuple[str, Callable[..., Response]]] = [
        ("/dicom-web/studies", reader.studies),
        (study + "/series", reader.series),
        (study + "/instances", reader.instances),
        (series + "/instances", reader.instances),
        (study, reader.retrieve),
        (series, reader.retrieve),
        (instance, reader.retrieve),
        (study + "/metadata", reader.metadata),
        (series + "/metadata", reader.metadata),
        (instance + "/metadata", reader.metadata),
        (instance + "/frames/{numbers}", reader.frames),
    ]
    for path, handler in routes:
        site.app.add_api_route(
            path, _guarded(site, handler), methods=["GET"], include_in_schema=False
        )


def _guarded(site: Site, handler: Callable[..., Response]) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        if site.accounts.session(request.cookies.get(site.cookie, "")) is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        found: Response = await run_in_threadpool(handler, request, **request.path_params)
        return found

    return endpoint
