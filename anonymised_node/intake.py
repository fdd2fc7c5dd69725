"""The intake: STOW-RS (``POST /dicom-web/studies``) and the study manifest, bearer token required.

Every instance is checked on arrival with the core's knowledge-free verifier; one that fails is
refused in the STOW-RS response (FailedSOPSequence) and never stored; the refusal is recorded by
UID. Accepted instances are stored durably before the response. A re-sent instance is accepted
once. Staff use the review API with their own token.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from pydicom import dcmread

from anonymised_node.store import AnonStore
from uploader.deid.policy import PrivatePolicy
from uploader.deid.profile import Profile, load_table
from uploader.deid.verify import audit, declared_options
from uploader.protocols.model import Protocol
from uploader.store.spool import durable_write, name_for

log = logging.getLogger(__name__)
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Verifier:
    """The knowledge-free check, with each trial's private allow-list and burned-in allowance."""

    protocols: dict[str, Protocol] = field(default_factory=dict)
    _profiles: dict[frozenset[Any], Profile] = field(default_factory=dict)

    def problems(self, ds: Any) -> list[str]:
        """Return what is wrong with an arriving instance (empty: accept)."""
        pid = str(ds.get("ClinicalTrialProtocolID", "") or "")
        protocol = self.protocols.get(pid)
        if self.protocols and protocol is None:
            return [
                f"(0012,0020) ClinicalTrialProtocolID: not a trial served here ({pid or 'none'})"
            ]
        policy, allow = PrivatePolicy(), False
        if protocol is not None:
            policy = PrivatePolicy(t.key() for t in protocol.deidentify.keep_private)
            allow = bool(protocol.deidentify.allow_burned_in)
        options = declared_options(ds)
        profile = self._profiles.get(options)
        if profile is None:
            profile = self._profiles[options] = Profile(load_table(), options)
        return audit(ds, profile, policy, allow)


def _parts(body: bytes, content_type: str) -> list[bytes]:
    """Split a multipart/related body into its parts' contents."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/related") or not boundary:
        raise HTTPException(
            415, "expected multipart/related; type=application/dicom with a boundary"
        )
    out = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, sep, content = chunk.partition(b"\r\n\r\n")
        if sep:
            out.append(content[:-2] if content.endswith(b"\r\n") else content)
    return out


def _ref(sop_class: str, sop_uid: str, reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_uid]} if sop_uid else {"vr": "UI"},
    }
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def _accept(
    part: bytes, store: AnonStore, verifier: Verifier, received: Path
) -> tuple[bool, dict[str, Any]]:
    """Check one arriving instance and store it durably if it passes; (stored, reference)."""
    try:
        ds = dcmread(BytesIO(part))
    except Exception:
        return False, _ref("", "", CANNOT_UNDERSTAND)
    sop_uid, sop_class = str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", ""))
    problems = verifier.problems(ds)
    if problems:
        store.refuse(sop_uid, problems)
        log.warning("refused instance %s: %d problem(s)", sop_uid, len(problems))
        return False, _ref(sop_class, sop_uid, PROCESSING_FAILURE)
    path = received / name_for(sop_uid)[:2] / name_for(sop_uid)
    if not path.exists():
        durable_write(path, part)
    comments = str(ds.get("PatientComments", "") or "")
    session = comments.rsplit("Session:", 1)[1].strip() if "Session:" in comments else ""
    store.add_instance(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        sop_uid=sop_uid,
        sop_class=sop_class,
        path=str(path),
        protocol=str(ds.get("ClinicalTrialProtocolID", "") or ""),
        subject=str(ds.get("PatientID", "") or ""),
        session=session,
    )
    return True, _ref(sop_class, sop_uid)


def _bearer(request: Request, expected: str | None) -> None:
    given = request.headers.get("authorization", "")
    if expected is None or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


def make_app(
    store: AnonStore, data_dir: Path, token: str, verifier: Verifier, review_token: str | None
) -> FastAPI:
    """The intake web application: STOW-RS, manifests, and the review API."""
    app = FastAPI(title="Secure DICOM Uploader: anonymised node", docs_url=None, redoc_url=None)
    received = data_dir / "received"

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/dicom-web/studies")
    async def stow(request: Request) -> Response:
        _bearer(request, token)
        body = await request.body()
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for part in _parts(body, request.headers.get("content-type", "")):
            ok, ref = _accept(part, store, verifier, received)
            (stored if ok else failed).append(ref)
        doc: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": stored}}
        if failed:
            doc["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored else 409)
        return Response(json.dumps(doc), status_code=status, media_type="application/dicom+json")

    @app.post("/manifests")
    async def manifest(request: Request) -> dict[str, str]:
        _bearer(request, token)
        doc = await request.json()
        uids = doc.get("sop_instance_uids") or []
        study_uid = str(doc.get("study_uid") or "")
        if not study_uid and uids:
            rows = store.query(
                "SELECT s.study_uid FROM instances i JOIN studies s ON s.id=i.study_id"
                " WHERE i.sop_uid=?",
                (str(uids[0]),),
            )
            study_uid = rows[0]["study_uid"] if rows else ""
        if not study_uid:
            raise HTTPException(422, "the manifest names no study (study_uid or sop_instance_uids)")
        store.manifest(study_uid, doc)
        return {"status": "recorded"}

    _review_api(app, store, review_token)
    return app


def _review_api(app: FastAPI, store: AnonStore, review_token: str | None) -> None:
    """Staff: list studies, approve or reject one that is ready (audited: who, when, what)."""

    @app.get("/api/studies")
    def studies(request: Request) -> list[dict[str, Any]]:
        _bearer(request, review_token)
        return [s.__dict__ for s in store.studies()]

    @app.post("/api/studies/{study_id}/{decision}")
    async def decide(study_id: int, decision: str, request: Request) -> dict[str, str]:
        _bearer(request, review_token)
        doc = await request.json() if await request.body() else {}
        who = str(doc.get("by") or "api")
        study = store.study(study_id)
        if study is None:
            raise HTTPException(404, "no such study")
        if decision not in ("approve", "reject") or study.state != "ready":
            raise HTTPException(409, f"cannot {decision} a study that is {study.state}")
        reason = str(doc.get("reason") or "")
        if decision == "approve":
            store.set_state(study_id, "approved", who)
        else:
            store.set_state(study_id, "rejected", who, reason, reason=reason)
        return {"status": decision + "d"}
