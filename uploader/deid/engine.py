"""The de-identification engine: one instance in, one de-identified instance out (or a refusal).

The walk touches only what the profile says to touch. Elements are visited as pydicom's raw
elements; only text that must be cleaned and sequences that must be walked are decoded, so
pixel data and the tens of thousands of contour numbers of an RTSTRUCT are never parsed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from uploader import __version__
from uploader.deid import header
from uploader.deid.elements import (
    TEXT_VRS,
    is_registry_uid,
    private_creators,
    raw_ascii,
    strings,
    vr_of,
)
from uploader.deid.identifiers import Matcher, collect, matcher_for
from uploader.deid.policy import PrivatePolicy, check_instance, check_pixels, private_kept
from uploader.deid.profile import Op, Option, Profile
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.deid.script.stage import ScriptStage
from uploader.deid.verify import check_output
from uploader.protocols.relabel import relabel

log = logging.getLogger(__name__)

_DUMMY: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMOUS",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "CS": "ANONYMIZED",
}
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1583.1"  # placeholder root, ours to assign


@dataclass(frozen=True)
class TrialInfo:
    """The clinical trial attributes written into group 0012 when a protocol is given."""

    protocol_id: str
    protocol_name: str = ""
    sponsor: str = ""
    site_name: str = ""
    time_point: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything that decides the output, built once at the edge and passed down."""

    profile: Profile
    pseudonymiser: Pseudonymiser
    site: str = ""
    trial: TrialInfo | None = None
    subject_pattern: str = "{site}{hash:10}"
    session_pattern: str = "{subject}_{hash:6}"
    private: PrivatePolicy = field(default_factory=PrivatePolicy)
    allow_burned_in: frozenset[str] = frozenset()
    relabel: dict[str, str] = field(default_factory=dict)  # ROI name -> protocol name
    scripts: ScriptStage | None = None  # the site script, then the project script


@dataclass
class Outcome:
    """A de-identified instance and what the link table needs to know about it."""

    dataset: Dataset
    subject: str
    session: str
    uid_map: dict[str, str]


class _Instance:
    """The walk over one instance: its matcher, date shift and UID map."""

    def __init__(self, settings: Settings, matcher: Matcher, shift_days: int) -> None:
        self.profile = settings.profile
        self.pseudo = settings.pseudonymiser
        self.private = settings.private
        self.retain_uids = Option.RETAIN_UIDS in settings.profile.options
        self.matcher = matcher
        self.shift = dt.timedelta(days=shift_days)
        self.uid_map: dict[str, str] = {}

    def walk(self, ds: Dataset) -> None:
        self._privates(ds)
        for tag in list(ds.keys()):
            group, elem_no = tag >> 16, tag & 0xFFFF
            if group & 1:
                continue  # decided by _privates
            if elem_no == 0 or 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
                del ds[tag]  # group lengths (recomputed), curves (50xx) and overlays (60xx)
                continue
            raw = ds.get_item(tag)
            vr = vr_of(raw, tag)
            op = self.profile.op(tag, vr)
            if op is None:
                op = self._default_op(tag, vr)
            self._apply(ds, tag, vr, op)

    def _default_op(self, tag: int, vr: str) -> Op:
        if vr == "PN" or not dictionary_has_tag(tag):
            return Op.REMOVE  # names the table does not know, and attributes we do not know
        if vr == "UI":
            return Op.KEEP if self.retain_uids else Op.UID
        if vr == "SQ":
            return Op.RECURSE
        return Op.KEEP

    def _apply(self, ds: Dataset, tag: int, vr: str, op: Op) -> None:
        if op is Op.REMOVE:
            del ds[tag]
        elif op is Op.RECURSE:
            value = ds[tag].value
            for item in value if isinstance(value, Sequence) else ():
                self.walk(item)
        elif op is Op.EMPTY:
            ds[tag] = DataElement(tag, vr, [] if vr == "SQ" else None)
        elif op is Op.UID:
            new = [self._uid(tag, v) for v in strings(ds, tag)]
            ds[tag] = DataElement(tag, "UI", new if len(new) > 1 else (new[0] if new else ""))
        elif op is Op.DUMMY:
            if vr == "UI":
                self._apply(ds, tag, vr, Op.UID)
            else:
                ds[tag] = DataElement(
                    tag, vr, _DUMMY.get(vr, "ANONYMIZED" if vr in TEXT_VRS else None)
                )
        elif op is Op.SHIFT:
            self._shift(ds, tag, vr)
        elif vr in TEXT_VRS:  # KEEP and CLEAN: kept text never keeps the patient's identifiers
            self._clean(ds, tag)

    def _uid(self, tag: int, value: str) -> str:
        if is_registry_uid(tag, value, listed=self.profile.rule(tag) is not None):
            return value
        new = self.pseudo.uid(value)
        self.uid_map[value] = new
        return new

    def _clean(self, ds: Dataset, tag: int) -> None:
        if self.matcher.empty:
            return
        text = raw_ascii(ds.get_item(tag))
        if text is not None and not self.matcher.found_in(text):
            return  # nothing to clean: the element stays raw, undecoded, written as it came
        elem = ds[tag]
        if elem.VM > 1:
            values = [str(v) for v in elem.value]
            cleaned = [self.matcher.clean(v) for v in values]
            if cleaned != values:
                elem.value = cleaned
        elif elem.value is not None:
            text = str(elem.value)
            cleaned_text = self.matcher.clean(text)
            if cleaned_text != text:
                elem.value = cleaned_text

    def _shift(self, ds: Dataset, tag: int, vr: str) -> None:
        elem = ds[tag]
        if vr == "TM" or not elem.value:
            return  # times are kept: only the day moves
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
        shifted = [self._shift_one(v) for v in values]
        elem.value = shifted if elem.VM > 1 else shifted[0]

    def _shift_one(self, value: str) -> str:
        try:
            day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:
            return ""  # a date we cannot read is a date we cannot keep
        return (day + self.shift).strftime("%Y%m%d") + value[8:]

    def _privates(self, ds: Dataset) -> None:
        private = [t for t in ds.keys() if t >> 16 & 1]
        if not private:
            return
        creators = private_creators(ds)
        kept_blocks: set[tuple[int, int]] = set()
        for tag in private:
            elem_no = tag & 0xFFFF
            if elem_no <= 0x00FF:
                continue
            if private_kept(tag, creators, self.private, self.profile):
                kept_blocks.add((tag >> 16, elem_no >> 8))
            else:
                del ds[tag]
        for tag in private:
            elem_no = tag & 0xFFFF
            if elem_no <= 0x00FF and (tag >> 16, elem_no) not in kept_blocks:
                del ds[tag]


