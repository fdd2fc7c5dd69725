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
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from identifiable_node.store import STATES, Decisions, SetAsideKind, Store, Study, StudyState
from identifiable_node.trials import Trials
from uploader.deid.identifiers import fold
from uploader.deid.relabel import relabel as apply_relabel
from uploader.errors import NotDicomError
from uploader.protocols.model import Protocol
from uploader.protocols.patterns import compile_pattern
from uploader.protocols.study import rois, study_from_files
from uploader.protocols.validate import Report, validate_study
from uploader.store.spool import name_for

#: Whatever the trial's pattern, a manual ID is letters, digits, '-' and '_'.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: States a study can be released, held or rejected from.
OPEN = ("receiving", "complete", "needs_review", "validated")
#: States `review approve` sends a study on from: any but a rejection or the opt-out (for good).
APPROVABLE = tuple(s for s in STATES if s not in ("rejected", "opted_out"))
MIN_NAME_PART = 3  # shorter parts of a name (initials, "DR") are not checked
MIN_REVERSED = 4  # a manual ID holding a fact this long written backwards is refused too
_NAME_PART = re.compile(r"[^\W\d_]+")  # a name's runs of letters (O'BRIEN-SMITH: 3 parts)


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


def _note(
    store: Store, study: Study, by: str, what: str, decisions: Decisions, *, doing: str
) -> None:
    """Record decisions only while the study is still open (checked in the same transaction as
    the write: a release or rejection in between wins, and this one is refused)."""
    if not store.note_decisions(study.id, by, what, decisions, only_from=OPEN):
        _open(_get(store, study.id), doing)
        raise Refused(f"cannot {doing} this study now: reload")


def choose_trial(store: Store, trials: Trials, study_id: int, pid: str, by: str) -> None:
    """Put a study in a trial (it waits for release; a study the pipeline had validated under
    another trial is validated again)."""
    study = _get(store, study_id)
    _open(study, "change the trial of")
    if trials.get(pid) is None:
        raise Refused(f"this node has no trial {pid!r}")
    _note(store, study, by, f"trial chosen: {pid}", {"protocol": pid}, doing="change the trial of")


def roi_names(store: Store, study_id: int) -> list[str]:
    """The ROI names of the study's structure sets, as received (unreadable sets left out: the
    pipeline quarantines them with the reason)."""
    names: list[str] = []
    for inst in store.instances(study_id):
        if inst.modality != "RTSTRUCT":
            continue
        try:
            names += [r.name for r in rois(dcmread(inst.path, stop_before_pixels=True))]
        except Exception:  # noqa: S112 - unreadable: quarantined by the pipeline
            continue
    return names


def _hidden(text: str) -> bool:
    """True when the text holds a control or formatting character (NUL, a direction override)."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def _check_new_name(old: str, new: str, final: dict[str, str], patient: Patient | None) -> None:
    """Refuse a new ROI name that is too long, hides characters, holds the patient's own data,
    or is the name another ROI of the study will carry."""
    if len(new) > 64 or "\\" in new or _hidden(new):
        raise Refused(
            "an ROI name has at most 64 characters, no backslash and no control characters"
        )
    looks = _looks_like_patient(new, patient, words=True) if patient else None
    if looks:
        raise Refused(f"the new ROI name is refused: it is or contains {looks}")
    taken = {v.casefold() for k, v in final.items() if k != old}
    if new.casefold() in taken:
        raise Refused("another ROI of the study has or will have that name: choose another")


def _checked_relabels(
    study: Study,
    mapping: dict[str, str],
    names: Collection[str] | None,
    patient: Patient | None,
) -> dict[str, str]:
    """The study's relabels with ``mapping`` applied (old -> new, stripped; an empty new name
    drops one), each checked; Refused with the reason for the first that is not fit."""
    now = dict(study.decided.get("relabel", {}))
    known = list(dict.fromkeys(names)) if names is not None else None
    final = {n: now.get(n, n) for n in known} if known is not None else dict(now)
    changed = []
    for old, given in sorted(mapping.items()):
        new = given.strip()
        if known is not None and old not in final:
            raise Refused("the study has no ROI of that name: reload the page")
        if new and new != final.get(old, old):
            changed.append((old, new))
        final[old] = new or old
        if new and new != old:
            now[old] = new
        else:
            now.pop(old, None)
    for old, new in changed:  # once all are applied: two ROIs may swap their names
        _check_new_name(old, new, final, patient)
    return now


def relabel(
    store: Store,
    study_id: int,
    mapping: dict[str, str],
    by: str,
    *,
    names: Collection[str] | None = None,
    patient: Patient | None = None,
) -> dict[str, str]:
    """Rename ROIs (old -> new, each audited); an empty new name drops an earlier relabel.
    ``names``: the study's ROI names (an old name not among them is refused); ``patient``: what
    a new name must not hold. Return the study's relabels now."""
    study = _get(store, study_id)
    _open(study, "relabel")
    checked = _checked_relabels(study, mapping, names, patient)
    now = dict(study.decided.get("relabel", {}))  # audited one by one once saved
    audits = []
    for old, given in sorted(mapping.items()):
        new = given.strip()
        before = now.get(old, old)
        if (new or old) == before:
            continue
        if new and new != old:
            now[old] = new
        else:
            now.pop(old, None)
        audits.append(f"{before!r} -> {new or old!r}")
    _note(store, study, by, "relabels saved", {"relabel": checked}, doing="relabel")
    for detail in audits:
        store.audit(study.id, by, "ROI relabelled", detail)
    return checked


