"""The verifiers: every output is proven clean before it is written, and again on arrival.

``check_output`` runs on the identifiable node with knowledge of the input: no name part, ID,
birth date, accession number or address of the patient in any string at any depth, no private
tag outside the allow-list, no original UID. ``audit`` is the knowledge-free check the
anonymised node runs: it needs no original and reports what a de-identified file must not have.
Problems name the attribute and the kind of identifier, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from uploader.deid import iod
from uploader.deid.codes import is_code, is_standard_meaning, people_only_tags
from uploader.deid.elements import (
    STANDARD_VRS,
    TEXT_VRS,
    binary_in_disguise,
    is_registry_uid,
    private_creators,
    strings,
    walk,
)
from uploader.deid.identifiers import (
    Identifiers,
    Matcher,
    StructureNames,
    fold,
    matcher_for,
    number_holds_id,
    numeric_ids,
    ours_pattern,
)
from uploader.deid.patterns import Detector, default_detector
from uploader.deid.policy import (
    FORMED_VRS,
    SECONDARY_CAPTURE_CLASSES,
    PrivatePolicy,
    age_over_89,
    malformed,
    private_kept,
    sr_age_over_89,
    sr_ages,
)
from uploader.deid.profile import METHOD_CODES, Op, Option, Profile, is_conditional, resolve
from uploader.errors import VerificationError

_UID_IN_TEXT = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){3,}")  # one start per run: linear
#: Attributes the uploader itself writes after the profile (pseudonyms and the record).
WRITTEN_BY_US = frozenset(
    {
        0x00100010,  # PatientName: the subject pseudonym
        0x00100020,  # PatientID: the subject pseudonym
        0x00104000,  # PatientComments: XNAT's Project/Subject/Session line
        0x00120010,
        0x00120020,
        0x00120021,
        0x00120030,
        0x00120031,
        0x00120040,
        0x00120050,
    }
)
_UNKNOWN_VR = "a value representation DICOM does not have for it"
_AGE_OVER_89 = "an age over 89 (kept ages are written as 090Y, 90 or older)"
_XNAT_LINE = re.compile(r"^(Project:\S+ )?Subject:\S+ Session:\S+$")


def _where(path: str, tag: int) -> str:
    kw = keyword_for_tag(tag) or "private"
    return f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X}) {kw}"


def _private_allowed(parent: Dataset, tag: int, policy: PrivatePolicy, profile: Profile) -> bool:
    if tag & 0xFFFF <= 0x00FF:
        return True  # a creator element: judged by the elements of its block
    return private_kept(tag, private_creators(parent), policy, profile)


def _uid_problem(parent: Dataset, tag: int, profile: Profile, originals: set[str]) -> str | None:
    if profile.op(tag, "UI") is Op.KEEP:
        return None  # an option keeps this UID (e.g. Device UID under Retain Device Identity)
    listed = profile.rule(tag) is not None
    for v in strings(parent, tag):
        if is_registry_uid(tag, v, listed=listed):
            continue  # a class or coding scheme, kept by design
        if v in originals:
            return "original UID"
        if not v.startswith("2.25."):
            return "UID not remapped"
    return None


#: Top-level attributes of the de-identification record, written by the engine itself.
RECORD_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})


def check_output(
    ds: Dataset,
    ident: Identifiers,
    originals: set[str],
    policy: PrivatePolicy,
    profile: Profile,
    *,
    ours: Iterable[str] = (),
    protected: StructureNames | None = None,
    patterns: Detector | None = None,
) -> None:
    """Prove a de-identified instance clean against its study's identifiers and the patterns.

    ``ours``: the words the engine wrote (trial attributes, pseudonyms, method names): never
    taken for an identifier. ``protected``: whole values kept on purpose (structure names).
    Raises:
        VerificationError: with one problem per offending attribute (kinds, never values).
    """
    options = profile.options
    matcher = matcher_for(
        ident,
        keep_institution=Option.RETAIN_INSTITUTION_IDENTITY in options,
        keep_device=Option.RETAIN_DEVICE_IDENTITY in options,
        ours=ours,
    )
    retain_uids = Option.RETAIN_UIDS in options
    people_only = people_only_tags(Option.RETAIN_INSTITUTION_IDENTITY in options)
    problems: list[str] = []
    ids = numeric_ids(ident)
    for path, tag, vr, parent in walk(ds):
        if vr not in STANDARD_VRS or binary_in_disguise(tag, vr):
            problems.append(f"{_where(path, tag)}: {_UNKNOWN_VR}")
            continue
        if tag >> 16 & 1 and not _private_allowed(parent, tag, policy, profile):
            problems.append(f"{_where(path, tag)}: private tag outside the allow-list")
            continue
        if vr == "UI" and not retain_uids:
            problem = _uid_problem(parent, tag, profile, originals)
            if problem:
                problems.append(f"{_where(path, tag)}: {problem}")
        elif vr == "IS" and number_holds_id(parent.get_item(tag).value, ids):
            problems.append(f"{_where(path, tag)}: ID")
        elif vr in TEXT_VRS:
            if not path and tag in RECORD_TAGS:
                continue
            scan = None if is_code(parent, tag) or patterns is None else patterns
            scan = scan.people() if scan is not None and tag in people_only else scan
            problems += _text_problems(
                path, tag, parent, matcher.for_tag(tag, vr), scan, protected, originals, retain_uids
            )
        elif vr in FORMED_VRS and malformed(vr, parent.get_item(tag).value):
            problems.append(f"{_where(path, tag)}: text in a {vr} value")
        elif vr == "AS" and age_over_89(parent.get_item(tag).value):
            problems.append(f"{_where(path, tag)}: {_AGE_OVER_89}")
    if str(ds.get("PatientBirthDate", "") or ""):
        problems.append("(0010,0030) PatientBirthDate: still holds a value")
    problems += _sr_age_problems(ds)
    if problems:
        raise VerificationError(problems)


def _text_problems(  # noqa: PLR0917 - one element and what it is judged by
    path: str,
    tag: int,
    parent: Dataset,
    narrow: Matcher,
    scan: Detector | None,
    protected: StructureNames | None,
    originals: set[str],
    retain_uids: bool,
) -> list[str]:
    """What a kept text element still holds: per value, and across its values read together."""
    problems = []
    texts = strings(parent, tag)
    for text in texts:
        kinds = narrow.kinds_in(text, scan)
        if kinds and protected is not None and text in protected:
            continue
        if kinds and not is_standard_meaning(parent, tag):
            problems.append(f"{_where(path, tag)}: {', '.join(kinds)}")
        if not retain_uids and any(u in originals for u in _UID_IN_TEXT.findall(text)):
            problems.append(f"{_where(path, tag)}: original UID in text")
    if len(texts) > 1 and not (protected and any(t in protected for t in texts)):
        kinds = narrow.kinds_in(" ".join(texts), scan)  # split across values: DR\\PATEL
        if kinds and not is_standard_meaning(parent, tag):
            problems.append(f"{_where(path, tag)}: {', '.join(kinds)} across values")
    return problems


def declared_options(ds: Dataset) -> frozenset[Option]:
    """Return the options a file declares in DeidentificationMethodCodeSequence."""
    by_code = {code: name for name, (code, _m) in METHOD_CODES.items() if name != "basic"}
    found = set()
    for item in ds.get("DeidentificationMethodCodeSequence") or []:
        name = by_code.get(str(item.get("CodeValue", "")))
        if name is not None:
            found.add(Option(name))
    return frozenset(found)


def audit(
    ds: Dataset,
    profile: Profile,
    policy: PrivatePolicy,
    allow_burned_in: bool,
    *,
    ours: Iterable[str] = (),
    patterns: Detector | None = None,
) -> list[str]:
    """Return what is wrong with a supposedly de-identified instance (empty when it passes).

    ``profile``: the options to judge by (the protocol's, on a gate; else the declared ones).
    ``ours``: the pseudonyms and trial words the sender announced (not findings).
    ``patterns``: the knowledge-free detectors (default: the packaged audit table); every kept
    free text is scanned for dates, phone and NHS numbers, e-mail addresses, ID-like tokens and
    person-name forms.
    """
    problems = _audit_header(ds, allow_burned_in)
    retain_uids = Option.RETAIN_UIDS in profile.options
    people_only = people_only_tags(Option.RETAIN_INSTITUTION_IDENTITY in profile.options)
    detector = patterns if patterns is not None else default_detector(audit=True)
    detector = detector.for_options(profile.options)
    mask = ours_pattern(ours)
    reqs = iod.requirements(str(ds.get("SOPClassUID", "") or ""))
    for path, tag, vr, parent in walk(ds):
        if vr not in STANDARD_VRS or binary_in_disguise(tag, vr):
            problems.append(f"{_where(path, tag)}: {_UNKNOWN_VR}")
            continue
        problem = _audit_element(
            path,
            tag,
            vr,
            parent,
            profile=profile,
            policy=policy,
            retain_uids=retain_uids,
            reqs=reqs,
        )
        if problem is None and vr in TEXT_VRS and not is_code(parent, tag):
            scan = detector.people() if tag in people_only else detector
            problem = _audit_text(path, tag, parent, scan, mask)
        if problem:
            problems.append(f"{_where(path, tag)}: {problem}")
    return problems + _sr_age_problems(ds)


def _sr_age_problems(ds: Dataset) -> list[str]:
    """An SR's age (a NUM "Subject Age" item) of more than 90 years, at any depth."""
    if any(sr_age_over_89(measured, days) for measured, days in sr_ages(ds)):
        return [f"(0040,A730) ContentSequence: NumericValue: {_AGE_OVER_89}"]
    return []


def _audit_text(
    path: str, tag: int, parent: Dataset, detector: Detector, mask: re.Pattern[str] | None
) -> str | None:
    if not path and (tag in WRITTEN_BY_US or tag in RECORD_TAGS):
        return None
    if path.startswith("DeidentificationMethodCodeSequence"):
        return None
    values = strings(parent, tag)
    # each value, and the values read together (an identifier split: DR\\PATEL, MRN\\12345)
    for value in [*values, " ".join(values)] if len(values) > 1 else values:
        text, folded = value, fold(value)
        if mask is not None:
            for m in mask.finditer(folded):
                blank = " " * (m.end() - m.start())
                text = text[: m.start()] + blank + text[m.end() :]
                folded = folded[: m.start()] + blank + folded[m.end() :]
        kinds = detector.kinds(text, folded)
        if kinds and not is_standard_meaning(parent, tag):
            return f"kept text holds {', '.join(kinds)}"
    return None


def _op_at(  # noqa: PLR0917 - one element of the walk and its context
    profile: Profile,
    tag: int,
    vr: str,
    where: str,
    parent: Dataset,
    reqs: dict[str, str] | None,
) -> Op | None:
    """The engine's operation for this element, conditional codes resolved for the IOD."""
    code = profile.code(tag)
    if code is None or not is_conditional(code):
        return profile.op(tag, vr)
    if reqs is None:
        return resolve(code, vr, None)
    chain = _chain(where)
    if chain is None:
        return resolve(code, vr, None)
    return resolve(code, vr, reqs.get(iod.path_key(chain, tag), "3"))


def _chain(where: str) -> tuple[int, ...] | None:
    """Sequence tags of a walk path like ``ReferencedStudySequence[0].`` (None: unknown)."""
    out = []
    for part in where.split("].")[:-1] if where else []:
        name = part.rsplit("[", 1)[0]
        tag = tag_for_keyword(name)
        if tag is None:
            return None
        out.append(tag)
    return tuple(out)


def _audit_header(ds: Dataset, allow_burned_in: bool) -> list[str]:
    problems: list[str] = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        problems.append("(0012,0062) PatientIdentityRemoved: not YES")
    codes = {
        str(i.get("CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence") or []
    }
    if METHOD_CODES["basic"][0] not in codes:
        problems.append("(0012,0064) DeidentificationMethodCodeSequence: no Basic Profile code")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
        problems.append("(0028,0301) BurnedInAnnotation: YES")
    if str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES and not allow_burned_in:
        problems.append("(0008,0016) SOPClassUID: secondary capture, may carry burned-in text")
    comments = str(ds.get("PatientComments", "") or "")
    if comments and not _XNAT_LINE.match(comments):
        problems.append("(0010,4000) PatientComments: free text")
    return problems


def _audit_element(
    path: str,
    tag: int,
    vr: str,
    parent: Dataset,
    *,
    profile: Profile,
    policy: PrivatePolicy,
    retain_uids: bool,
    reqs: dict[str, str] | None = None,
) -> str | None:
    group = tag >> 16
    if group & 1:
        return None if _private_allowed(parent, tag, policy, profile) else "private tag"
    if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
        return "curve or overlay data"
    if not path and tag in WRITTEN_BY_US:
        return None
    values = strings(parent, tag) if vr != "SQ" else []
    op = _op_at(profile, tag, vr, path, parent, reqs)
    if op is Op.REMOVE:
        return "Annex E says remove, still present"
    if op is Op.EMPTY and values:
        return "Annex E says empty, still holds a value"
    if vr == "PN" and values and op is not Op.DUMMY:
        return "a person's name"
    if vr == "AS" and age_over_89(values):
        return _AGE_OVER_89
    if vr == "UI" and not retain_uids:
        for v in values:
            if (
                v not in UID_dictionary
                and not v.startswith("2.25.")
                and not is_registry_uid(tag, v)
            ):
                return "UID not remapped"
    return None
