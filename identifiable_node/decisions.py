"""Staff decisions on the identifiable node: one code path for the pages and `uploader review`.

Choosing the trial, relabelling ROIs and entering manual IDs are noted on the study (audited,
who and what, in the hash-chained log) and wait for release; ``release`` sends the study through
the pipeline again, which validates it with the staff's relabels applied, pseudonymises it and
forwards it. ``hold`` and ``reject`` stop it; an admin may ``purge`` the files of a rejected or
opted-out study. Refusals carry their reason, worded without any patient value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from identifiable_node.store import Decisions, SetAsideKind, Store, Study, StudyState
from identifiable_node.trials import Trials
from uploader.deid.identifiers import fold
from uploader.deid.relabel import relabel as apply_relabel
from uploader.errors import NotDicomError
from uploader.protocols.model import Protocol
from uploader.protocols.patterns import compile_pattern
from uploader.protocols.study import study_from_files
from uploader.protocols.validate import Report, validate_study
from uploader.store.spool import name_for

#: Whatever the trial's pattern, a manual ID is letters, digits, '-' and '_'.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: States a study can be released, held or rejected from.
OPEN = ("receiving", "complete", "needs_review", "validated")
MIN_NAME_PART = 3  # shorter parts of a name (initials, "DR") are not checked


class Refused(Exception):  # noqa: N818 - a decision that is not allowed, shown as it is
    """The decision does not apply (state, role, a bad entry); the message says why."""


@dataclass(frozen=True)
class Patient:
    """What a manual ID must not look like (read on this node only; never logged)."""

    patient_id: str
    other_ids: tuple[str, ...]
    name: str
    birth_date: str


def protocol_id(study: Study, default: str | None) -> str | None:
    """The trial a study is in: the staff's choice, else what ingest said, else the default."""
    chosen = study.decided.get("protocol")
    return str(chosen) if chosen else (study.protocol or default)


def validate_files(
    protocol: Protocol, root: Path, files: list[tuple[Path, str]], relabel: dict[str, str]
) -> Report:
    """The checks of `uploader protocol validate`, with the staff's relabels applied first."""
    study = study_from_files(root, files)
    if relabel:
        for inst in study.of("RTSTRUCT"):
            apply_relabel(inst.header, relabel)
    return validate_study(protocol, study)


def validate(
    store: Store, trials: Trials, root: Path, study: Study, pid: str | None
) -> Report | None:
    """The study's report under a trial (None without a known trial)."""
    protocol = trials.get(pid) if pid else None
    if protocol is None:
        return None
    files = [(Path(i.path), name_for(i.sop_uid)) for i in store.instances(study.id)]
    return validate_files(protocol, root, files, dict(study.decided.get("relabel", {})))


def final_relabel(study: Study) -> dict[str, str]:
    """The ROI renames de-identification applies: the staff's, then the trial's synonyms as the
    report found them on the renamed ROIs (received name -> the name it will carry)."""
    found: dict[str, str] = json.loads(study.report or "{}").get("relabel", {})
    staff: dict[str, str] = dict(study.decided.get("relabel", {}))
    out = {**found, **staff}
    for old, new in staff.items():
        if new in found:  # "Rectm" -> "rectum" by staff, "rectum" -> "Rectum" by synonym
            out[old] = found[new]
    return out


def _get(store: Store, study_id: int) -> Study:
    study = store.study(study_id)
    if study is None:
        raise Refused(f"no study {study_id}")
    return study


def _open(study: Study, what: str) -> None:
    if study.state == "opted_out":
        raise Refused("the patient is on the national data opt-out list: it never leaves")
    if study.state not in OPEN:
        raise Refused(f"cannot {what} a study that is {study.state}")


def choose_trial(store: Store, trials: Trials, study_id: int, pid: str, by: str) -> None:
    """Put a study in a trial (it waits for release)."""
    study = _get(store, study_id)
    _open(study, "change the trial of")
    if trials.get(pid) is None:
        raise Refused(f"this node has no trial {pid!r}")
    store.note_decisions(study.id, by, f"trial chosen: {pid}", {"protocol": pid})


