"""Pushing approved studies to their repository, resuming, retrying, confirming arrival.

DICOMweb: STOW-RS in batches, per-instance results, exponential backoff with jitter on network
errors, 5xx and 429 (none on other 4xx), then QIDO-RS: every SOP Instance UID must be there
before the study is ``uploaded``. Directory: files written durably, then listed.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Protocol as TypingProtocol

from anonymised_node.config import Config, Target
from anonymised_node.store import PUSH_STATES, AnonState, AnonStore, AnonStudy
from anonymised_node.xnat import Xnat
from uploader.errors import PermanentError, RetriableError
from uploader.node.config import read_secret
from uploader.protocols.model import Protocol
from uploader.store.spool import durable_write
from uploader.transport.paths import check_label, check_uid, inside
from uploader.transport.stowrs import StowClient

log = logging.getLogger(__name__)
_NEVER = 1e18


class Repository(TypingProtocol):
    """What a push target does."""

    batch: int  # instances per send (progress is recorded after each)

    def send(self, study: AnonStudy, files: list[tuple[str, Path]]) -> list[str]:
        """Send instances; return the SOP Instance UIDs acknowledged."""
        ...

    def present(self, study: AnonStudy, expected: list[str]) -> set[str]:
        """Which of the ``expected`` SOP Instance UIDs the repository holds."""
        ...


class DicomWeb:
    """A DICOMweb repository (Orthanc, dcm4chee, cloud healthcare APIs)."""

    def __init__(self, target: Target) -> None:
        token = (
            read_secret(target.token_file, "repository token") if target.auth == "bearer" else None
        )
        auth = None
        if target.auth == "basic":
            auth = (target.username, read_secret(target.password_file, "repository password"))
        self.client = StowClient(
            target.url,
            ca_bundle=target.ca_bundle,
            token=token,
            auth=auth,
            timeout_s=target.timeout_s,
            allow_plain_http=target.allow_plain_http,
        )
        self.batch = target.batch_size

    def send(self, study: AnonStudy, files: list[tuple[str, Path]]) -> list[str]:
        return self.client.store(files).stored

    def present(self, study: AnonStudy, expected: list[str]) -> set[str]:
        return self.client.instances(study.study_uid)


class Directory:
    """A folder: <protocol>/<subject>/<session>/<sop>.dcm (the local demo's default)."""

    def __init__(self, target: Target) -> None:
        assert target.path is not None
        self.root = target.path
        self.batch = target.batch_size

    def _folder(self, study: AnonStudy) -> Path:
        """The study's folder, built only from checked labels and proven inside the root.

        Raises:
            PermanentError: a label is not a plain label (the study cannot go to a folder).
        """
        parts = [
            check_label(study.protocol or "none", "the trial's protocol ID"),
            check_label(study.subject or "none", "the subject pseudonym"),
            check_label(study.session or "none", "the session label"),
        ]
        return inside(self.root, *parts)

    def send(self, study: AnonStudy, files: list[tuple[str, Path]]) -> list[str]:
        folder = self._folder(study)
        for uid, path in files:
            target = inside(folder, f"{check_uid(uid, 'a SOP Instance UID')}.dcm")
            durable_write(target, path.read_bytes())
        return [uid for uid, _p in files]

    def present(self, study: AnonStudy, expected: list[str]) -> set[str]:
        folder = self._folder(study)
        return {p.stem for p in folder.glob("*.dcm")} if folder.exists() else set()


def _repository(target: Target) -> Repository:
    """The push client for a target (typed: each must be a Repository)."""
    if target.type == "dicomweb":
        return DicomWeb(target)
    if target.type == "xnat":
        return Xnat(target)
    return Directory(target)


class Pusher:
    """One worker: auto-approvals, pushes, retention."""

    def __init__(self, config: Config, store: AnonStore, protocols: dict[str, Protocol]) -> None:
        self.config, self.store, self.protocols = config, store, protocols
        self.targets: dict[str, Repository] = {
            name: _repository(t) for name, t in config.targets.items()
        }

    def step(self) -> bool:
        """Do one unit of work; False when idle."""
        auto = [pid for pid, p in self.protocols.items() if p.auto_approve]
        if auto:
            ready = self.store.ready_in(auto)
            for study_id in ready:
                self.store.set_state(
                    study_id, AnonState.APPROVED, "auto-approve", "protocol auto_approve"
                )
            if ready:
                return True
        study = self.store.claim(PUSH_STATES, self.config.workers.lease_s)
        if study is None:
            return self._retention()
        self._push(study)
        return True

    def _push(self, study: AnonStudy) -> None:
        name = self.config.trial_targets.get(study.protocol, self.config.default_target)
        self.store.set_state(study.id, AnonState.UPLOADING, "worker", f"to {name}")
        try:
            self._upload(study, self.targets[name])
        except (RetriableError, PermanentError) as exc:
            self._failed(study, str(exc), permanent=isinstance(exc, PermanentError))
            return
        self.store.set_state(
            study.id,
            AnonState.UPLOADED,
            "worker",
            f"confirmed in {name}",
            uploaded_at=time.time(),
            attempts=0,
            reason="",
        )

    def _upload(self, study: AnonStudy, repo: Repository) -> None:
        """Send what is missing, then confirm arrival.

        Raises:
            RetriableError: something was not acknowledged or is not in the repository yet.
            PermanentError: the repository refused for good (credentials, TLS).
        """
        todo = [(uid, Path(path)) for uid, _c, path, up in self.store.instances(study.id) if not up]
        for start in range(0, len(todo), repo.batch):  # progress kept per batch: a restart resumes
            self.store.mark_uploaded(repo.send(study, todo[start : start + repo.batch]))
        missing = [uid for uid, _c, _p, up in self.store.instances(study.id) if not up]
        if missing:
            raise RetriableError(f"{len(missing)} instance(s) not acknowledged")
        if self.config.push.confirm:
            uids = [uid for uid, _c, _p, _u in self.store.instances(study.id)]
            held = repo.present(study, uids)
            absent = [uid for uid in uids if uid not in held]
            if absent:
                raise RetriableError(f"{len(absent)} instance(s) not found in the repository")

    def _failed(self, study: AnonStudy, reason: str, *, permanent: bool) -> None:
        attempts = study.attempts + 1
        give_up = permanent or attempts >= self.config.push.max_attempts
        delay = self.config.push.backoff_s * 2 ** (attempts - 1) * (1 + random.random() / 2)  # noqa: S311 - jitter
        self.store.set_state(
            study.id,
            AnonState.FAILED,
            "worker",
            reason,
            reason=reason,
            attempts=attempts,
            next_attempt=_NEVER if give_up else time.time() + delay,
        )
        log.warning("study %d: upload failed (attempt %d): %s", study.id, attempts, reason)

    def _retention(self) -> bool:
        cutoff = time.time() - self.config.retention.delete_after_days * 86400
        due = self.store.uploaded_before(cutoff)
        for study_id in due:
            for _uid, _c, path, _u in self.store.instances(study_id):
                Path(path).unlink(missing_ok=True)
            self.store.set_state(
                study_id, AnonState.UPLOADED, "retention", "local copies deleted", purged=True
            )
        return bool(due)
