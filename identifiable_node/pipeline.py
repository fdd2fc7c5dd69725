"""The per-study pipeline: complete -> opt-out -> trial -> validate -> pseudonymise -> forward.

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
from typing import Any

from identifiable_node.config import Config
from identifiable_node.deidpool import Done, Task, deid_file, run
from identifiable_node.optout import OptOut
from identifiable_node.trials import Trials
from uploader.deid.batch import modality_label
from uploader.errors import (
    ConfigError,
    PermanentError,
    RetriableError,
)
from uploader.protocols.study import study_from_files
from uploader.protocols.validate import validate_study
from uploader.store.db import Instance, Store, Study
from uploader.store.spool import Spool, fsync_files, name_for
from uploader.transport.stowrs import StowClient

log = logging.getLogger(__name__)


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

    def _release(self, study_id: int, state: str, actor: str, detail: str = "", **kw: Any) -> None:
        """Release our claim; if a late instance reopened the study meanwhile, leave it be."""
        if not self.store.release(study_id, state, actor, detail, lease=self.owner, **kw):
            log.info("study %d changed while being worked on: the step will be redone", study_id)

    def step(self) -> bool:
        """Do one unit of work; return False when there was nothing to do."""
        study = self.store.claim(self.owner, self.config.workers.lease_s)
        if study is None:
            return False
        handler = {
            "receiving": self._receiving,
            "complete": self._complete,
            "validated": self._pseudonymise,
            "pseudonymised": self._forward,
        }[study.state]
        try:
            handler(study)
        except ConfigError as exc:
            self._release(study.id, "needs_review", self.owner, reason=str(exc))
        except Exception as exc:
            log.exception("study %d: %s failed", study.id, study.state)
            self._release(
                study.id, study.state, self.owner, f"error: {type(exc).__name__}", retry_in=30.0
            )
        return True

    def _protocol_id(self, study: Study) -> str | None:
        return study.decided.get("protocol") or study.protocol or self.config.node.default_protocol

    def _receiving(self, study: Study) -> None:
        now = time.time()
        quiet = self.config.study.quiet_period_s - (now - study.last_received)
        if quiet > 0 or self.busy(study.study_uid):
            self._release(study.id, "receiving", self.owner, retry_in=max(quiet, 0.2))
            return
        pid = self._protocol_id(study)
        protocol = self.trials.get(pid) if pid else None
        have = {i.modality for i in self.store.instances(study.id)}
        missing = set(protocol.modalities.required) - have if protocol else set()
        waited = now - study.first_seen
        if missing and waited < self.config.study.complete_timeout_s:
            self._release(
                study.id,
                "receiving",
                self.owner,
                retry_in=min(self.config.study.quiet_period_s or 1, 30),
            )
            return
        self._release(study.id, "complete", self.owner, f"{len(have)} modality(ies)")

    def _complete(self, study: Study) -> None:
        if self._back_to_receiving(study):
            return
        ids = [study.patient_id, *study.other_ids.split("\\")]
        if self.optout.blocked([i for i in ids if i]):
            self._release(
                study.id, "opted_out", self.owner, reason="patient on the data opt-out list"
            )
            return
        pid = self._protocol_id(study)
        if pid is None:
            self._release(study.id, "needs_review", self.owner, reason="no trial assigned")
            return
        protocol = self.trials.get(pid)
        if protocol is None:
            self._release(study.id, "needs_review", self.owner, reason=f"unknown trial {pid}")
            return
        files = [(Path(i.path), name_for(i.sop_uid)) for i in self.store.instances(study.id)]
        report = validate_study(protocol, study_from_files(Path(self.spool.spool), files))
        doc = json.dumps(report.as_dict())
        if not report.passed and not study.decided.get("override"):
            fails = sum(c.status == "fail" for c in report.checks)
            self._release(
                study.id,
                "needs_review",
                self.owner,
                reason=f"{fails} validation check(s) failed",
                report=doc,
                protocol=pid,
            )
            return
        self._release(
            study.id,
            "validated",
            self.owner,
            "override" if not report.passed else "",
            report=doc,
            protocol=pid,
        )

    def _back_to_receiving(self, study: Study) -> bool:
        """True (and the study back to receiving) while instances are only in the journal."""
        if not self.busy(study.study_uid):
            return False
        self._release(study.id, "receiving", self.owner, "instances still arriving", retry_in=0.2)
        return True

    def _pseudonymise(self, study: Study) -> None:
        if self._back_to_receiving(study):
            return
        pid = self._protocol_id(study) or ""
        relabel = {
            **json.loads(study.report or "{}").get("relabel", {}),
            **study.decided.get("relabel", {}),
        }
        settings = self.trials.settings(pid, relabel)
        manual, subject = self.trials.manual_subject(pid, study.patient_id)
        subject = study.decided.get("subject") or subject
        if manual and not subject:
            self._release(
                study.id, "needs_review", self.owner, reason="no manual subject ID for this patient"
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
        )
        session, withheld = study.session or "", 0
        done: list[Done] = []
        if todo:  # the first here: its subject holds for the whole study
            first = deid_file(*todo[0], task)
            done.append(first)
            if first.status == "written":
                task = replace(task, subject=first.subject)
            stage = settings.scripts
            shared = bool(stage and stage.numbers_sessions)  # visit numbers: one process
            done.extend(run(todo[1:], task, 1 if shared else self.deid_processes))
        bad = next((d for d in done if d.status == "unverified"), None)
        if bad is not None:
            self._release(
                study.id, "quarantined", self.owner, reason=f"verification failed: {bad.detail}"
            )
            return
        written = [d for d in done if d.status == "written"]
        fsync_files([Path(d.out_path) for d in written])
        kept = [d for d in done if d.status in ("written", "withheld")]
        self.store.set_outputs([(d.sop_uid, d.out_path, d.out_sop_uid) for d in kept])
        for d in done:
            if d.status == "withheld":
                withheld += 1
                self.store.audit(study.id, self.owner, "instance withheld", d.detail)
        failed = [d for d in done if d.status == "failed"]
        if failed:  # the rest is kept; staff see why (`uploader review`), approving retries
            self._release(
                study.id,
                "needs_review",
                self.owner,
                reason=f"{len(failed)} instance(s) could not be read or written "
                f"({failed[0].detail})",
            )
            return
        if written:
            subject, session = written[0].subject, written[0].session
        if subject and session:
            self.store.link(pid, study.patient_id, study.study_uid, subject, session)
        self._release(
            study.id,
            "pseudonymised",
            self.owner,
            f"{len(instances) - withheld} written, {withheld} withheld",
            subject=subject,
            session=session,
        )

    def _forward(self, study: Study) -> None:
        if self.forwarder is None:
            self._release(study.id, "pseudonymised", self.owner, retry_in=60.0)
            return
        try:
            self._manifest(study)  # first: the anonymised node refuses unannounced instances
            self._send_all(study)
        except RetriableError as exc:
            attempts = study.attempts + 1
            if attempts >= self.config.forward.max_attempts:
                self._release(
                    study.id,
                    "needs_review",
                    self.owner,
                    reason=f"forwarding failed: {exc}",
                    attempts=attempts,
                )
            else:
                delay = self.config.forward.backoff_s * 2 ** (attempts - 1)
                self._release(
                    study.id,
                    "pseudonymised",
                    self.owner,
                    f"retry: {exc}",
                    retry_in=delay,
                    attempts=attempts,
                )
            return
        except PermanentError as exc:
            self._release(study.id, "needs_review", self.owner, reason=f"forwarding refused: {exc}")
            return
        sent = sum(1 for i in self.store.instances(study.id) if i.forwarded)
        self._release(
            study.id, "forwarded", self.owner, f"{sent} instance(s) acknowledged", attempts=0
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


def _out_study_uid(sent: list[Instance]) -> str:
    """The de-identified StudyInstanceUID (read from the first output file)."""
    from pydicom import dcmread

    if not sent:
        return ""
    ds = dcmread(sent[0].out_path or "", stop_before_pixels=True, specific_tags=[0x0020000D])
    return str(ds.get("StudyInstanceUID", ""))