def patient_key(ds: Dataset) -> str:
    """Return what identifies the patient for pseudonyms: issuer and ID, else name and birth."""
    pid = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if pid:
        return f"id:{issuer}:{pid}"
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name:
        return f"name:{name}:{birth}"
    return f"study:{ds.get('StudyInstanceUID', '')}"


def deidentify(
    ds: Dataset,
    settings: Settings,
    modality_label: str = "",
    subject: str | None = None,
    session: str | None = None,
) -> Outcome:
    """De-identify one instance in place and verify it against its original identifiers.

    ``modality_label``: the study's modality for scripts (default: this instance's Modality).
    ``subject``, ``session``: manual trial IDs, instead of the keyed ones.
    Raises:
        WithheldError: policy withholds it (burned-in text), or a script rejected it.
        VerificationError: the output would still carry an identifier; nothing may be written.
    """
    check_instance(ds)
    check_pixels(ds, settings.allow_burned_in)
    if settings.relabel and ds.get("Modality") == "RTSTRUCT":
        relabel(ds, settings.relabel)  # before the profile, so the new names are what is kept
    ident = collect(ds)
    key = patient_key(ds)
    pseudo = settings.pseudonymiser
    trial = settings.trial
    protocol = trial.protocol_id if trial else ""
    subject = subject or pseudo.subject_id(
        key, settings.subject_pattern, protocol=protocol, site=settings.site
    )
    study_uid = str(ds.get("StudyInstanceUID", "") or key)
    session = session or pseudo.session_label(
        study_uid, settings.session_pattern, subject=subject, protocol=protocol, site=settings.site
    )
    shift_days = pseudo.date_shift_days(key)
    stage = settings.scripts
    original = stage.snapshot(ds) if stage else {}
    label = modality_label or str(ds.get("Modality", "") or "")
    instance = _Instance(settings, matcher_for(ident), shift_days)
    instance.walk(ds)
    header.write(ds, settings, subject=subject, session=session, version=__version__)
    if stage is not None:
        names = {
            "project": protocol,
            "subject": subject,
            "session": session,
            "modalityLabel": label,
            "site": settings.site,
        }
        ends = stage.run(
            ds,
            original,
            pseudo,
            names=names,
            produced_uids=set(instance.uid_map.values()),
            study_key=pseudo.uid(study_uid),
        )
        if (ends.get("subject"), ends.get("session")) != (subject, session):
            subject, session = ends.get("subject") or subject, ends.get("session") or session
            header.route(ds, protocol, subject, session)
    header.fix_file_meta(ds, IMPLEMENTATION_CLASS_UID, __version__)
    # the originals the verifier hunts for: every instance UID the walk met (all were remapped)
    check_output(ds, ident, set(instance.uid_map), settings.private, settings.profile)
    return Outcome(ds, subject, session, instance.uid_map)
