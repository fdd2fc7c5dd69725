"""The de-identification engine: one instance in, one de-identified instance out (or a refusal).

The walk touches only what the profile says to touch. Elements are visited as pydicom's raw
elements; only text that must be cleaned and sequences that must be walked are decoded, so
pixel data and the tens of thousands of contour numbers of an RTSTRUCT are never parsed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_has_tag, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from uploader.deid import header, iod
from uploader.deid.codes import (
    CODED_TAGS,
    is_code,
    is_standard_meaning,
    people_only_tags,
)
from uploader.deid.elements import (
    MAX_DEPTH,
    STANDARD_VRS,
    TEXT_VRS,
    binary_in_disguise,
    is_registry_uid,
    private_creators,
    private_vr,
    raw_ascii,
    strings,
    vr_of,
)
from uploader.deid.identifiers import (
    Identifiers,
    Matcher,
    StructureNames,
    collect,
    fold,
    matcher_for,
    number_holds_id,
    numeric_ids,
)
from uploader.deid.patterns import Detector, default_detector
from uploader.deid.policy import (
    AGE_CAP,
    FORMED_VRS,
    PrivatePolicy,
    age_over_89,
    cap_sr_ages,
    check_instance,
    check_pixels,
    malformed,
    private_kept,
)
from uploader.deid.profile import Op, Option, Profile, is_conditional, resolve
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.deid.rawseq import FallbackError, Rewriter
from uploader.deid.relabel import relabel
from uploader.deid.verify import check_output
from uploader.errors import WithheldError
from uploader.version import __version__

if TYPE_CHECKING:  # the script stage is imported only by runs that have a script
    from uploader.deid.script.stage import ScriptStage

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
    "AE": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "UN": b"\x00\x00",
    "OW": b"\x00\x00",
    "OF": b"\x00\x00\x00\x00",
    "OL": b"\x00\x00\x00\x00",
    "OD": b"\x00" * 8,
    "OV": b"\x00" * 8,
}
#: Values that cannot be cleaned, only kept whole or taken away.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_OUR_WORDS = ("ANONYMIZED", "ANONYMOUS")
_NUMBERS = re.compile(
    r"(?:[ ]*[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?[ ]*)(?:\\[ ]*[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?[ ]*)*|"
)
_KEEPING = frozenset({Op.KEEP, Op.CLEAN, Op.SHIFT})
_SHORT_LENGTH_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST"})
#: Binary attributes the table does not list that are image data and stay; other unlisted
#: binary goes (HPGL documents, ICC-free encrypted content, record keys can hold text).
_KEPT_BINARY_GROUPS = frozenset({0x7FE0, 0x0028, 0x5400, 0x0066, 0x0070, 0x3006, 0x300A})
#: Sequences that hold original values or their encryption, and ICC profiles (free-text
#: descriptions inside a binary): never sent on.
_NEVER_KEPT = frozenset({0x04000500, 0x04000550, 0x04000561, 0x04000551, 0x00282000})


#: Decisions made (profile -> SOP class -> (tag, VR, sequence path) -> action): they depend on
#: nothing else (the options are the profile's, the IOD's requirements the SOP class's).
_Decisions = dict[tuple[int, str, tuple[int, ...]], Op]
_DECISIONS: weakref.WeakKeyDictionary[Profile, dict[str, _Decisions]] = weakref.WeakKeyDictionary()


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
    #: whole values kept exactly by the cleaner: protocol structure names, synonyms, TG-263
    protected: StructureNames = field(default_factory=StructureNames)
    patterns: Detector = field(default_factory=default_detector)

    def detector(self) -> Detector:
        """The pattern rows these options apply."""
        return self.patterns.for_options(self.profile.options)

    def our_words(self, subject: str = "", session: str = "") -> tuple[str, ...]:
        """Return the words the engine writes itself (never taken for an identifier)."""
        trial = self.trial
        words = [subject, session, self.site, *(_OUR_WORDS)]
        if trial is not None:
            words += [trial.protocol_id, trial.protocol_name, trial.sponsor, trial.site_name]
            words.append(trial.time_point)
        words += [meaning for _code, meaning in self.profile.method_codes()]
        return tuple(w for w in words if w)


@dataclass
class Outcome:
    """A de-identified instance and what the link table needs to know about it."""

    dataset: Dataset
    subject: str
    session: str
    uid_map: dict[str, str]
    #: where cleaning struck part of a kept value: "attribute path: kinds" (never the value)
    struck: list[str] = field(default_factory=list)


class _Instance:
    """The walk over one instance: its matcher, date shift, UID map and IOD requirements."""

    def __init__(
        self,
        settings: Settings,
        matcher: Matcher,
        shift_days: int,
        ds: Dataset,
        ids: frozenset[str] = frozenset(),
    ) -> None:
        self.ids = ids  # the study's all-digit IDs: never kept as a number
        self.profile = settings.profile
        self.pseudo = settings.pseudonymiser
        self.private = settings.private
        self.protected = settings.protected
        self.patterns = settings.detector()
        self.retain_uids = Option.RETAIN_UIDS in settings.profile.options
        self.people_only = people_only_tags(
            Option.RETAIN_INSTITUTION_IDENTITY in settings.profile.options
        )
        self.matcher = matcher
        self.shift = dt.timedelta(days=shift_days)
        self.uid_map: dict[str, str] = {}
        self.struck: list[str] = []
        #: sequences rewritten in their bytes: (parent, tag, element), written as verified
        self.raw_sequences: list[tuple[Dataset, int, RawDataElement]] = []
        self.rewriter = Rewriter(self._op, self._text_ok, self._uid, self._formed)
        # the bytes are written as they are only into explicit VR little endian (the file meta's
        # syntax is what the output is written in, whatever the body was read as)
        syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
        self.explicit_little = syntax is not None and _explicit_little(str(syntax))
        sop_class = str(ds.get("SOPClassUID", "") or "")
        self.required = iod.requirements(sop_class)
        self._ops = _DECISIONS.setdefault(settings.profile, {}).setdefault(sop_class, {})
        options = settings.profile.options
        self.unlisted_dates = (
            Op.KEEP
            if Option.RETAIN_LONGITUDINAL_FULL_DATES in options
            else Op.SHIFT
            if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options
            else Op.EMPTY
        )

    def walk(self, ds: Dataset, path: tuple[int, ...] = (), where: str = "") -> None:
        if len(path) > MAX_DEPTH:
            raise WithheldError(
                f"sequences nested more than {MAX_DEPTH} levels deep: not a real instance",
                "too_deep",
            )
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
            if vr not in STANDARD_VRS or binary_in_disguise(tag, vr):
                del ds[tag]  # a VR DICOM does not have, or binary where the dictionary has text
                continue  # or numbers: its value cannot be judged, it goes
            op = self._op(tag, vr, path)
            self._apply(ds, tag, vr, op, path, where)

    def _op(self, tag: int, vr: str, path: tuple[int, ...]) -> Op:
        key = (tag, vr, path)
        op = self._ops.get(key)
        if op is None:
            op = self._ops[key] = self._decide(tag, vr, path)
        return op

    def _decide(self, tag: int, vr: str, path: tuple[int, ...]) -> Op:
        """What the profile, the options and the IOD say of this attribute here: the same for
        every item of a sequence and every instance of the SOP class, so decided once per run."""
        code = self.profile.code(tag)
        if code is None:
            return self._default_op(tag, vr)
        if is_conditional(code):
            reqs = self.required
            required = None if reqs is None else reqs.get(iod.path_key(path, tag), "3")
            return resolve(code, vr, required)
        op = self.profile.op(tag, vr)
        return op if op is not None else self._default_op(tag, vr)

    def _default_op(self, tag: int, vr: str) -> Op:
        if vr == "PN" or not dictionary_has_tag(tag) or tag in _NEVER_KEPT:
            return Op.REMOVE  # names the table does not know, and attributes we do not know
        if vr in BINARY_VRS and tag >> 16 not in _KEPT_BINARY_GROUPS:
            return Op.REMOVE  # binary that is not image data cannot be judged: it goes
        if vr == "UI":
            return Op.KEEP if self.retain_uids else Op.UID
        if vr == "SQ":
            return Op.RECURSE
        if vr in ("DA", "DT"):  # a date the table does not list is treated like Study Date
            return self.unlisted_dates
        return Op.KEEP

    def _apply(  # noqa: PLR0917 - the walk's own state, passed down
        self, ds: Dataset, tag: int, vr: str, op: Op, path: tuple[int, ...], where: str
    ) -> None:
        if op is Op.CLEAN and vr in BINARY_VRS:
            op = Op.REMOVE  # binary cannot be cleaned: it goes
        if op in _KEEPING and vr == "AS" and age_over_89(ds.get_item(tag).value):
            ds[tag] = DataElement(tag, "AS", AGE_CAP)  # a kept age over 89: "90 or older"
            return
        if (
            op in _KEEPING
            and vr in FORMED_VRS
            and not self._formed(tag, vr, ds.get_item(tag).value)
        ):
            op = Op.EMPTY  # text typed into a time or a number cannot be cleaned as text, and
            # an MRN typed into AcquisitionNumber is the MRN
        if op is Op.REMOVE:
            del ds[tag]
        elif op is Op.RECURSE:
            self._recurse(ds, tag, path, where)
        elif op is Op.EMPTY:
            ds[tag] = DataElement(tag, vr, [] if vr == "SQ" else None)
        elif op is Op.UID:
            new = [self._uid(tag, v) for v in strings(ds, tag)]
            ds[tag] = DataElement(tag, "UI", new if len(new) > 1 else (new[0] if new else ""))
        elif op is Op.DUMMY:
            if vr == "UI":
                self._apply(ds, tag, vr, Op.UID, path, where)
            else:
                dummy = _DUMMY.get(vr, "ANONYMIZED" if vr in TEXT_VRS else b"\x00\x00")
                ds[tag] = DataElement(tag, vr, dummy)
        elif op is Op.SHIFT:
            self._shift(ds, tag, vr)
        elif vr in TEXT_VRS:  # KEEP and CLEAN: kept text never keeps an identifier
            self._clean(ds, tag, vr, where)

    def _recurse(self, ds: Dataset, tag: int, path: tuple[int, ...], where: str) -> None:
        if self._raw_sequence(ds, tag, path):
            return
        value = ds[tag].value
        name = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        for i, item in enumerate(value if isinstance(value, Sequence) else ()):
            self.walk(item, (*path, tag), f"{where}{name}[{i}].")

    def _raw_sequence(self, ds: Dataset, tag: int, path: tuple[int, ...]) -> bool:
        """Rewrite a sequence still in its bytes (``rawseq``) if nothing in it needs pydicom's
        walk; True when done."""
        raw = ds.get_item(tag)
        if (
            not self.explicit_little
            or not isinstance(raw, RawDataElement)
            or raw.is_implicit_VR
            or not raw.is_little_endian
            or raw.length == 0xFFFFFFFF
            or not isinstance(raw.value, bytes)
        ):
            return False
        mapped = len(self.uid_map)
        try:
            new = self.rewriter.sequence(raw.value, (*path, tag))
        except FallbackError:
            for original in list(self.uid_map)[mapped:]:  # what the attempt remapped: the walk
                del self.uid_map[original]  # records what it keeps (it may keep less)
            return False
        elem = RawDataElement(BaseTag(tag), "SQ", len(new), new, raw.value_tell, False, True)
        ds[tag] = elem
        self.raw_sequences.append((ds, tag, elem))
        return True

    def _text_ok(self, tag: int, vr: str, text: str) -> bool:
        """Whether a kept value may stay exactly as it is: the cleaner's own quick check (codes,
        whose scheme is in their item, are left to pydicom's walk)."""
        if vr not in TEXT_VRS:
            return True
        if tag in CODED_TAGS:
            return False
        patterns = self.patterns.people() if tag in self.people_only else self.patterns
        return not self.matcher.for_tag(tag, vr).any_in_raw(text, patterns)

    def _formed(self, _tag: int, vr: str, value: object) -> bool:
        """Whether a number, date or time value holds only what its VR allows, and no ID."""
        if vr not in FORMED_VRS:
            return True
        if vr == "AS" and age_over_89(value):
            return False  # not kept as it is: the walk writes it as 90 or older
        return not malformed(vr, value) and not (vr == "IS" and number_holds_id(value, self.ids))

    def _uid(self, tag: int, value: str) -> str:
        if is_registry_uid(tag, value, listed=self.profile.rule(tag) is not None):
            return value
        new = self.pseudo.uid(value)
        self.uid_map[value] = new
        return new

    def _clean(self, ds: Dataset, tag: int, vr: str, where: str) -> None:
        patterns: Detector | None = None if is_code(ds, tag) else self.patterns
        if patterns is not None and tag in self.people_only:
            patterns = patterns.people()  # device descriptions: names and e-mails only
        # code strings (Modality MR, PatientSex F, ValueType TEXT) and device descriptions are
        # enumerations, not prose: names and places never strike them, IDs and patterns do
        matcher = self.matcher.for_tag(tag, vr)
        text = raw_ascii(ds.get_item(tag))
        if text is not None and not matcher.any_in_raw(text, patterns):
            return  # nothing to clean (values read together too): the element stays raw
        if is_standard_meaning(ds, tag):
            return  # the coding scheme's own words
        elem = ds[tag]
        values = [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value or "")]
        cleaned, kinds = matcher.clean_values(values, patterns, self.protected)
        if cleaned == values:
            return
        if vr in _SHORT_LENGTH_VRS and any(len(v.encode("utf-8")) > 0xFFF0 for v in cleaned):
            elem.VR = "UT"  # too long for a 16-bit length: written as UT, never as broken UN
        if vr == "CS":
            cleaned = [v.replace(Matcher.REPLACEMENT, "") for v in cleaned]
        elem.value = cleaned if elem.VM > 1 else cleaned[0]
        kw = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        self.struck.append(f"{where}{kw}: {', '.join(dict.fromkeys(kinds))}")

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

    def _private_value(self, ds: Dataset, tag: int, vr: str) -> bool:
        """Keep an allowed private element only as what its VR says: text is cleaned like any
        kept text; numbers and binary stay; a value whose VR nobody knows goes (True: kept)."""
        if vr in TEXT_VRS:
            elem = ds.get_item(tag)
            if elem.VR in (None, "UN") and isinstance(elem.value, bytes):
                text = elem.value.decode("latin-1").rstrip(" \x00")
                ds[tag] = DataElement(tag, vr, text.split("\\") if "\\" in text else text)
            self._clean(ds, tag, vr, "")
            return True
        if vr in ("DS", "IS"):  # decimal strings: kept only when they hold numbers
            raw = ds.get_item(tag).value
            text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw or "")
            return bool(_NUMBERS.fullmatch(text.strip(" \x00")))
        return vr not in ("UN", "SQ")

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
            if private_kept(tag, creators, self.private, self.profile) and self._private_value(
                ds, tag, private_vr(ds, tag, creators)
            ):
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


