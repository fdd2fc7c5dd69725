"""A STOW-RS client: files up as multipart/related, idempotent per SOP Instance UID.

Written on requests rather than dicomweb-client: we send files as they are on disk (no decode,
no re-encode), need a per-request ``verify=`` (requests here ignores Session.verify when the
environment sets CA variables), and dicomweb-client would add numpy and Pillow to the node.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from uploader.errors import PermanentError, RetriableError
from uploader.transport.forwardsig import HEADER, ForwardKey
from uploader.transport.paths import check_uid

_RETRIABLE = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class StowResult:
    """Which instances the server stored and which it refused (by SOP Instance UID)."""

    stored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class StowClient:
    """POST instances to ``{base}/studies``."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_bundle: Path | None = None,
        token: str | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 60.0,
        allow_plain_http: bool = False,
        signer: ForwardKey | None = None,
    ) -> None:
        if base_url.startswith("http://") and not allow_plain_http:
            raise PermanentError(
                f"{base_url}: plain HTTP is refused (set allow_plain_http to permit)"
            )
        self.base = base_url.rstrip("/")
        self.verify: str | bool = str(ca_bundle) if ca_bundle else True
        self.timeout = timeout_s
        self._token = token
        self._local = threading.local()  # a session per thread: requests' are not thread-safe
        self.auth = auth
        self.signer = signer  # node to node: each instance and manifest carries its tag

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session (kept: its connections are reused)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # our CA bundle, not the environment's
            if self._token:
                session.headers["Authorization"] = f"Bearer {self._token}"
            self._local.session = session
        return session

    def store(self, files: list[tuple[str, Path]]) -> StowResult:
        """Send (sop_uid, path) pairs in one request; return what the server acknowledged.

        Raises:
            RetriableError: the network or the server failed in a way worth retrying.
            PermanentError: refused for good (authentication, TLS, a 4xx other than 408/429).
        """
        boundary = "sdu-" + secrets.token_hex(12)
        body = bytearray()
        for _uid, path in files:
            data = path.read_bytes()
            tag = f"{HEADER}: {self.signer.sign_instance(data)}\r\n" if self.signer else ""
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n{tag}\r\n".encode()
            body += data
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        response = self._post(f"{self.base}/studies", bytes(body), headers)
        return _result(response, [uid for uid, _p in files])

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request; transport failures as RetriableError or PermanentError."""
        try:
            return self.session.request(
                method, url, verify=self.verify, timeout=self.timeout, auth=self.auth, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise tls_error(self.base, exc) from exc
        except requests.exceptions.RequestException as exc:
            raise RetriableError(f"cannot reach {self.base}: {type(exc).__name__}") from exc
        except OSError as exc:  # requests raises it for a CA bundle it cannot read
            raise PermanentError(f"TLS to {self.base}: the CA bundle cannot be read") from exc

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        response = self._request("POST", url, data=body, headers=headers)
        if response.status_code in (401, 403):
            raise PermanentError(
                f"{self.base} refused our credentials (HTTP {response.status_code})"
            )
        if response.status_code in _RETRIABLE:
            raise RetriableError(f"{self.base} answered HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 409:
            raise PermanentError(f"{self.base} refused the instances (HTTP {response.status_code})")
        return response

    def get_status(self, url: str, study_uid: str) -> dict[str, Any] | None:
        """GET what the anonymised node holds of a study (``url``: its status endpoint for the
        study), signed with the forwarding key over the study UID; None when it answers 404
        (it does not know the study).

        Raises:
            RetriableError: the node cannot be reached or failed for now.
            PermanentError: it refused our credentials or signature, or the request.
        """
        headers = {"Accept": "application/json"}
        if self.signer is not None:
            headers[HEADER] = self.signer.sign_status(study_uid)
        response = self._request("GET", url, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise PermanentError(
                f"{self.base} refused our credentials (HTTP {response.status_code})"
            )
        if response.status_code in _RETRIABLE:
            raise RetriableError(f"{self.base} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"{self.base} refused the request (HTTP {response.status_code})")
        try:
            doc = response.json()
        except ValueError as exc:
            raise RetriableError(f"{self.base} answered with no JSON document") from exc
        if not isinstance(doc, dict):
            raise RetriableError(f"{self.base} answered with no JSON object")
        return doc

    def instances(self, study_uid: str) -> set[str]:
        """QIDO-RS: the SOP Instance UIDs the server holds for a study (empty if none).

        Raises:
            RetriableError, PermanentError: as for ``store``.
        """
        url = f"{self.base}/studies/{check_uid(study_uid, 'the StudyInstanceUID')}/instances"
        response = self._request("GET", url, headers={"Accept": "application/dicom+json"})
        if response.status_code in (204, 404):
            return set()
        if response.status_code in _RETRIABLE:
            raise RetriableError(f"{self.base} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"{self.base} refused the query (HTTP {response.status_code})")
        found = set()
        for item in response.json() or []:
            value = (item.get("00080018") or {}).get("Value") or []
            if value:
                found.add(str(value[0]))
        return found

    def post_json(self, url: str, payload: dict[str, Any]) -> None:
        """POST a JSON document (the study manifest) with the same TLS and credentials."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.signer is not None:
            headers[HEADER] = self.signer.sign_manifest(body)
        self._post(url, body, headers)


def _sop_uids(items: Any) -> list[str]:
    out = []
    for item in items or []:
        value = (item.get("00081155") or {}).get("Value") or []
        if value:
            out.append(str(value[0]))
    return out


def certificate_refused(exc: BaseException) -> bool:
    """True if a TLS failure is the peer's certificate not being trusted (permanent), not a
    connection broken during the handshake or a transfer (worth retrying)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(item) or "hostname mismatch" in str(item):
            return True
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def tls_error(base: str, exc: BaseException) -> PermanentError | RetriableError:
    """The error to raise for a TLS failure talking to ``base``."""
    if certificate_refused(exc):
        return PermanentError(f"TLS to {base} failed: the certificate is not trusted")
    return RetriableError(f"TLS to {base} broke off: {type(exc).__name__}")


def _result(response: requests.Response, sent: list[str]) -> StowResult:
    """Read the PS3.18 response: ReferencedSOPSequence (stored), FailedSOPSequence (failed)."""
    try:
        doc = response.json() if response.content else {}
    except ValueError:
        doc = {}
    stored = _sop_uids((doc.get("00081199") or {}).get("Value"))
    failed = _sop_uids((doc.get("00081198") or {}).get("Value"))  # Orthanc: present, no Value
    if not stored and not failed and response.status_code in (200, 202):
        stored = list(sent)  # a server that acknowledges without listing: all stored
    return StowResult(stored=[s for s in stored if s in sent], failed=failed)