def _norm(text: str) -> str:
    """Lowercased, accents dropped (the engine's fold), any script's digits as ASCII digits,
    only letters and digits kept."""
    digits = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)
    return re.sub(r"[^0-9a-z]", "", fold(unicodedata.normalize("NFKC", digits)))


def _date_forms(date: str) -> list[str]:
    """A DICOM date (YYYYMMDD) as people write it: day first, month first, two-digit years."""
    if not re.fullmatch(r"\d{8}", date):
        return [date]
    y, m, d = date[:4], date[4:6], date[6:]
    return [date, d + m + y, m + d + y, y[2:] + m + d, d + m + y[2:], m + d + y[2:]]


def _looks_like_patient(entry: str, patient: Patient, *, words: bool = False) -> str | None:
    """Which of the patient's own data the entry equals or contains (None: none of them).
    With ``words`` (an ROI name), a name part counts only as a whole word of the entry, so
    that a patient called LEE does not forbid "Spleen"; IDs and dates count anywhere."""
    value = _norm(entry)
    entry_words = {_norm(w) for w in _NAME_PART.findall(fold(entry))}
    facts = [
        ("the patient's ID", patient.patient_id),
        *(("the patient's NHS number or other ID", i) for i in patient.other_ids),
        *(("the patient's birth date", form) for form in _date_forms(patient.birth_date)),
        *(("the patient's name", part) for part in _NAME_PART.findall(fold(patient.name))),
    ]
    for what, fact in facts:
        known = _norm(fact)
        if what == "the patient's name":
            if len(known) < MIN_NAME_PART:
                continue
            if words and known not in entry_words:
                continue
        if known and known in value:
            return what
        if not words and len(known) >= MIN_REVERSED and known[::-1] in value:
            return what + " reversed"
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
        if store.session_taken(pid, decided["session"], study.study_uid):
            raise Refused(f"the session ID is refused: another study has it in {pid}")
    if not decided:
        raise Refused("enter a subject ID or a session ID")
    _note(store, study, by, "manual IDs entered", decided, doing="set the IDs of")


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
    if not store.decide(study.id, by, override=True, only_from=OPEN):
        _open(_get(store, study.id), "release")
        raise Refused("the study changed meanwhile: reload")


def approve(
    store: Store,
    study_id: int,
    by: str,
    *,
    override: bool = False,
    relabel: dict[str, str] | None = None,
    protocol: str | None = None,
    subject: str | None = None,
    trials: Trials | None = None,
    patient: Patient | None = None,
) -> None:
    """Send a study through the pipeline again with these decisions (the `review approve`
    command): a relabel and a subject ID are checked as the pages check them (with ``trials``
    and ``patient``), the trial must be one the node has; a rejected or opted-out study stays."""
    study = _get(store, study_id)
    if study.state == "opted_out":
        raise Refused("the patient is on the national data opt-out list: it never leaves")
    if study.state not in APPROVABLE:
        raise Refused(f"cannot approve a study that is {study.state}")
    if protocol and trials is not None and trials.get(protocol) is None:
        raise Refused(f"this node has no trial {protocol!r}")
    merged = None
    if relabel:
        merged = _checked_relabels(study, relabel, roi_names(store, study.id), patient)
        before = dict(study.decided.get("relabel", {}))
        for old, new in sorted(relabel.items()):
            store.audit(study.id, by, "ROI relabelled", f"{before.get(old, old)!r} -> {new!r}")
    if subject:
        pid = protocol or study.decided.get("protocol") or study.protocol
        found = trials.get(pid) if trials is not None and pid else None
        pattern = found.pseudonym.manual_subject if found else None
        facts = patient or Patient(study.patient_id, (), "", "")
        subject = check_id(subject, "subject ID", pattern or r".*", facts)
        if pid and store.subject_taken(pid, subject, study.patient_id):
            raise Refused(f"the subject ID is refused: another patient has it in {pid}")
    decided = store.decide(
        study.id,
        by,
        override=True if override else None,
        relabel=merged,
        protocol=protocol or None,
        subject=subject or None,
        only_from=APPROVABLE,
    )
    if not decided:
        raise Refused("the study was rejected or opted out meanwhile: it stays")


MAX_REASON = 500


def _reason(text: str) -> str:
    """A hold note or rejection reason as given (stripped), at most ``MAX_REASON`` characters."""
    if len(text.strip()) > MAX_REASON:
        raise Refused(f"a reason has at most {MAX_REASON} characters")
    return text.strip()


def hold(store: Store, study_id: int, reason: str, by: str) -> None:
    """Stop a study until staff release it."""
    study = _get(store, study_id)
    _open(study, "hold")
    why = _reason(reason)
    held = f"held by {by}" + (f": {why}" if why else "")
    _note(store, study, by, "held", {"held": True}, doing="hold")  # late instances keep it held
    if not store.set_state(study.id, StudyState.NEEDS_REVIEW, by, held, only_from=OPEN):
        _open(_get(store, study.id), "hold")
        raise Refused("the study changed meanwhile: reload")


def reject(store: Store, study_id: int, reason: str, by: str) -> None:
    """Reject a study for good (a reason is needed); it never leaves."""
    study = _get(store, study_id)
    if study.state != "opted_out":
        _open(study, "reject")
    if not reason.strip():
        raise Refused("a rejection needs a reason")
    allowed = (*OPEN, "opted_out")
    if not store.set_state(study.id, StudyState.REJECTED, by, _reason(reason), only_from=allowed):
        _open(_get(store, study.id), "reject")
        raise Refused("the study changed meanwhile: reload")


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