def relabel(store: Store, study_id: int, mapping: dict[str, str], by: str) -> dict[str, str]:
    """Rename ROIs (old -> new, each audited); an empty new name drops an earlier relabel.
    Return the study's relabels now."""
    study = _get(store, study_id)
    _open(study, "relabel")
    now = dict(study.decided.get("relabel", {}))
    for old, given in sorted(mapping.items()):
        new = given.strip()
        if len(new) > 64 or any(ch in new for ch in "\\\n\r"):
            raise Refused("an ROI name has at most 64 characters and no backslash")
        before = now.get(old, old)
        if (new or old) == before:
            continue
        if new and new != old:
            now[old] = new
        else:
            now.pop(old, None)
        store.audit(study.id, by, "ROI relabelled", f"{before!r} -> {new or old!r}")
    store.note_decisions(study.id, by, "relabels saved", {"relabel": now})
    return now


def _norm(text: str) -> str:
    """Lowercased, accents dropped (the engine's fold), only letters and digits kept."""
    return re.sub(r"[^0-9a-z]", "", fold(text))


def _looks_like_patient(entry: str, patient: Patient) -> str | None:
    """Which of the patient's own data the entry equals or contains (None: none of them)."""
    value = _norm(entry)
    facts = [
        ("the patient's ID", patient.patient_id),
        *(("the patient's NHS number or other ID", i) for i in patient.other_ids),
        ("the patient's birth date", patient.birth_date),
        *(("the patient's name", part) for part in re.split(r"[\^\s,]+", patient.name)),
    ]
    for what, fact in facts:
        known = _norm(fact)
        if what == "the patient's name" and len(known) < MIN_NAME_PART:
            continue
        if known and known in value:
            return what
    return None


def check_id(entry: str, what: str, pattern: str | None, patient: Patient) -> str:
    """A manual subject or session ID, checked; Refused with the reason when it is not fit."""
    entry = entry.strip()
    looks = _looks_like_patient(entry, patient)
    if looks:
        raise Refused(f"the {what} is refused: it is or contains {looks}")
    if pattern is None:
        raise Refused(f"this trial does not assign its own {what}s: its pseudonyms are used")
    if not compile_pattern(pattern).fullmatch(entry):
        raise Refused(f"the {what} does not match the trial's pattern {pattern}")
    if not SAFE_ID.fullmatch(entry):
        raise Refused(f"the {what} may hold only letters, digits, '-' and '_' (64 at most)")
    return entry


def set_ids(
    store: Store,
    trials: Trials,
    study_id: int,
    subject: str,
    session: str,
    *,
    by: str,
    patient: Patient,
    default: str | None,
) -> None:
    """Manual subject (and session) IDs for a study: the trial's pattern, unique in the trial,
    and nothing of the patient's own data. Raises Refused with the reason."""
    study = _get(store, study_id)
    _open(study, "set the IDs of")
    pid = protocol_id(study, default)
    protocol = trials.get(pid) if pid else None
    if protocol is None or pid is None:
        raise Refused("choose the trial first")
    decided: Decisions = {}
    if subject.strip():
        decided["subject"] = check_id(
            subject, "subject ID", protocol.pseudonym.manual_subject, patient
        )
        if store.subject_taken(pid, decided["subject"], study.patient_id):
            raise Refused(f"the subject ID is refused: another patient has it in {pid}")
    if session.strip():
        decided["session"] = check_id(
            session, "session ID", protocol.pseudonym.manual_session, patient
        )
    if not decided:
        raise Refused("enter a subject ID or a session ID")
    store.note_decisions(study.id, by, "manual IDs entered", decided)


def release(
    store: Store, trials: Trials, root: Path, study_id: int, *, by: str, default: str | None
) -> None:
    """De-identify and forward: refused while the study's validation fails or it has no trial."""
    study = _get(store, study_id)
    _open(study, "release")
    pid = protocol_id(study, default)
    report = validate(store, trials, root, study, pid)
    if report is None:
        raise Refused("choose the trial first")
    if not report.passed:
        fails = sum(c.status == "fail" for c in report.checks)
        raise Refused(f"{fails} validation check(s) fail: fix them before release")
    approve(store, study.id, by, override=True)


