"""The XNAT target: the session zipped to the import service, then shared into the trial.

The contract (XNAT REST, as XNAT documents it; tests run it against a server implementing exactly
this, since no XNAT can run here):

1. ``POST {url}/data/services/import?import-handler=DICOM-zip&PROJECT_ID=<site project>
   &SUBJECT_ID=<subject>&EXPT_LABEL=<session>&overwrite=append&dest=/archive``, body the zip,
   ``Content-Type: application/zip``, basic auth. 200: the session's archive path as text.
2. ``PUT {url}/data/projects/<site>/subjects/<subject>/projects/<trial>?label=<subject>`` and
   ``PUT {url}/data/projects/<site>/subjects/<subject>/experiments/<session>/projects/<trial>
   ?label=<session>``: the subject and session shared into the trial's project (the Secure DICOM
   Uploader paper's layout: a project per site, a project per trial). 200 or 201, or 409 when
   already shared.
3. ``GET {url}/data/projects/<site>/subjects/<subject>/experiments/<session>/scans/ALL/files
   ?format=json``: ``ResultSet.Result`` lists the files; the upload is confirmed when the session
   holds at least as many DICOM files as we sent (XNAT renames files, so UIDs cannot be compared).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import requests

from anonymised_node.config import Target
from anonymised_node.store import AnonStudy
from uploader.errors import PermanentError, RetriableError
from uploader.node.config import read_secret
from uploader.transport.paths import check_label, check_uid
from uploader.transport.stowrs import tls_error

_RETRIABLE = {408, 429, 500, 502, 503, 504}


class Xnat:
    """Pushes one session per study into the site's project and shares it into the trial's."""

    def __init__(self, target: Target) -> None:
        self.base = target.url.rstrip("/")
        self.project = check_label(target.project, "the XNAT project")
        self.share = target.share_to_trial
        self.batch = 10**9  # one zip per session
        self.timeout = target.timeout_s
        self.verify: str | bool = str(target.ca_bundle) if target.ca_bundle else True
        password = (
            read_secret(target.password_file, "XNAT password") if target.password_file else ""
        )
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.auth = (target.username, password)

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            r = self.session.request(
                method, f"{self.base}{path}", verify=self.verify, timeout=self.timeout, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise tls_error(self.base, exc) from exc
        except requests.exceptions.RequestException as exc:
            raise RetriableError(f"cannot reach {self.base}: {type(exc).__name__}") from exc
        if r.status_code in (401, 403):
            raise PermanentError(f"XNAT refused our credentials (HTTP {r.status_code})")
        if r.status_code in _RETRIABLE:
            raise RetriableError(f"XNAT answered HTTP {r.status_code}")
        return r

    def send(self, study: AnonStudy, files: list[tuple[str, Path]]) -> list[str]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for uid, path in files:
                zf.write(path, f"{check_uid(uid, 'a SOP Instance UID')}.dcm")
        subject, session = _labels(study)
        params = {
            "import-handler": "DICOM-zip",
            "PROJECT_ID": self.project,
            "SUBJECT_ID": subject,
            "EXPT_LABEL": session,
            "overwrite": "append",
            "dest": "/archive",
        }
        r = self._call(
            "POST",
            "/data/services/import",
            params=params,
            data=buf.getvalue(),
            headers={"Content-Type": "application/zip"},
        )
        if r.status_code >= 400:
            raise PermanentError(f"XNAT refused the import (HTTP {r.status_code})")
        if self.share and study.protocol and study.protocol != self.project:
            self._share(study, check_label(study.protocol, "the trial's protocol ID"))
        return [uid for uid, _p in files]

    def _share(self, study: AnonStudy, trial: str) -> None:
        subject, session = _labels(study)
        base = f"/data/projects/{self.project}/subjects/{subject}"
        for path, label in (
            (f"{base}/projects/{trial}", subject),
            (f"{base}/experiments/{session}/projects/{trial}", session),
        ):
            r = self._call("PUT", path, params={"label": label})
            if r.status_code >= 400 and r.status_code != 409:
                raise PermanentError(f"XNAT refused to share into {trial} (HTTP {r.status_code})")

    def present(self, study: AnonStudy, expected: list[str]) -> set[str]:
        subject, session = _labels(study)
        path = (
            f"/data/projects/{self.project}/subjects/{subject}/experiments/{session}"
            "/scans/ALL/files"
        )
        r = self._call("GET", path, params={"format": "json"})
        if r.status_code == 404:
            return set()
        if r.status_code >= 400:
            raise RetriableError(f"XNAT could not list the session (HTTP {r.status_code})")
        rows = (r.json().get("ResultSet") or {}).get("Result") or []
        dicom = [row for row in rows if str(row.get("Name", "")).lower().endswith(".dcm")]
        return set(expected) if len(dicom) >= len(expected) else set()


def _labels(study: AnonStudy) -> tuple[str, str]:
    """The subject and session as URL segments, checked (never a path from a raw value).

    Raises:
        PermanentError: one is not a plain label.
    """
    return (
        check_label(study.subject, "the subject pseudonym"),
        check_label(study.session, "the session label"),
    )
