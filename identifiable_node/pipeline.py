"""The per-study pipeline: complete -> opt-out -> trial -> validate -> pseudonymise -> forward
-> confirmed (the anonymised node, asked with a signed status request, holds every instance).

A worker claims one study (with a lease), moves it one state on, and releases it with the new
state and an audit row, in one transaction. Every step is idempotent: after a crash (even
``kill -9``) the study is claimed again when its lease expires and the step is redone; outputs
are deterministic and forwarding is keyed by SOP Instance UID, so nothing is lost or doubled.
Logs name the study's row id and the pseudonymous labels, never a patient.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from pydicom import dcmread

from identifiable_node.config import Config
from identifiable_node.decisions import final_relabel, validate_files
from identifiable_node.deidpool import (
    Done,
    Outcome,
    Task,
    deid_file,
    failure_reason,
    run,
    study_identifiers,
)
from identifiable_node.optout import OptOut
from identifiable_node.store import Instance, SetAsideKind, Store, Study, StudyState
from identifiable_node.trials import Trials
from uploader.deid.batch import modality_label
from uploader.errors import (
    ConfigError,
    PermanentError,
    RetriableError,
    UploaderError,
)
from uploader.hardening import describe
from uploader.store.spool import Spool, fsync_files, name_for
from uploader.transport.stowrs import StowClient

log = logging.getLogger(__name__)

#: A study step that fails this many times in a row goes to review (instead of for ever).
STEP_ATTEMPTS = 5
#: Seconds before the first retry of a failed step; doubled each time, at most STEP_BACKOFF_MAX_S.
STEP_BACKOFF_S = 2.0
STEP_BACKOFF_MAX_S = 300.0
#: The longest wait between two status checks of a forwarded study.
CONFIRM_BACKOFF_MAX_S = 600.0
#: The anonymised node's states, as staff here read them.
ANON_LABEL = {
    "receiving": "receiving",
    "ready": "waiting for approval",
    "approved": "approved",
    "uploading": "being pushed to the repository",
    "uploaded": "in the repository",
    "failed": "push to the repository failing, retrying",
    "rejected": "rejected",
}
#: Sequences inside sequences an instance may have (real objects have fewer than 10).
MAX_SEQUENCE_DEPTH = 32


def probe(path: Path) -> str | None:
    """Read an instance's whole header, every sequence included; return why it cannot be read
    (one line, no values), or None when it reads. Nesting is followed without recursion and
    bounded by ``MAX_SEQUENCE_DEPTH``."""
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)  # pixels: de-identification's
        stack = [(ds, 0)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_SEQUENCE_DEPTH:
                return f"its sequences are nested more than {MAX_SEQUENCE_DEPTH} deep"
            for elem in item:
                if elem.VR == "SQ":
                    stack.extend((child, depth + 1) for child in elem.value)
                else:
                    _ = elem.value  # decode it now: a value that cannot be decoded shows here
    except Exception as exc:  # hostile input can raise anything: a reason, never a crash
        return failure_reason(exc)
    return None


class Pipeline:
    """Moves studies through their states. One instance per worker thread."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        spool: Spool,
        trials: Trials,
        optout: OptOut,
        forwarder: StowClient | None,
        owner: str,
        busy: Callable[[str], bool] | None = None,
        deid_processes: int = 1,
    ) -> None:
        self.config, self.store, self.spool = config, store, spool
        self.trials, self.optout, self.forwarder, self.owner = trials, optout, forwarder, owner
        # True while a study's journaled instances still lack their spool files
        self.busy = busy or (lambda _study_uid: False)
        self.deid_processes = deid_processes  # worker processes for a large study
        self.review_when_cleaned = config.study.review_when_cleaned
        self._claimed: Study | None = None

    def _release(
        self,
        study_id: int,
        state: StudyState,
        actor: str,
        detail: str = "",
        *,
        reason: str = "",
        retry_in: float = 0.0,
        attempts: int | None = None,
        report: str | None = None,
        protocol: str | None = None,
        subject: str | None = None,
        session: str | None = None,
    ) -> None:
        """Release our claim; if a late instance reopened the study meanwhile, leave it be. A
        step that moves the study to another state starts its count of failures afresh."""
        claimed = self._claimed
        if claimed is not None and claimed.id == study_id and state != claimed.state:
            attempts = 0 if attempts is None else attempts
        released = self.store.release(
            study_id,
            state,
            actor,
            detail,
            lease=self.owner,
            reason=reason,
            retry_in=retry_in,
            attempts=attempts,
            report=report,
            protocol=protocol,
            subject=subject,
            session=session,
        )
        if not released:
            log.info("study %d changed while being worked on: the step will be redone", study_id)

    def step(self) -> bool:
        """Do one unit of work; return False when there was nothing to do."""
        forward = self.config.forward
        checks = forward.confirm_attempts if forward.status_url and self.forwarder else 0
        study = self.store.claim(self.owner, self.config.workers.lease_s, confirm_checks=checks)
        if study is None:
            return False
        handler = {
            StudyState.RECEIVING: self._receiving,
            StudyState.COMPLETE: self._complete,
            StudyState.VALIDATED: self._pseudonymise,
            StudyState.PSEUDONYMISED: self._forward,
            StudyState.FORWARDED: self._confirm,
            StudyState.CONFIRMED: self._confirm,
        }[study.state]
        self._claimed = study
        try:
            handler(study)
        except ConfigError as exc:
            self._release(study.id, StudyState.NEEDS_REVIEW, self.owner, reason=str(exc))
        except Exception as exc:  # anything at all: retried a few times, then staff are told
            self._step_failed(study, exc)
        finally:
            self._claimed = None
        return True

    def _step_failed(self, study: Study, exc: Exception) -> None:
        """Retry a failed step with back-off; after ``STEP_ATTEMPTS`` send the study to review
        with the error in one line (our own errors' messages; others only their kind and
        place: a message could quote a value)."""
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, UploaderError) else describe(exc)
        attempts = study.attempts + 1
        if attempts >= STEP_ATTEMPTS:
            log.error(
                "study %d: the %s step failed %d times (%s): sent to review",
                study.id, study.state, attempts, what,
            )  # fmt: skip
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason=f"the {study.state} step failed {attempts} times: {what}",
                attempts=0,
            )
            return
        delay = min(STEP_BACKOFF_S * 2 ** (attempts - 1), STEP_BACKOFF_MAX_S)
        log.warning(
            "study %d: the %s step failed (%s), attempt %d of %d; again in %.0f s",
            study.id, study.state, what, attempts, STEP_ATTEMPTS, delay,
        )  # fmt: skip
        self._release(
            study.id,
            study.state,
            self.owner,
            f"error: {what}",
            retry_in=delay,
            attempts=attempts,
        )

    def _set_aside(self, study: Study, sop_uid: str, path: Path, reason: str) -> None:
        """Keep an instance that cannot be read or de-identified in quarantine, with its
        reason; it leaves the study, whose other instances go on."""
        try:
            kept = str(
                self.spool.quarantine(path, name_for(sop_uid), f"study {study.id}: {reason}")
            )
        except FileNotFoundError:  # its spool file is gone: nothing left to keep
            kept, reason = "", f"{reason}; its spool file is missing"
        self.store.set_aside(
            study.id, SetAsideKind.QUARANTINED, kept, reason, sop_uid=sop_uid, actor=self.owner
        )
        path.unlink(missing_ok=True)  # its copy is in quarantine (else a rescan would re-add it)
        log.warning("study %d: an instance was quarantined: %s", study.id, reason)

    def _unreviewed_conflicts(self, study: Study) -> int:
        """Conflicting copies of the study's instances recorded since staff last decided."""
        conflicts = [
            r.at for r in self.store.set_aside_rows(study.id) if r.kind == SetAsideKind.CONFLICT
        ]
        if not conflicts:
            return 0
        decided = [r.at for r in self.store.audit_rows(study.id) if r.detail.startswith("decision")]
        last = max(decided, default=0.0)
        return sum(1 for at in conflicts if at > last)

    def _protocol_id(self, study: Study) -> str | None:
        return study.decided.get("protocol") or study.protocol or self.config.node.default_protocol

    def _receiving(self, study: Study) -> None:
        now = time.time()
        quiet = self.config.study.quiet_period_s - (now - study.last_received)
        if quiet > 0 or self.busy(study.study_uid):
            self._release(study.id, StudyState.RECEIVING, self.owner, retry_in=max(quiet, 0.2))
            return
        pid = self._protocol_id(study)
        protocol = self.trials.get(pid) if pid else None
        instances = self.store.instances(study.id)
        if not instances:
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason="no instances left in this study",
            )
            return
        have = {i.modality for i in instances}
        missing = set(protocol.modalities.required) - have if protocol else set()
        waited = now - study.first_seen
        if missing and waited < self.config.study.complete_timeout_s:
            self._release(
                study.id,
                StudyState.RECEIVING,
                self.owner,
                retry_in=min(self.config.study.quiet_period_s or 1, 30),
            )
            return
        self._release(study.id, StudyState.COMPLETE, self.owner, f"{len(have)} modality(ies)")

    def _complete(self, study: Study) -> None:
        if self._back_to_receiving(study):
            return
        ids = [study.patient_id, *study.other_ids.split("\\")]
        if self.optout.blocked([i for i in ids if i]):
            self._release(
                study.id,
                StudyState.OPTED_OUT,
                self.owner,
                reason="patient on the data opt-out list",
            )
            return
        pid = self._protocol_id(study)
        if pid is None:
            self._release(study.id, StudyState.NEEDS_REVIEW, self.owner, reason="no trial assigned")
            return
        protocol = self.trials.get(pid)
        if protocol is None:
            self._release(
                study.id, StudyState.NEEDS_REVIEW, self.owner, reason=f"unknown trial {pid}"
            )
            return
        conflicts = self._unreviewed_conflicts(study)
        if conflicts:
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason=f"{conflicts} instance(s) arrived again with other content: both copies "
                "are in quarantine; approve to go on with the first",
            )
            return
        if self._quarantine_unreadable(study):
            return
        files = [(Path(i.path), name_for(i.sop_uid)) for i in self.store.instances(study.id)]
        relabel = dict(study.decided.get("relabel", {}))  # staff's relabels are what is checked
        report = validate_files(protocol, Path(self.spool.spool), files, relabel)
        doc = json.dumps(report.as_dict())
        if not report.passed and not study.decided.get("override"):
            fails = sum(c.status == "fail" for c in report.checks)
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason=f"{fails} validation check(s) failed",
                report=doc,
                protocol=pid,
            )
            return
        self._release(
            study.id,
            StudyState.VALIDATED,
            self.owner,
            "override" if not report.passed else "",
            report=doc,
            protocol=pid,
        )

    def _quarantine_unreadable(self, study: Study) -> bool:
        """Quarantine each instance that cannot be read whole; True (and the study to review,
        the rest kept) when there was one."""
        bad = []
        for inst in self.store.instances(study.id):
            reason = probe(Path(inst.path))
            if reason is not None:
                self._set_aside(study, inst.sop_uid, Path(inst.path), reason)
                bad.append(reason)
        if not bad:
            return False
        left = len(self.store.instances(study.id))
        self._release(
            study.id,
            StudyState.NEEDS_REVIEW,
            self.owner,
            reason=f"{len(bad)} instance(s) quarantined ({bad[0]}); {left} kept: "
            "approve to go on without them",
        )
        return True

    def _back_to_receiving(self, study: Study) -> bool:
        """True (and the study back to receiving) while instances are only in the journal."""
        if not self.busy(study.study_uid):
            return False
        self._release(
            study.id, StudyState.RECEIVING, self.owner, "instances still arriving", retry_in=0.2
        )
        return True

    def _held_for_cleaning(self, study: Study, pid: str, written: list[Done]) -> bool:
        """Cleaning struck part of a kept value (a name in an ROI name or a description): staff
        see where before anything leaves, and approving forwards the cleaned outputs. Returns
        True when the study now waits for them."""
        struck = [w for d in written for w in d.struck]
        if not struck or not self.review_when_cleaned or study.decided.get("override"):
            return False
        subject, session = written[0].subject, written[0].session
        self.store.link(pid, study.patient_id, study.study_uid, subject, session)
        self._release(
            study.id,
            StudyState.NEEDS_REVIEW,
            self.owner,
            reason=f"cleaning struck an identifier in {len(struck)} kept value(s) "
            f"({'; '.join(sorted(set(struck))[:3])}): check and approve to forward",
            subject=subject,
            session=session,
        )
        return True

    def _pseudonymise(self, study: Study) -> None:
        if self._back_to_receiving(study):
            return
        pid = self._protocol_id(study) or ""
        settings = self.trials.settings(pid, final_relabel(study))
        manual, subject = self.trials.manual_subject(pid, study.patient_id)
        subject = study.decided.get("subject") or subject
        if manual and not subject:
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason="no manual subject ID for this patient",
            )
            return
        instances = self.store.instances(study.id)
        label = modality_label({i.modality for i in instances})
        todo = [(i.sop_uid, Path(i.path)) for i in instances if i.out_path is None]
        task = Task(
            self.spool.outbox / str(study.id),
            settings,
            label,
            subject,
            study.decided.get("session"),
            study=study_identifiers([Path(i.path) for i in instances], settings.profile),
        )
        session, withheld = study.session or "", 0
        done: list[Done] = []
        if todo:  # the first here: its subject holds for the whole study
            first = deid_file(*todo[0], task)
            done.append(first)
            if first.status == Outcome.WRITTEN:
                task = replace(task, subject=first.subject)
            stage = settings.scripts
            shared = bool(stage and stage.numbers_sessions)  # visit numbers: one process
            done.extend(run(todo[1:], task, 1 if shared else self.deid_processes))
        bad = next((d for d in done if d.status == Outcome.UNVERIFIED), None)
        if bad is not None:
            self._release(
                study.id,
                StudyState.QUARANTINED,
                self.owner,
                reason=f"verification failed: {bad.detail}",
            )
            return
        written = [d for d in done if d.status == Outcome.WRITTEN]
        fsync_files([Path(d.out_path) for d in written])
        kept = [d for d in done if d.status in (Outcome.WRITTEN, Outcome.WITHHELD)]
        self.store.set_outputs([(d.sop_uid, d.out_path, d.out_sop_uid) for d in kept])
        for d in done:
            if d.status == Outcome.WITHHELD:
                withheld += 1
                self.store.audit(study.id, self.owner, "instance withheld", d.detail)
        if self._held_for_cleaning(study, pid, written):
            return
        failed = [d for d in done if d.status == Outcome.FAILED]
        if failed:  # quarantined, the rest kept; staff see why, approving goes on without them
            paths = {i.sop_uid: Path(i.path) for i in instances}
            for d in failed:
                self._set_aside(study, d.sop_uid, paths[d.sop_uid], d.detail)
            self._release(
                study.id,
                StudyState.NEEDS_REVIEW,
                self.owner,
                reason=f"{len(failed)} instance(s) could not be de-identified and were "
                f"quarantined ({failed[0].detail}): approve to go on without them",
            )
            return
        # outputs made before a staff decision: the study keeps the pseudonyms it had
        made = written[0] if written else None
        subject = made.subject if made else (study.subject or subject)
        session = made.session if made else (study.session or session)
        if subject and session:
            self.store.link(pid, study.patient_id, study.study_uid, subject, session)
        self._release(
            study.id,
            StudyState.PSEUDONYMISED,
            self.owner,
            f"{len(instances) - withheld} written, {withheld} withheld",
            subject=subject,
            session=session,
        )

    def _forward(self, study: Study) -> None:
        if self.forwarder is None:
            self._release(study.id, StudyState.PSEUDONYMISED, self.owner, retry_in=60.0)
            return
        try:
            self._manifest(study)  # first: the anonymised node refuses unannounced instances
            self._send_all(study)
        except RetriableError as exc:
            attempts = study.attempts + 1
            if attempts >= self.config.forward.max_attempts:
                self._release(
                    study.id,
                    StudyState.NEEDS_REVIEW,
                    self.owner,
                    reason=f"forwarding failed: {exc}",
                    attempts=attempts,
                )
            else:
                delay = self.config.forward.backoff_s * 2 ** (attempts - 1)
                self._release(
                    study.id,
                    StudyState.PSEUDONYMISED,
                    self.owner,
                    f"retry: {exc}",
                    retry_in=delay,
                    attempts=attempts,
                )
            return
        except PermanentError as exc:
            self._release(
                study.id, StudyState.NEEDS_REVIEW, self.owner, reason=f"forwarding refused: {exc}"
            )
            return
        sent = sum(1 for i in self.store.instances(study.id) if i.forwarded)
        self._release(
            study.id,
            StudyState.FORWARDED,
            self.owner,
            f"{sent} instance(s) acknowledged",
            attempts=0,
        )

    def _confirm(self, study: Study) -> None:
        """Ask the anonymised node what it holds of a forwarded study (by its de-identified
        UID, signed): confirmed once it holds every announced instance, then asked on (slower)
        until the study is in the repository there or was rejected there, which the study then
        says. Failing to ask is no error of the study: it stays as it is and is asked again
        later, at most ``forward.confirm_attempts`` times in a row."""
        template, forwarder = self.config.forward.status_url, self.forwarder
        if not template or forwarder is None:  # not claimed then; a step in flight lets it be
            self._release(study.id, study.state, self.owner)
            return
        try:
            uid = _out_study_uid([i for i in self.store.instances(study.id) if i.out_path])
            doc = forwarder.get_status(template.replace("{study_uid}", uid), uid) if uid else None
        except (RetriableError, PermanentError) as exc:
            self._check_again(study, f"the anonymised node could not be asked: {exc}")
            return
        except Exception as exc:  # its outputs unreadable: said, never a crash
            self._check_again(study, f"the de-identified study UID cannot be read: {describe(exc)}")
            return
        held = _holding(doc)
        if held is None:
            self._check_again(study, "the anonymised node does not hold this study")
            return
        announced, stored, state = held
        there = ANON_LABEL[state]
        if state == "rejected":
            self._release(
                study.id,
                StudyState.REFUSED_DOWNSTREAM,
                self.owner,
                reason="rejected by the anonymised node",
                attempts=0,
            )
            return
        if not announced or stored < announced:
            self._check_again(
                study,
                f"the anonymised node holds {stored} of {announced} announced instance(s)"
                f" ({there})",
            )
            return
        now = f"at the anonymised node: {there}"
        if state == "uploaded":  # nothing more to learn: asked no more
            done = self.config.forward.confirm_attempts
            self._release(
                study.id, StudyState.CONFIRMED, self.owner, now, reason=now, attempts=done
            )
        elif study.state == StudyState.FORWARDED:
            self._release(
                study.id,
                StudyState.CONFIRMED,
                self.owner,
                f"the anonymised node holds {stored} of {announced} instance(s)",
                reason=now,
                retry_in=self.config.forward.confirm_backoff_s,
                attempts=0,
            )
        else:
            self._check_again(study, there, reason=now)

    def _check_again(self, study: Study, why: str, *, reason: str | None = None) -> None:
        """Ask about a study again after a back-off; its checks spent, it is left as it is. A
        forwarded study's reason is the last answer; a confirmed one keeps what it last heard
        (or ``reason``, what it heard now)."""
        attempts = study.attempts + 1
        forward = self.config.forward
        spent = attempts >= forward.confirm_attempts
        if study.state == StudyState.FORWARDED:
            reason = (
                f"not confirmed by the anonymised node after {attempts} check(s): {why}"
                if spent
                else f"not confirmed yet: {why}"
            )
        if spent:
            log.warning(
                "study %d (%s): the anonymised node was asked %d time(s), no more: %s",
                study.id, study.state, attempts, why,
            )  # fmt: skip
        delay = min(forward.confirm_backoff_s * 2 ** (attempts - 1), CONFIRM_BACKOFF_MAX_S)
        self._release(
            study.id,
            study.state,
            self.owner,
            f"asked {attempts} time(s), no more" if spent else "",
            reason=study.reason if reason is None else reason,
            retry_in=0.0 if spent else delay,
            attempts=attempts,
        )

    def _send_all(self, study: Study) -> None:
        """Send every pseudonymised instance not yet acknowledged, in batches, with
        ``forward.concurrency`` requests in flight (the receiver stores one batch while the next
        is on its way).

        Raises:
            RetriableError: some instance was not acknowledged (the rest are recorded).
            PermanentError: the target refused for good.
        """
        forwarder = self.forwarder
        assert forwarder is not None
        todo = [i for i in self.store.instances(study.id) if i.out_path and not i.forwarded]
        batch = self.config.forward.batch_size
        chunks = [todo[start : start + batch] for start in range(0, len(todo), batch)]

        def send(chunk: list[Instance]) -> int:
            by_out = {i.out_sop_uid or "": i.sop_uid for i in chunk}
            result = forwarder.store([(i.out_sop_uid or "", Path(i.out_path or "")) for i in chunk])
            self.store.mark_forwarded([by_out[s] for s in result.stored if s in by_out])
            return len(chunk) - len([s for s in result.stored if s in by_out])

        workers = min(self.config.forward.concurrency, len(chunks))
        if workers <= 1:
            missing = sum(send(chunk) for chunk in chunks)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="forward") as pool:
                futures = [pool.submit(send, chunk) for chunk in chunks]
                missing, failure = 0, None
                for future in futures:
                    try:
                        missing += future.result()
                    except (RetriableError, PermanentError) as exc:
                        failure = failure or exc
                if failure is not None:
                    raise failure
        if missing:
            raise RetriableError(f"{missing} instance(s) not acknowledged")

    def _manifest(self, study: Study) -> None:
        url = self.config.forward.manifest_url
        if not url or self.forwarder is None:
            return
        fresh = self.store.study(study.id) or study
        report = json.loads(fresh.report or "{}")
        sent = [i for i in self.store.instances(study.id) if i.out_path]
        self.forwarder.post_json(
            url,
            {
                "study_uid": _out_study_uid(sent),
                "protocol": self._protocol_id(fresh),
                "subject": fresh.subject,
                "session": fresh.session,
                "instances": len(sent),
                "sop_instance_uids": sorted(i.out_sop_uid or "" for i in sent),
                "validation": {"passed": report.get("passed"), "checks": report.get("checks", [])},
            },
        )


def _holding(doc: dict[str, object] | None) -> tuple[int, int, str] | None:
    """(announced, stored, state) from the anonymised node's status answer; None when it did
    not know the study or answered something else."""
    if doc is None:
        return None
    announced, stored, state = doc.get("announced"), doc.get("stored"), doc.get("state")
    counts = [n for n in (announced, stored) if isinstance(n, int) and not isinstance(n, bool)]
    if len(counts) != 2 or not isinstance(state, str) or state not in ANON_LABEL:
        return None
    return counts[0], counts[1], state


def _out_study_uid(sent: list[Instance]) -> str:
    """The de-identified StudyInstanceUID (read from the first output file)."""
    from pydicom import dcmread

    if not sent:
        return ""
    ds = dcmread(sent[0].out_path or "", stop_before_pixels=True, specific_tags=[0x0020000D])
    return str(ds.get("StudyInstanceUID", ""))