def approve(
    store: Store,
    study_id: int,
    by: str,
    *,
    override: bool = False,
    relabel: dict[str, str] | None = None,
    protocol: str | None = None,
    subject: str | None = None,
) -> None:
    """Send a study through the pipeline again with these decisions (the `review approve`
    command and the pages' release)."""
    study = _get(store, study_id)
    if study.state == "opted_out":
        raise Refused("the patient is on the national data opt-out list: it never leaves")
    merged = None
    if relabel:
        before = dict(study.decided.get("relabel", {}))
        for old, new in sorted(relabel.items()):
            store.audit(study.id, by, "ROI relabelled", f"{before.get(old, old)!r} -> {new!r}")
        merged = {**before, **relabel}
    store.decide(
        study.id,
        by,
        override=True if override else None,
        relabel=merged,
        protocol=protocol or None,
        subject=subject or None,
    )


def hold(store: Store, study_id: int, reason: str, by: str) -> None:
    """Stop a study until staff release it."""
    study = _get(store, study_id)
    _open(study, "hold")
    why = reason.strip()
    store.set_state(
        study.id, StudyState.NEEDS_REVIEW, by, f"held by {by}" + (f": {why}" if why else "")
    )


def reject(store: Store, study_id: int, reason: str, by: str) -> None:
    """Reject a study for good (a reason is needed); it never leaves."""
    study = _get(store, study_id)
    if study.state != "opted_out":
        _open(study, "reject")
    if not reason.strip():
        raise Refused("a rejection needs a reason")
    store.set_state(study.id, StudyState.REJECTED, by, reason.strip())


def purge(store: Store, study_id: int, by: str, *, admin: bool) -> int:
    """Delete the files of a rejected or opted-out study (admins only); return how many."""
    if not admin:
        raise Refused("only an administrator can purge a study's files")
    study = _get(store, study_id)
    if study.state not in ("rejected", "opted_out"):
        raise Refused(f"only a rejected or opted-out study can be purged (this is {study.state})")
    return purge_files(store, study, by)


def purge_files(store: Store, study: Study, by: str) -> int:
    """Delete a study's received and de-identified files, audited; return how many."""
    gone = 0
    for inst in store.instances(study.id):
        for path in (inst.path, inst.out_path):
            if path and Path(path).exists():
                Path(path).unlink(missing_ok=True)
                gone += 1
    store.audit(study.id, by, "purge", f"files of a {study.state.replace('_', '-')} study deleted")
    return gone


def retry_quarantined(
    store: Store, take_file: Callable[[Path], bool], row_id: int, by: str
) -> None:
    """Take a file kept in quarantine back into ingest (``take_file`` stores and indexes it);
    its quarantine row goes, audited. Refused with the reason when it still cannot be taken."""
    row = store.set_aside_row(row_id)
    if row is None:
        raise Refused(f"no quarantined file {row_id}")
    if row.kind == SetAsideKind.CONFLICT:
        raise Refused(
            "a second copy with other content: delete it, or release its study to go on with "
            "the first"
        )
    path = Path(row.path)
    if not row.path or not path.is_file():
        raise Refused("its file is no longer in quarantine")
    try:
        taken = take_file(path)
    except NotDicomError as exc:  # its message names the problem, never a value
        raise Refused(
            f"it still cannot be taken in: {exc}; it stays in quarantine (an administrator can "
            "delete it)"
        ) from exc
    except Exception as exc:  # hostile or broken input: its kind, never its values
        raise Refused(f"it still cannot be taken in: {type(exc).__name__}") from exc
    if not taken:
        raise Refused("the node already has this instance: delete this copy instead")
    store.drop_set_aside(row_id, by, "quarantined file retried")
    path.unlink(missing_ok=True)  # its bytes are in the spool now
    _reason_file(path).unlink(missing_ok=True)


def delete_quarantined(store: Store, row_id: int, by: str, *, admin: bool) -> None:
    """Delete a file kept in quarantine (admins only), audited."""
    if not admin:
        raise Refused("only an administrator can delete a quarantined file")
    row = store.set_aside_row(row_id)
    if row is None:
        raise Refused(f"no quarantined file {row_id}")
    if row.path:
        Path(row.path).unlink(missing_ok=True)
        _reason_file(Path(row.path)).unlink(missing_ok=True)
    store.drop_set_aside(row_id, by, "quarantined file deleted")


def _reason_file(path: Path) -> Path:
    """The reason the spool wrote beside a quarantined file (it goes with the file)."""
    return path.with_name(path.name + ".reason.txt")
