"""The intake: STOW-RS (``POST /dicom-web/studies``), the study manifest, the study status the
identifiable node asks for (``GET /studies/{uid}/status``, signed), and the review API.

The forwarders' bearer token opens the intake; the forwarding key proves what came from the
identifiable node: a manifest (which must come first) announces a study, its instances and its
pseudonyms, and each instance carries its own signature. Every part of a STOW-RS request is
judged in memory as it arrives, and only then written: it must parse completely, be signed, belong
to an announced study and pass the gate (``anonymised_node.gate``). A refused instance is answered
in FailedSOPSequence with its reason and recorded by a keyed digest of its UID; its bytes are never
written. A re-sent instance with the same bytes is accepted once; with other bytes it replaces the
stored copy while its study awaits review, and is refused with the reason after that. Malformed
requests get 400 with a one-line reason, oversize ones 413; no endpoint answers with a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from anonymised_node.bodies import (
    MIB,
    Part,
    boundary_of,
    multipart_parts,
    parse_json_object,
    raw_body,
    read_json_object,
)
from anonymised_node.complete import IncompleteError, parse_complete
from anonymised_node.config import IntakeSettings
from anonymised_node.gate import Gate
from anonymised_node.store import REPLACEABLE, AnonState, AnonStore
from anonymised_node.web.decisions import Decision
from uploader.store.spool import durable_write, name_for
from uploader.transport.forwardsig import HEADER, ForwardKey
from uploader.transport.paths import inside, valid_label, valid_uid

log = logging.getLogger(__name__)
PROCESSING_FAILURE = 0x0110
DUPLICATE = 0x0111
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Intake:
    """Judges and stores arriving instances."""

    store: AnonStore
    gate: Gate
    key: ForwardKey
    received: Path

    def accept(self, part: Part) -> tuple[bool, dict[str, Any]]:
        """Judge one part in memory; store it durably only if it passes: (stored, reference)."""
        kind = part.headers.get("content-type", "application/dicom").split(";")[0].strip()
        if kind.lower() != "application/dicom":
            return self._refused(None, CANNOT_UNDERSTAND, ["the part is not application/dicom"])
        try:
            ds = parse_complete(part.content)
        except IncompleteError as exc:
            return self._refused(None, CANNOT_UNDERSTAND, [f"incomplete DICOM: {exc.reason}"])
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        if not valid_uid(sop_uid) or not valid_uid(str(ds.get("StudyInstanceUID", ""))):
            return self._refused(ds, PROCESSING_FAILURE, ["a SOP Instance or Study UID is invalid"])
        tag = part.headers.get(HEADER.lower(), "")
        if not tag or not self.key.instance_signed(part.content, tag):
            problems = ["not signed with the forwarding key (not sent by the identifiable node)"]
        else:
            problems = self.gate.judge(ds, self.store.announced(str(ds.StudyInstanceUID)))
        if problems:
            return self._refused(ds, PROCESSING_FAILURE, problems)
        return self._store(ds, part.content)

    def _store(self, ds: Dataset, data: bytes) -> tuple[bool, dict[str, Any]]:
        sop_uid, study_uid = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
        digest = hashlib.sha256(data).hexdigest()
        held = self.store.held(sop_uid)
        if held is not None and held.study_uid != study_uid:
            return self._refused(ds, DUPLICATE, ["already received in another study"])
        if held is not None and held.digest == digest:
            return True, _ref(ds)  # the same bytes again: stored once
        if held is not None and held.state not in REPLACEABLE:
            return self._refused(
                ds, DUPLICATE, [f"already received with other bytes; its study is {held.state}"]
            )
        name = name_for(sop_uid)
        path = inside(self.received, name[:2], name)
        durable_write(path, data)
        announced = self.store.announced(study_uid)
        self.store.add_instance(
            study_uid=study_uid,
            sop_uid=sop_uid,
            sop_class=str(ds.get("SOPClassUID", "")),
            path=str(path),
            protocol=announced.protocol if announced else "",
            subject=announced.subject if announced else "",
            session=announced.session if announced else "",
            digest=digest,
        )
        return True, _ref(ds)

    def _refused(
        self, ds: Dataset | None, reason: int, problems: list[str]
    ) -> tuple[bool, dict[str, Any]]:
        uid = str(ds.get("SOPInstanceUID", "")) if ds is not None else ""
        digest = self.key.uid_digest(uid) if uid else "uid-unreadable"
        self.store.refuse(digest, problems)
        log.warning(
            "refused instance %s: %d problem(s), first: %s", digest, len(problems), problems[0]
        )
        return False, _ref(ds, reason, "; ".join(problems))


def _ref(ds: Dataset | None, reason: int | None = None, comment: str = "") -> dict[str, Any]:
    """A STOW-RS reference; UIDs are echoed only when they are valid UIDs."""
    sop_class = str(ds.get("SOPClassUID", "")) if ds is not None else ""
    sop_uid = str(ds.get("SOPInstanceUID", "")) if ds is not None else ""
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if valid_uid(sop_class) else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_uid]} if valid_uid(sop_uid) else {"vr": "UI"},
    }
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
        item["00000902"] = {"vr": "LO", "Value": [comment[:1024]]}  # ErrorComment: the reason
    return item


def _bearer(request: Request, expected: str | None) -> None:
    given = request.headers.get("authorization", "")
    if expected is None or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


def _one_line(exc: RequestValidationError) -> str:
    err = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"invalid request: {where}: {err.get('msg', 'malformed')}"


def make_app(
    store: AnonStore,
    data_dir: Path,
    settings: IntakeSettings,
    *,
    token: str,
    gate: Gate,
    key: ForwardKey,
    review_token: str | None,
) -> FastAPI:
    """The intake web application: STOW-RS, manifests, and the review API."""
    app = FastAPI(title="Secure DICOM Uploader: anonymised node", docs_url=None, redoc_url=None)
    app.openapi_url = None
    intake = Intake(store, gate, key, data_dir / "received")
    max_json = settings.max_json_kb * 1024

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "the node could not handle the request (see its log)"}, 500)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/dicom-web/studies")
    async def stow(request: Request) -> Response:
        _bearer(request, token)
        boundary = boundary_of(request.headers.get("content-type", ""))
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        parts = multipart_parts(
            request,
            boundary,
            max_body=settings.max_body_mb * MIB,
            max_part=settings.max_instance_mb * MIB,
        )
        async for part in parts:
            ok, ref = await run_in_threadpool(intake.accept, part)
            (stored if ok else failed).append(ref)
        if not stored and not failed:
            raise HTTPException(400, "the request holds no instance")
        doc: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": stored}}
        if failed:
            doc["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored else 409)
        return Response(json.dumps(doc), status_code=status, media_type="application/dicom+json")

    @app.post("/manifests")
    async def manifest(request: Request) -> dict[str, str]:
        _bearer(request, token)
        body = await raw_body(request, max_json)
        doc = parse_json_object(body)
        signature = request.headers.get(HEADER, "")
        if not signature or not key.manifest_signed(body, signature):
            raise HTTPException(403, "the manifest is not signed with the forwarding key")
        study_uid = _manifest_checked(doc, gate)
        await run_in_threadpool(store.manifest, study_uid, doc)
        return {"status": "recorded"}

    @app.get("/studies/{study_uid}/status")
    def status(study_uid: str, request: Request) -> dict[str, Any]:
        """What this node holds of a study, asked by the identifiable node by its de-identified
        UID (signed with the forwarding key): counts and a state, nothing else."""
        _bearer(request, token)
        signature = request.headers.get(HEADER, "")
        if not signature or not key.status_signed(study_uid, signature):
            raise HTTPException(403, "the request is not signed with the forwarding key")
        held = store.holding(study_uid) if valid_uid(study_uid) else None
        if held is None:
            raise HTTPException(404, "not found")
        return {"announced": held.announced, "stored": held.stored, "state": str(held.state)}

    _review_api(app, store, review_token, max_json)
    return app


def _manifest_checked(doc: dict[str, Any], gate: Gate) -> str:
    """Validate a manifest's fields; return its study UID.

    Raises:
        HTTPException: 400 naming the first bad field; 422 for a trial not served here.
    """
    study_uid = doc.get("study_uid")
    if not valid_uid(study_uid):
        raise HTTPException(400, "manifest: study_uid must be a valid UID")
    for name in ("protocol", "subject", "session"):
        if not valid_label(doc.get(name)):
            raise HTTPException(400, f"manifest: {name} must be a plain label")
    count = doc.get("instances")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise HTTPException(400, "manifest: instances must be a whole number")
    uids = doc.get("sop_instance_uids")
    if not isinstance(uids, list) or not all(valid_uid(u) for u in uids):
        raise HTTPException(400, "manifest: sop_instance_uids must be a list of valid UIDs")
    if len(set(uids)) != len(uids) or len(uids) != count:
        raise HTTPException(400, "manifest: sop_instance_uids must list `instances` distinct UIDs")
    if "validation" in doc and not isinstance(doc["validation"], dict):
        raise HTTPException(400, "manifest: validation must be an object")
    if not gate.serves(str(doc["protocol"])):
        raise HTTPException(422, "manifest: the trial is not served by this node")
    wrong = gate.pseudonyms_problem(str(doc["protocol"]), str(doc["subject"]), str(doc["session"]))
    if wrong:
        raise HTTPException(422, f"manifest: {wrong}")
    wrong = gate.manifest_uid_problem(str(doc["protocol"]), [str(study_uid), *uids])
    if wrong:
        raise HTTPException(422, f"manifest: {wrong}")
    return str(study_uid)


def _review_api(app: FastAPI, store: AnonStore, review_token: str | None, max_json: int) -> None:
    """Staff: list studies, approve or reject one that is ready (audited: who, when, what)."""

    @app.get("/api/studies")
    def studies(request: Request) -> list[dict[str, Any]]:
        _bearer(request, review_token)
        return [s.__dict__ for s in store.studies()]

    @app.post("/api/studies/{study_id}/{decision}")
    async def decide(study_id: str, decision: str, request: Request) -> dict[str, str]:
        _bearer(request, review_token)
        if not study_id.isdigit() or len(study_id) > 18:
            raise HTTPException(400, "the study number must be a whole number")
        if decision not in (Decision.APPROVE, Decision.REJECT):
            raise HTTPException(404, "the decision is approve or reject")
        doc = await read_json_object(request, max_json)
        who, reason = doc.get("by", "api"), doc.get("reason", "")
        if not isinstance(who, str) or not isinstance(reason, str) or len(who) > 64:
            raise HTTPException(400, "`by` and `reason` must be strings (`by` at most 64)")
        study = store.study(int(study_id))
        if study is None:
            raise HTTPException(404, "no such study")
        if study.state != AnonState.READY:
            raise HTTPException(409, f"cannot {decision} a study that is {study.state}")
        if decision == Decision.APPROVE:
            store.set_state(study.id, AnonState.APPROVED, who or "api")
        else:
            store.set_state(study.id, AnonState.REJECTED, who or "api", reason, reason=reason)
        return {"status": decision + "d"}
