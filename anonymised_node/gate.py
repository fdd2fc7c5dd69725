"""The gate: each arriving instance judged by what this node knows, not by what the file says.

What the node knows: the trial's protocol (from its own configuration: the options, private
allow-list and burned-in allowance the trial agreed) and the study's manifest (signed with the
forwarding key: the study, its instances, the subject and session pseudonyms). An instance is
refused when

- its study was not announced, or it is not one of the announced instances;
- it declares a de-identification option the protocol does not allow (the declaration is never
  used to relax the check: the profile is built from the protocol);
- an identity attribute is not the announced pseudonym (or empty), or any other person name holds
  something other than the profile's dummy;
- a UID is malformed, lies under a known vendor root, or is not of the form the identifiable
  node derives (``2.25.`` and a version-8 UUID: scanners' ``2.25.`` UIDs are version 4 or 1),
  unless the protocol retains UIDs;
- anything the core's knowledge-free audit finds (Annex E actions by the protocol's options,
  private tags, overlays, burned-in text) and, in every kept text at any depth (descriptions,
  comments, labels, SR text, code meanings outside the standard's coding schemes), anything the
  pattern detectors find: dates, phone and NHS numbers, postcodes, e-mail addresses, ID-like
  tokens, person-name forms. The words the sender announced (pseudonyms) and the protocol's own
  (its ID, name, sponsor, time point) are not findings.

Problems name the attribute path and the kind of finding, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from uploader.deid.elements import is_registry_uid, strings, walk
from uploader.deid.identifiers import fold
from uploader.deid.patterns import Detector, default_detector
from uploader.deid.policy import PrivatePolicy
from uploader.deid.profile import METHOD_CODES, Option, Profile, load_table
from uploader.deid.verify import audit
from uploader.protocols.model import Protocol
from uploader.protocols.patterns import compile_pattern
from uploader.transport.paths import valid_label, valid_uid

#: Roots that equipment and toolkit makers issue UIDs under: never what the identifiable node
#: derives (it writes ``2.25.<128-bit decimal>``), so such a UID is an original one.
VENDOR_ROOTS = (
    "1.2.840.113619.",  # GE Healthcare
    "1.3.12.2.1107.",  # Siemens
    "1.3.46.670589.",  # Philips
    "1.2.840.113704.",  # Philips (ADAC, Marconi)
    "1.2.392.200036.9116.",  # Canon / Toshiba
    "1.2.392.200036.9125.",  # Fujifilm
    "1.2.246.352.",  # Varian
    "1.2.752.243.",  # RaySearch
    "1.3.46.423632.",  # Elekta
    "1.2.840.113669.",  # Accuray / TomoTherapy
    "1.2.276.0.7230010.",  # OFFIS dcmtk
    "1.2.826.0.1.3680043.",  # Medical Connections (pydicom's default root)
    "1.2.840.113654.",  # CTI / Siemens PET
    "1.2.840.114350.",  # Epic
    "1.3.6.1.4.1.",  # private enterprise numbers (many vendors, research tools)
)
_DERIVED_MAX = 2**128
_IDENTITY = {
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00120040: "ClinicalTrialSubjectID",
}
_DUMMY_NAME = "ANONYMOUS"  # the engine's dummy for a PN the profile replaces
_META_UIDS = (0x00020003,)  # MediaStorageSOPInstanceUID (the meta's class and syntax are registry)
#: The file meta elements the identifiable node writes; anything else there (a source AE title,
#: private information) is refused.
_META_ALLOWED = frozenset(
    {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
)


@dataclass(frozen=True)
class Announced:
    """A study as its signed manifest announced it."""

    study_uid: str
    protocol: str
    subject: str
    session: str
    sop_uids: frozenset[str]


@dataclass(frozen=True)
class _Trial:
    protocol: Protocol
    profile: Profile
    policy: PrivatePolicy
    allowed_codes: frozenset[str]


class Gate:
    """Judges instances against the protocols this node serves."""

    def __init__(self, protocols: dict[str, Protocol], patterns: Detector | None = None) -> None:
        """``patterns``: the audit table with the sites' rows (default: the packaged one)."""
        self._detector = patterns if patterns is not None else default_detector(audit=True)
        self._trials: dict[str, _Trial] = {}
        for pid, p in protocols.items():
            options = frozenset(p.deidentify.options)
            allowed = {METHOD_CODES["basic"][0], *(METHOD_CODES[o][0] for o in options)}
            self._trials[pid] = _Trial(
                p,
                Profile(load_table(), options),
                PrivatePolicy(_private_keys(p)),
                frozenset(allowed),
            )

    def serves(self, protocol_id: str) -> bool:
        """True if instances of this trial may be sent here."""
        return protocol_id in self._trials

    def manifest_uid_problem(self, protocol_id: str, uids: list[str]) -> str | None:
        """Why a manifest's UIDs cannot be the identifiable node's (None: they can)."""
        trial = self._trials.get(protocol_id)
        retain = trial is not None and Option.RETAIN_UIDS in trial.profile.options
        for uid in uids:
            problem = _uid_problem(0x00080018, uid, retain)
            if problem:
                return problem
        return None

    def pseudonyms_problem(self, protocol_id: str, subject: str, session: str) -> str | None:
        """Why announced pseudonyms cannot be this trial's (None: they can)."""
        trial = self._trials.get(protocol_id)
        if trial is None:
            return "not a trial served here"
        return pseudonym_problem(trial.protocol, subject, session)

    def judge(self, ds: Dataset, announced: Announced | None) -> list[str]:
        """What is wrong with an instance (empty: accept)."""
        if announced is None:
            return ["(0020,000D) StudyInstanceUID: a study no manifest announced"]
        trial = self._trials.get(announced.protocol)
        if trial is None:
            return ["(0012,0020) ClinicalTrialProtocolID: not a trial served here"]
        problems = _announced(ds, announced)
        wrong = pseudonym_problem(trial.protocol, announced.subject, announced.session)
        if wrong:
            problems.append(f"the manifest: {wrong}")
        problems += _declared(ds, trial)
        problems += _identity(ds, announced, trial.protocol)
        retain_uids = Option.RETAIN_UIDS in trial.profile.options
        problems += _uids(ds, retain_uids)
        p = trial.protocol
        ours = (announced.subject, announced.session, p.id, p.name, p.sponsor, p.time_point)
        problems += audit(  # Annex E by the protocol's options, and every kept text scanned
            ds,
            trial.profile,
            trial.policy,
            bool(p.deidentify.allow_burned_in),
            ours=[w for w in ours if w],
            patterns=self._detector,
        )
        problems += _site_name(ds, self._detector)
        return list(dict.fromkeys(problems))  # once each, in order


