"""What a sender does at the anonymised node's intake, as plain HTTP: a signed manifest first,
then signed STOW-RS parts (the identifiable node's forwarder does the same through StowClient).
Tests use it to send both the legitimate output and an attacker's variants."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import requests
from pydicom import dcmread

from uploader.transport.forwardsig import HEADER, ForwardKey

from .peers import FORWARD_KEY, AnonNode

KEY = ForwardKey(FORWARD_KEY.encode())


def manifest_for(files: list[Path] | list[bytes]) -> dict[str, Any]:
    """The manifest the identifiable node would send for these de-identified files."""
    from io import BytesIO

    sets = [
        dcmread(BytesIO(f) if isinstance(f, bytes) else f, stop_before_pixels=True) for f in files
    ]
    first = sets[0]
    comments = str(first.get("PatientComments", ""))
    return {
        "study_uid": str(first.StudyInstanceUID),
        "protocol": str(first.get("ClinicalTrialProtocolID", "")),
        "subject": str(first.get("PatientID", "")),
        "session": comments.rsplit("Session:", 1)[-1].strip(),
        "instances": len(sets),
        "sop_instance_uids": sorted(str(ds.SOPInstanceUID) for ds in sets),
    }


def post_manifest(
    anon: AnonNode, doc: dict[str, Any] | bytes, *, sign: bool = True, token: str | None = None
) -> requests.Response:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = {
        "Authorization": f"Bearer {token or anon.token}",
        "Content-Type": "application/json",
    }
    if sign:
        headers[HEADER] = KEY.sign_manifest(body)
    return requests.post(
        f"{anon.url}/manifests", data=body, headers=headers, verify=str(anon.ca), timeout=30
    )


def multipart(contents: list[bytes], *, sign: bool = True, boundary: str = "") -> tuple[bytes, str]:
    """A STOW-RS body and its Content-Type."""
    boundary = boundary or "b" + secrets.token_hex(8)
    body = b""
    for data in contents:
        tag = f"{HEADER}: {KEY.sign_instance(data)}\r\n" if sign else ""
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n{tag}\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(
    anon: AnonNode,
    contents: list[bytes] | list[Path],
    *,
    sign: bool = True,
    token: str | None = None,
) -> requests.Response:
    data = [c if isinstance(c, bytes) else c.read_bytes() for c in contents]
    body, content_type = multipart(data, sign=sign)
    return post_stow(anon, body, content_type, token=token)


def post_stow(
    anon: AnonNode, body: Any, content_type: str, *, token: str | None = None
) -> requests.Response:
    return requests.post(
        f"{anon.url}/dicom-web/studies",
        data=body,
        verify=str(anon.ca),
        timeout=120,
        headers={"Authorization": f"Bearer {token or anon.token}", "Content-Type": content_type},
    )


def send(anon: AnonNode, files: list[Path]) -> None:
    """Manifest, then the instances: what the identifiable node's forwarder does."""
    sent = post_manifest(anon, manifest_for(files))
    assert sent.ok, sent.text
    stored = stow(anon, files)
    assert stored.status_code == 200, stored.text


def failures(response: requests.Response) -> list[dict[str, Any]]:
    """The FailedSOPSequence items of a STOW-RS response."""
    return list((response.json().get("00081198") or {}).get("Value") or [])