def deidentify(  # noqa: PLR0917 - the public API; callers pass these by position
    ds: Dataset,
    settings: Settings,
    modality_label: str = "",
    subject: str | None = None,
    session: str | None = None,
    study: Identifiers | None = None,
) -> Outcome:
    """De-identify one instance in place and verify it against everything its study identifies.

    ``modality_label``: the study's modality for scripts (default: this instance's Modality).
    ``subject``, ``session``: manual trial IDs, instead of the keyed ones.
    ``study``: the identifiers of the whole study (``batch.file_identifiers`` per file, merged);
    without it, those of
    this instance alone (names of staff that appear only in other instances are then unknown).
    Raises:
        WithheldError: policy withholds it (burned-in text), or a script rejected it.
        VerificationError: the output would still carry an identifier; nothing may be written.
    """
    check_instance(ds)
    check_pixels(ds, settings.allow_burned_in)
    if settings.relabel and ds.get("Modality") == "RTSTRUCT":
        relabel(ds, settings.relabel)  # before the profile, so the new names are what is kept
    # the study's identifiers include this instance's (gathered from the same file)
    ident = study if study is not None else collect(ds, kept=settings.profile.kept_tags)
    key = patient_key(ds)
    pseudo = settings.pseudonymiser
    trial = settings.trial
    protocol = trial.protocol_id if trial else ""
    avoid = _avoid(str(ds.get("PatientName", "") or ""))
    subject = subject or pseudo.subject_id(
        key, settings.subject_pattern, protocol=protocol, site=settings.site, avoid=avoid
    )
    study_uid = str(ds.get("StudyInstanceUID", "") or key)
    session = session or pseudo.session_label(
        study_uid,
        settings.session_pattern,
        avoid=avoid,
        subject=subject,
        protocol=protocol,
        site=settings.site,
    )
    shift_days = pseudo.date_shift_days(key)
    stage = settings.scripts
    original = stage.snapshot(ds) if stage else {}
    label = modality_label or str(ds.get("Modality", "") or "")
    options = settings.profile.options
    matcher = matcher_for(
        ident,
        keep_institution=Option.RETAIN_INSTITUTION_IDENTITY in options,
        keep_device=Option.RETAIN_DEVICE_IDENTITY in options,
        ours=settings.our_words(),
    )
    cap_sr_ages(ds)  # an SR's "Subject Age" over 89 as 90, whatever the options
    instance = _Instance(settings, matcher, shift_days, ds, numeric_ids(ident))
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
    header.fix_file_meta(ds)
    # only the rewritten sequences nothing replaced since (the header's record, a script) are
    # written from their bytes; the verifier is about to parse exactly those
    unchanged = [(p, t, e) for p, t, e in instance.raw_sequences if _same(p.get_item(t), e)]
    # the originals the verifier hunts for: every instance UID the walk met (all were remapped)
    check_output(
        ds,
        ident,
        set(instance.uid_map),
        settings.private,
        settings.profile,
        ours=settings.our_words(subject, session),
        protected=settings.protected,
        patterns=settings.detector(),
    )
    for parent, tag, elem in unchanged:
        parent[tag] = elem  # the bytes just verified (it parsed them), written as they are
    return Outcome(ds, subject, session, instance.uid_map, instance.struck)


def _same(found: object, made: RawDataElement) -> bool:
    return found is made


def _explicit_little(syntax: str) -> bool:
    """True for explicit VR little endian, deflate excluded (its bytes are recompressed)."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax:
        return False
    return uid.is_little_endian and not uid.is_implicit_VR and not uid.is_deflated


def _avoid(patient_name: str) -> Callable[[str], bool]:
    """A pseudonym's code must not spell a name part of its patient (choose the pseudonym).

    Only the patient's own name decides, so the same patient gets the same pseudonym in every
    study, whoever else the study names."""
    parts = [fold(p) for p in re.split(r"[\^=\s,.\-']+", patient_name) if len(p) >= 3]

    def bad(code: str) -> bool:
        folded = fold(code)
        return any(p in folded for p in parts)

    return bad