def _private_keys(p: Protocol) -> list[Any]:
    """The protocol's private allow-list: ``keep_private`` and what its script retains."""
    from uploader.deid.script.stage import build_stage

    d = p.deidentify
    stage = build_stage(None, d.script, None, d.variables, d.lookups) if d.script else None
    return [t.key() for t in d.keep_private] + (stage.private_keys() if stage else [])


def _announced(ds: Dataset, a: Announced) -> list[str]:
    problems = []
    if str(ds.get("StudyInstanceUID", "")) != a.study_uid:
        problems.append("(0020,000D) StudyInstanceUID: not the announced study")
    if str(ds.get("SOPInstanceUID", "")) not in a.sop_uids:
        problems.append("(0008,0018) SOPInstanceUID: not one of the announced instances")
    if str(ds.get("ClinicalTrialProtocolID", "") or "") != a.protocol:
        problems.append("(0012,0020) ClinicalTrialProtocolID: not the announced trial")
    meta = getattr(ds, "file_meta", None)
    meta_uid = str(meta.get("MediaStorageSOPInstanceUID", "")) if meta is not None else ""
    if meta_uid != str(ds.get("SOPInstanceUID", "")):
        problems.append("(0002,0003) MediaStorageSOPInstanceUID: differs from SOPInstanceUID")
    return problems


def _declared(ds: Dataset, trial: _Trial) -> list[str]:
    """Every declared method code must be one the protocol allows (and basic must be there)."""
    problems = []
    for n, item in enumerate(ds.get("DeidentificationMethodCodeSequence") or []):
        code = str(item.get("CodeValue", ""))
        scheme = str(item.get("CodingSchemeDesignator", ""))
        if scheme != "DCM" or code not in trial.allowed_codes:
            problems.append(
                f"DeidentificationMethodCodeSequence[{n}].(0008,0100) CodeValue:"
                " declares an option the trial's protocol does not allow"
            )
    return problems


def _identity(ds: Dataset, a: Announced, protocol: Protocol) -> list[str]:
    problems = []
    for tag, keyword in _IDENTITY.items():
        values = strings(ds, tag) if tag in ds else []
        if values and values != [a.subject]:
            problems.append(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}: not the announced subject"
            )
    comments = strings(ds, 0x00104000) if 0x00104000 in ds else []
    routing = f"Subject:{a.subject} Session:{a.session}"
    if comments and comments[0] not in (routing, f"Project:{a.protocol} {routing}"):
        problems.append("(0010,4000) PatientComments: not the announced subject and session")
    expected = {
        0x00120010: protocol.sponsor,  # ClinicalTrialSponsorName
        0x00120021: protocol.name,  # ClinicalTrialProtocolName
        0x00120050: protocol.time_point,  # ClinicalTrialTimePointID
    }
    for tag, value in expected.items():
        got = strings(ds, tag) if tag in ds else []
        if got and got != [str(value or "")]:
            problems.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}): not the trial's own value")
    site = strings(ds, 0x00120030) if 0x00120030 in ds else []
    if site and not valid_label(site[0]):
        problems.append("(0012,0030) ClinicalTrialSiteID: not a site ID")
    for path, tag, vr, parent in walk(ds):
        if vr != "PN" or (not path and tag in _IDENTITY):
            continue
        if any(v != _DUMMY_NAME for v in strings(parent, tag)):
            problems.append(f"{_where(path, tag)}: a person's name")
    return problems


def _site_name(ds: Dataset, detector: Detector) -> list[str]:
    """ClinicalTrialSiteName is free text the core audit leaves to us (a group 0012 value)."""
    for text in strings(ds, 0x00120031) if 0x00120031 in ds else []:
        kinds = detector.kinds(text, fold(text))
        if kinds:
            return [f"(0012,0031) ClinicalTrialSiteName: kept text holds {', '.join(kinds)}"]
    return []


def _uids(ds: Dataset, retain_uids: bool) -> list[str]:
    problems = []
    meta = getattr(ds, "file_meta", None)
    found: list[tuple[str, int, Any]] = []
    for tag in _META_UIDS:
        if meta is not None and tag in meta:
            found.append(("", tag, strings(meta, tag)))
    for tag in list(meta.keys()) if meta is not None else []:
        if tag not in _META_ALLOWED:
            problems.append(f"{_where('', tag)}: file meta the identifiable node does not write")
    version = strings(meta, 0x00020013) if meta is not None and 0x00020013 in meta else []
    if version and not valid_label(version[0]):
        problems.append("(0002,0013) ImplementationVersionName: not a version name")
    for path, tag, vr, parent in walk(ds):
        if vr == "UI":
            found.append((path, tag, strings(parent, tag)))
    for path, tag, values in found:
        for v in values:
            problem = _uid_problem(tag, v, retain_uids)
            if problem:
                problems.append(f"{_where(path, tag)}: {problem}")
                break
    return problems


def _uid_problem(tag: int, v: str, retain_uids: bool) -> str | None:
    if not valid_uid(v):
        return "not a valid UID"
    if v in UID_dictionary or is_registry_uid(tag, v):
        return None  # a class, syntax or coding scheme, kept by design
    if retain_uids:
        return None
    if v.startswith(VENDOR_ROOTS):
        return "a UID under an equipment maker's root (an original UID)"
    rest = v[5:]
    if not v.startswith("2.25.") or "." in rest or int(rest) >= _DERIVED_MAX:
        return "not a UID the identifiable node derives"
    n = int(rest)
    if (n >> 76) & 0xF != 8 or (n >> 62) & 0x3 != 0b10:
        return "a 2.25 UID that is not a derived one (not a version-8 UUID): an original UID"
    return None


_FIELD = re.compile(r"\{(\w+)(?::(\d+))?\}")
_SITE = "[A-Za-z0-9_-]+"


def pseudonym_regex(pattern: str, protocol_id: str, subject: str = "") -> re.Pattern[str]:
    """The labels a protocol's pseudonym pattern can produce (hash parts are base32)."""
    out, at = [], 0
    for m in _FIELD.finditer(pattern):
        out.append(re.escape(pattern[at : m.start()]))
        name, width = m.group(1), int(m.group(2) or 8)
        if name == "hash":
            out.append(f"[A-Z2-7]{{{max(1, min(width, 52))}}}")
        elif name == "protocol":
            out.append(re.escape(protocol_id))
        elif name == "site":
            out.append(_SITE)
        else:  # subject
            out.append(re.escape(subject))
        at = m.end()
    out.append(re.escape(pattern[at:]))
    return re.compile("".join(out))


def pseudonym_problem(protocol: Protocol, subject: str, session: str) -> str | None:
    """Why an announced subject or session is not one the trial's patterns make (None: fine)."""
    manual = protocol.pseudonym  # IDs the trial assigns itself, entered by staff (issue 16)
    if not pseudonym_regex(protocol.pseudonym.subject, protocol.id).fullmatch(subject) and not (
        manual.manual_subject and compile_pattern(manual.manual_subject).fullmatch(subject)
    ):
        return "the subject does not follow the trial's pseudonym pattern"
    if protocol.deidentify.script:
        return None  # a project script may label sessions itself (makeSessionLabel)
    regex = pseudonym_regex(protocol.pseudonym.session, protocol.id, subject)
    if not regex.fullmatch(session) and not (
        manual.manual_session and compile_pattern(manual.manual_session).fullmatch(session)
    ):
        return "the session does not follow the trial's pseudonym pattern"
    return None


def _where(path: str, tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    kw = keyword_for_tag(tag) or "private"
    return f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X}) {kw}"
