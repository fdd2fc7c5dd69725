"""Everything a study is known to identify, gathered from its inputs, and a matcher for it.

Cleaning must remove every identifier, not only the patient's: so the gathering reads every
instance of the study at every depth and keeps every person name (patients, staff, the person
who drew the structures), institution, department and station name, address, phone number, ID
and date or time it holds. The engine cleans kept text with the matcher (plus the pattern
detectors of ``patterns.py``); the identifiable node's verifier uses the same matcher to prove
that no output string still carries one. Matching folds case and accents without changing
string lengths, so "Müller", "MULLER" and "mueller" are all found and spans index the original.

Rules that keep useful text: a name part shorter than 3 letters is matched only as a whole
value, never inside words; the words the engine writes itself (trial attributes, pseudonyms,
method descriptions) are never taken for the patient's, whatever the patient is called.
Nothing here ever logs or returns an identifier's value: only its kind.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import python_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence

from uploader.deid.codes import DEVICE_TAGS, ENUMERATED_TAGS
from uploader.deid.elements import split_values, strings, vr_of
from uploader.deid.patterns import Detector
from uploader.dicom_header import DESCEND, SKIP, VALUE, deep_scan, text

_MIN_NAME = 3
_GLUED = 6  # name parts this long are found inside other words too
_MEMO_SIZE = 20_000
_MIN_ID = 3
_MIN_PLACE_WORD = 4
_UMLAUTS = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa"}
_WORD = r"(?<![0-9a-z]){}(?![0-9a-z])"
_TITLE = r"(?:(?:dr|mr|mrs|ms|miss|mx|prof|professor)\.?\s*)?(?:[a-z]\.\s?|[a-z]\s)?"
#: Words of institution names too common to strike on their own (the whole name still is).
_COMMON_WORDS = frozenset(
    [
        "hospital",
        "hospitals",
        "royal",
        "university",
        "college",
        "trust",
        "foundation",
        "general",
        "district",
        "county",
        "centre",
        "center",
        "clinic",
        "clinical",
        "medical",
        "medicine",
        "health",
        "healthcare",
        "care",
        "cancer",
        "oncology",
        "radiotherapy",
        "radiology",
        "imaging",
        "department",
        "dept",
        "unit",
        "service",
        "services",
        "national",
        "regional",
        "infirmary",
        "institute",
        "saint",
        "children",
        "childrens",
        "women",
        "womens",
        "community",
        "teaching",
        "the",
        "and",
        "for",
        "with",
        "main",
        "north",
        "south",
        "east",
        "west",
        "upper",
        "lower",
        "new",
        "old",
        "city",
        "group",
        "partners",
        "road",
        "street",
        "lane",
        "avenue",
        "house",
        "building",
        "floor",
        "level",
        "wing",
        "suite",
        "room",
        "station",
        "scanner",
        "console",
    ]
)

NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ResponsiblePerson",
)
ID_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "AdmissionID",
    "MedicalRecordLocator",
    "PatientTelephoneNumbers",
    "ReferringPhysicianTelephoneNumbers",
    "PersonTelephoneNumbers",
    "PersonTelecomInformation",
    "PatientTelecomInformation",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberProcedure",
    "FillerOrderNumberProcedure",
    "StudyID",
    "ServiceEpisodeID",
    "VisitComments",
    "PatientInsurancePlanCodeSequence",
    "MilitaryRank",
    "BranchOfService",
    "PatientReligiousPreference",
)
ADDRESS_KEYWORDS = (
    "PatientAddress",
    "ReferringPhysicianAddress",
    "PersonAddress",
    "CountryOfResidence",
    "RegionOfResidence",
)
INSTITUTION_KEYWORDS = (
    "InstitutionAddress",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "ResponsibleOrganization",
    "PatientInstitutionResidence",
    "ScheduledPatientInstitutionResidence",
    "RequestingService",
    "PerformedLocation",
    "ScheduledProcedureStepLocation",
    "CurrentPatientLocation",
    "ReferringPhysicianAddress",
)
STATION_KEYWORDS = (
    "StationName",
    "PerformedStationName",
    "ScheduledStationName",
    "StationAETitle",
    "PerformedStationAETitle",
    "ScheduledStationAETitle",
    "DeviceSerialNumber",
    "TreatmentMachineName",
    "DetectorID",
    "SourceSerialNumber",
)
#: Sequences that hold geometry only (thousands of items): not read for identifiers.
_GEOMETRY = frozenset({0x30060040})  # ContourSequence


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    return frozenset(t for t in (tag_for_keyword(k) for k in keywords) if t is not None)


_KIND_OF: dict[int, str] = {}
for _kind, _kws in (
    ("id", ID_KEYWORDS),
    ("address", ADDRESS_KEYWORDS),
    ("institution", INSTITUTION_KEYWORDS),
    ("station", STATION_KEYWORDS),
):
    for _t in _tags(_kws):
        _KIND_OF.setdefault(_t, _kind)
_PATIENT_NAME_TAGS = _tags(NAME_KEYWORDS)
_BIRTH_DATE = 0x00100030


class _Fold(dict[int, str]):
    """A str.translate table that lowercases and strips accents one character at a time."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        folded = unicodedata.normalize("NFKD", ch)[:1].lower()
        result = folded if len(folded) == 1 else ch
        self[code] = result
        return result


_FOLD = _Fold()


def fold(text: str) -> str:
    """Return ``text`` lowercased and without accents, with the same length."""
    if text.isascii():
        return text.lower()
    return text.translate(_FOLD)


@dataclass
class Identifiers:
    """What a study identifies, by kind (values never leave this object)."""

    names: set[str] = field(default_factory=set)  # name parts of 3+ letters (any person)
    short_names: set[str] = field(default_factory=set)  # shorter parts: whole values only
    full_names: set[str] = field(default_factory=set)  # names with short parts, both orders
    glued: set[str] = field(default_factory=set)  # a short surname glued to an initial: jpatel
    ids: set[str] = field(default_factory=set)
    birth_dates: set[str] = field(default_factory=set)
    other_dates: set[str] = field(default_factory=set)
    times: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    institutions: set[str] = field(default_factory=set)
    stations: set[str] = field(default_factory=set)

    def key(self) -> tuple[tuple[str, ...], ...]:
        """Return a hashable form (the same study's files share one matcher)."""
        cached: tuple[tuple[str, ...], ...] | None = self.__dict__.get("_key")
        if cached is None:
            cached = tuple(tuple(sorted(getattr(self, f))) for f in self.__dataclass_fields__)
            self.__dict__["_key"] = cached
        return cached

    def update(self, other: Identifiers) -> None:
        """Add another instance's identifiers (a study's are the union of its instances')."""
        for name in self.__dataclass_fields__:
            getattr(self, name).update(getattr(other, name))
        self.__dict__.pop("_key", None)


def _name_parts(pn: str) -> Iterator[str]:
    for group in pn.split("="):  # alphabetic, ideographic, phonetic groups
        components = group.split("^")
        for comp in components[:3]:  # family, given, middle (not prefix or suffix)
            for token in re.split(r"[\s,.]+", comp):
                part = token.strip(".-'")
                if part:
                    yield part
                    if "-" in part:
                        yield from (p for p in part.split("-") if p)


_TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "sir",
        "rev",
        "revd",
        "fr",
        "dame",
        "lady",
        "lord",
    ]
)


def _is_short(part: str) -> bool:
    """A Latin name part under 3 letters (ideographic parts are names at any length)."""
    return len(part) < _MIN_NAME and all(ord(c) < 0x2E80 for c in part)


def _add_name(found: Identifiers, pn: str) -> None:
    parts = [p for p in _name_parts(pn) if fold(p) not in _TITLES and len(p) > 1]
    for part in parts:
        (found.short_names if _is_short(part) else found.names).add(part)
    _add_glued(found, pn)
    if any(_is_short(p) for p in parts):  # "Li Wu": the whole name, in either order
        for group in pn.split("="):
            comps = [c.strip() for c in group.split("^")[:2] if c.strip()]
            if len(comps) == 2:
                found.full_names.add(f"{comps[0]} {comps[1]}")
                found.full_names.add(f"{comps[1]} {comps[0]}")
                # an initial with the family name: L Wu, L. Wu, Wu L
                found.full_names.add(f"{comps[1][0]} {comps[0]}")
                found.full_names.add(f"{comps[0]} {comps[1][0]}")


def _add_glued(found: Identifiers, pn: str) -> None:
    """A family name of 3 to 5 letters glued to a given name's initial, as logins and file
    names write it (JPatel, PatelJ); longer family names are found inside words anyway."""
    for group in pn.split("="):
        comps = group.split("^")
        family = re.sub(r"[\s'\u2019.\-]+", "", comps[0])
        given = [g for c in comps[1:3] for g in re.split(r"[\s,.\-]+", c) if g]
        if not (_MIN_NAME <= len(family) < _GLUED and family.isalpha()):
            continue
        for g in given:
            if fold(g) not in _TITLES:
                found.glued.update((g[0] + family, family + g[0]))


_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)


def _add_place(target: set[str], text: str) -> None:
    text = text.strip()
    if len(text) >= _MIN_ID:
        target.add(text)
    for piece in re.split(r"[,;\n^\\]+", text):
        part = piece.strip()
        if len(part) >= 6 or (len(part) >= _MIN_ID and re.search(r"\d", part)):
            target.add(part)
        for word in re.split(r"[\s/()&+\-]+", part):
            stem = _POSSESSIVE.sub("", word)  # St Mary's is written St Mary too
            for w in {word, stem}:
                if len(w) >= _MIN_PLACE_WORD and fold(w) not in _COMMON_WORDS:
                    target.add(w)


def _add(found: Identifiers, tag: int, vr: str, values: list[str]) -> None:
    if vr == "PN" or tag in _PATIENT_NAME_TAGS:
        for v in values:
            _add_name(found, v)
        return
    if tag == _BIRTH_DATE:
        found.birth_dates.update(values)
        return
    if vr in ("DA", "DT"):
        found.other_dates.update(v[:8] for v in values if len(v) >= 8)
        if vr == "DT":
            found.times.update(v[8:14] for v in values if len(v) >= 12 and v[8:14].strip("0"))
        return
    if vr == "TM":
        found.times.update(v for v in values if len(v) >= 4 and v.strip("0:. "))
        return
    kind = _KIND_OF.get(tag)
    if kind == "id":
        found.ids.update(v for v in values if len(v) >= _MIN_ID)
    elif kind == "address":
        for v in values:
            _add_place(found.addresses, v)
    elif kind == "institution":
        for v in values:
            _add_place(found.institutions, v)
    elif kind == "station":
        _add_stations(found.stations, values)


def _add_stations(target: set[str], values: list[str]) -> None:
    """A station's name, and its parts with digits (TB3 of LINAC-TB3)."""
    for v in values:
        if len(v) >= _MIN_ID:
            target.add(v)
        target.update(
            w for w in re.split(r"[\s_\-/.]+", v) if len(w) >= _MIN_ID and re.search(r"\d", w)
        )


def collect(
    ds: Any,
    found: Identifiers | None = None,
    *,
    kept: frozenset[int] = frozenset(),
) -> Identifiers:
    """Gather the identifiers of one instance (every level), into ``found`` if given.

    ``kept``: attributes the options keep whole (Retain Institution Identity keeps the
    institution's name, say): what the profile keeps is not an identifier to strike elsewhere.
    """
    found = Identifiers() if found is None else found
    stack = [ds]  # no recursion and no depth limit: a name 40 levels down is still a name
    while stack:
        level = stack.pop()
        for tag in list(level.keys()):
            if tag in _GEOMETRY or tag in kept:
                continue
            vr = vr_of(level.get_item(tag), tag)
            if tag >> 16 & 1 and vr != "PN":
                continue  # a private name (vendors keep operators there) is still a name
            if vr == "SQ":
                value = level[tag].value
                stack.extend(value if isinstance(value, Sequence) else ())
                continue
            if vr in ("PN", "DA", "DT", "TM") or tag in _KIND_OF or tag in _PATIENT_NAME_TAGS:
                try:
                    values = strings(level, tag)
                except Exception:  # noqa: S112 - a value pydicom cannot decode names nobody
                    continue
                if values:
                    _add(found, tag, vr, values)
    return found


def _judge(kept: frozenset[int]) -> Callable[[int, str], int]:
    """What ``collect`` reads of each element, for the raw walk (the same rules, in order)."""

    def judge(tag: int, vr: str) -> int:
        if tag in _GEOMETRY or tag in kept:
            return SKIP
        if tag >> 16 & 1:
            return VALUE if vr == "PN" else SKIP
        if vr == "SQ":
            return DESCEND
        if vr in ("PN", "DA", "DT", "TM") or tag in _KIND_OF or tag in _PATIENT_NAME_TAGS:
            return VALUE
        return SKIP

    return judge


_STUDY_UID, _CHARSET = 0x0020000D, 0x00080005
_OWN = frozenset({_STUDY_UID, _CHARSET})  # what the walk reads for itself, not as identifiers
#: Character sets whose bytes decode one for one with no escapes, so a walk can decode them as
#: pydicom does (no value, no backslash, is ever split by a multi-byte character).
_PLAIN_CHARSETS = frozenset(
    {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126"}
    | {"ISO_IR 127", "ISO_IR 138", "ISO_IR 144", "ISO_IR 148", "ISO_IR 166", "ISO_IR 203"}
    | {"ISO_IR 192"}
)


def _codec(raw: bytes | None) -> str | None:
    """The Python codec of a top-level Specific Character Set, or None if not a plain one."""
    name = text(raw)
    if name is None or name.strip() not in _PLAIN_CHARSETS:
        return None
    return python_encoding.get(name.strip(), "iso8859")  # none given: pydicom reads Latin-1


def collect_file(data: bytes, kept: frozenset[int] = frozenset()) -> tuple[str, Identifiers] | None:
    """``collect`` of a Part 10 file's bytes, with its Study Instance UID, by a walk of the
    element headers (``dicom_header.deep_scan``) instead of pydicom: several times faster, for
    the pre-pass that reads every header of a study. ``None`` when the walk is unsure (another
    transfer syntax, a character set with escapes or one set inside a sequence, a structure it
    does not follow): read the file with pydicom then. Tested to equal ``collect`` on every
    file pydicom ships."""
    judge = _judge(kept)
    found = deep_scan(data, lambda tag, vr: VALUE if tag in _OWN else judge(tag, vr))
    if found is None:
        return None
    top = {tag: raw for depth, tag, _vr, raw in found if depth == 0 and tag in _OWN}
    if any(depth and tag == _CHARSET for depth, tag, _vr, _raw in found):
        return None  # a character set of an item's own: pydicom follows it
    uid = text(top.get(_STUDY_UID))
    if uid is None or "\\" in uid:
        return None
    codec = _codec(top.get(_CHARSET))
    ident = Identifiers()
    for _depth, tag, vr, raw in found:
        if tag in _OWN and not judge(tag, vr):
            continue
        if raw.isascii() and b"\x1b" not in raw:
            value = raw.decode("ascii")
        elif codec is None or vr in ("DA", "DT", "TM") or b"\x1b" in raw:
            return None  # pydicom knows the other character sets
        else:
            try:
                value = raw.decode(codec)
            except UnicodeDecodeError:
                return None
        values = split_values(value)
        if values:
            _add(ident, tag, vr, values)
    return uid, ident


_SPELLED = (("ae", "a"), ("oe", "o"), ("ue", "u"), ("ss", "s"))
_APOSTROPHES = re.compile(r"['\u2019\u2018`\u00b4]")


def _variants(text: str) -> set[str]:
    """Spellings of one name: folded; umlauts written out (ü -> ue) and written-out umlauts
    read back (Mueller -> muller, the fold of Müller); apostrophes kept, dropped or spaced."""
    base = fold(text)
    expanded = fold("".join(_UMLAUTS.get(c, c) for c in text.lower()))
    out = {base, expanded}
    contracted = base
    for long, short in _SPELLED:
        contracted = contracted.replace(long, short)
    out.add(contracted)
    for v in list(out):  # MacDonald is written McDonald, Mc Donald and Mac Donald too
        m = re.match(r"(mac|mc)(?=[a-z]{3})", v)
        if m:
            rest = v[m.end() :]
            out.update({f"mac{rest}", f"mc{rest}", f"mac {rest}", f"mc {rest}"})
    for v in list(out):
        if _APOSTROPHES.search(v):
            out.add(_APOSTROPHES.sub("", v))
            out.add(_APOSTROPHES.sub(" ", v))
    return {v for v in out if len(v) >= 2}


#: A title that must be there (a short name is found after one, in any case).
_TITLED = r"(?:dr|doctor|prof|professor|mr|mrs|ms|miss|mx)\.?\s*"


def _word_of_name(word: str) -> str:
    """One word of a whole name as a pattern; an initial may carry its dot (L. Wu)."""
    return re.escape(word) + r"\.?" if len(word) == 1 else re.escape(word)


def _name_regex(variant: str) -> str:
    """A name part as a pattern: apostrophes in any form or none; long names also glued to
    other letters (jmuller_plan), short ones only as whole words."""
    body = "".join(
        "['\u2019\u2018`\u00b4 ]?" if _APOSTROPHES.match(c) else re.escape(c) for c in variant
    )
    if len(variant) >= _GLUED and variant.isalpha():
        return body
    return _WORD.format(_TITLE + body)


def numeric_ids(ident: Identifiers) -> frozenset[str]:
    """The study's IDs that are all digits (5 or more, leading zeros aside): an MRN or an
    accession number a modality may also have typed into a number (AcquisitionNumber)."""
    found = (i.strip().lstrip("0") for i in ident.ids if i.strip().isdigit())
    return frozenset(i for i in found if len(i) >= 5)


def number_holds_id(value: object, ids: frozenset[str]) -> bool:
    """True if an IS value (raw bytes, text, a number or several) is one of ``ids``."""
    if not ids or value is None:
        return False
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("latin-1")
    elif isinstance(value, str | int):
        text = str(value)
    else:
        text = "\\".join(str(v) for v in value) if isinstance(value, Iterable) else str(value)
    return any(v.strip(" \x00").lstrip("0") in ids for v in text.split("\\"))


def _id_pattern(value: str) -> str:
    folded = fold(value)
    if folded.isdigit() and len(folded) >= 6:  # NHS numbers are written "943 476 5919" too
        return _WORD.format(r"[\s\-]?".join(folded))
    return _WORD.format(re.escape(folded))


def _date_patterns(da: str) -> list[str]:
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", da.strip())
    if not m:
        return [re.escape(da)] if len(da) >= 6 else []
    y, mo, d = m.groups()
    mo_, d_ = rf"0?{int(mo)}", rf"0?{int(d)}"
    sep = r"[\-/. ]"
    month = _MONTHS[int(mo) - 1] if 1 <= int(mo) <= 12 else "(?!)"
    day = rf"{d_}(?:st|nd|rd|th)?"
    return [
        rf"(?<!\d){y}{mo}{d}(?!\d)",
        rf"(?<!\d){y}{sep}{mo_}{sep}{d_}(?!\d)",
        rf"(?<!\d){d_}{sep}{mo_}{sep}{y}(?!\d)",
        rf"(?<!\d){mo_}{sep}{d_}{sep}{y}(?!\d)",
        # two-digit years: with dots only as dd.mm.yy (1.2.10 is a version, not a date)
        rf"(?<![\d.]){d_}[\-/ ]{mo_}[\-/ ]{y[2:]}(?![\d.])",
        rf"(?<![\d.]){d_}\.{mo_}\.{y[2:]}(?![\d.])",  # the study's own date: 15.3.24 too
        rf"(?<!\d){d}{mo}{y[2:]}(?!\d)",  # ddmmyy
        rf"(?<!\d){y[2:]}{mo}{d}(?!\d)",  # yymmdd
        # the day and month without the year, as people write them on the day
        rf"(?<![\d.]){d_}[/.\-]{mo_}(?![\d/.\-])",
        rf"(?<![\d./]){mo_}/{d_}(?![\d/.\-])",  # and in American order, with its slash
        rf"(?<![0-9a-z]){day}[\s\-.]*(?:(?:of|de|del)[\s\-]+)?{month}[a-z]*\.?(?![0-9a-z])",
        rf"(?<![0-9a-z]){month}[a-z]*\.?[\s\-]*{day}(?![0-9a-z])",
    ]


#: Month names' starts in English, French, German, Italian, Spanish, Dutch and Portuguese.
_MONTHS = (
    "(?:jan|janv|jän|jaen|gen|ene)",
    "(?:feb|fev|fevr|febr)",
    "(?:mar|mär|maer|mars|maa)",
    "(?:apr|avr|abr)",
    "(?:may|mai|mag|mei)",
    "(?:jun|juin|giu)",
    "(?:jul|juil|lug)",
    "(?:aug|aou|aout|ago)",
    "(?:sep|sept|set)",
    "(?:oct|okt|ott|out)",
    "(?:nov)",
    "(?:dec|dez|dic)",
)


#: After a number: the units that make it a dose, a size or a count, not a time of day.
_NOT_A_DOSE = r"(?!\s*(?:c?gy|mu|mm|cm|%|fx|fractions?|#)(?![a-z]))"


def _time_patterns(tm: str) -> list[str]:
    m = re.match(r"(\d{2})(\d{2})(\d{2})?", tm.strip())
    if not m:
        return []
    h, mi, s = m.groups()
    h_ = rf"0?{int(h)}" if h.startswith("0") else h
    ampm = r"(?:\s*[ap]\.?m\b\.?)?"
    out = [
        rf"(?<![\d:.]){h_}[:.h]{mi}(?:[:.]\d\d)?{ampm}(?![\d:])",
        # hhmm alone is a dose or a count as often as a time: only where it is said to be one
        rf"(?<![0-9a-z])(?:at|@|time|tm)[\s:]*{h}{mi}(?![0-9a-z]){_NOT_A_DOSE}",
        rf"(?<!\d){h}{mi}\s*(?:h|hr|hrs|hours)(?![0-9a-z])",
    ]
    if s:
        out.append(rf"(?<!\d){h}{mi}{s}(?!\d)")
    return out


@dataclass(frozen=True)
class Hit:
    """One identifier found in a text: its span and kind."""

    start: int
    end: int
    kind: str


class _KindGroup:
    """Kinds of a study's identifiers as regexes: one union to pass a text that holds none at
    a single search, and each kind's own regex (for its spans) compiled at first need."""

    def __init__(self, by_kind: dict[str, list[str]]) -> None:
        self.kinds = {
            kind: sorted(set(pats), key=len, reverse=True) for kind, pats in by_kind.items() if pats
        }
        pats = sorted({p for ps in self.kinds.values() for p in ps}, key=len, reverse=True)
        self._any = re.compile("|".join(pats)) if pats else None
        self._each: dict[str, re.Pattern[str]] = {}

    def hits(self, folded: str) -> list[Hit]:
        if self._any is None or self._any.search(folded) is None:
            return []
        found: list[Hit] = []
        for kind, pats in self.kinds.items():
            regex = self._each.get(kind)
            if regex is None:
                regex = self._each[kind] = re.compile("|".join(pats))
            found.extend(Hit(m.start(), m.end(), kind) for m in regex.finditer(folded))
        return found


class Matcher:
    """Finds and cleans a study's identifiers in any string, in one regex pass per kind group.

    ``keep_institution`` / ``keep_device``: the options that retain those identities.
    ``ours``: words the engine writes itself; a hit that lies inside one of them is not a hit.
    """

    REPLACEMENT = "***"

    def __init__(
        self,
        ident: Identifiers,
        *,
        keep_institution: bool = False,
        keep_device: bool = False,
        ours: Iterable[str] = (),
    ) -> None:
        names = [_name_regex(v) for n in ident.names for v in _variants(n)]
        names += [
            _WORD.format(r"[\s,^]+".join(_word_of_name(w) for w in fold(f).split()))
            for f in ident.full_names
        ]
        # a short name after a title is that person in any case: dr wu, MR. NG
        names += [_WORD.format(_TITLED + re.escape(fold(s))) for s in ident.short_names]
        names += [_WORD.format(re.escape(v)) for g in ident.glued for v in _variants(g)]
        by_kind: dict[str, list[str]] = {
            "name": names,
            "ID": [_id_pattern(v) for v in ident.ids],
            "birth date": [p for d in ident.birth_dates for p in _date_patterns(d)],
            "address": [_WORD.format(re.escape(v)) for a in ident.addresses for v in _variants(a)],
        }
        if not keep_institution:
            by_kind["institution"] = [
                _WORD.format(re.escape(v)) for a in ident.institutions for v in _variants(a)
            ]
        if not keep_device:
            by_kind["station"] = [_WORD.format(re.escape(fold(v))) for v in ident.stations]
        # the verifier's kinds, then the header's own dates and times that only the cleaner
        # strikes: each group one quick union, and each kind's own regex compiled only once
        # a text gets past its group's union (most never do)
        extra = {
            "date": [p for d in ident.other_dates for p in _date_patterns(d)],
            "time": [p for t in ident.times for p in _time_patterns(t)],
        }
        self._base = _KindGroup(by_kind)
        self._extra = _KindGroup(extra)
        self._short = {fold(s) for s in ident.short_names}
        self._ident, self._ours_words = ident, tuple(ours)
        self._ids_only: Matcher | None = None
        self._memo: dict[tuple[str, Detector | None, bool], list[Hit]] = {}
        self._people: Matcher | None = None
        self._ours = ours_pattern(ours)

    def for_tag(self, tag: int, vr: str) -> Matcher:
        """The matcher for one attribute: enumerated code strings (Modality MR, PatientSex F,
        ValueType TEXT) are struck by the study's IDs only; other code strings and device
        descriptions by people's names (3+ letters) and IDs, never by places, stations or
        header dates (a vendor may share a word with the hospital, a version look like a
        date); everything else by all of them."""
        if tag in ENUMERATED_TAGS:
            if self._ids_only is None:
                ident = Identifiers(
                    ids=set(self._ident.ids), birth_dates=set(self._ident.birth_dates)
                )
                self._ids_only = Matcher(ident, ours=self._ours_words)
            return self._ids_only
        if vr == "CS" or tag in DEVICE_TAGS:
            if self._people is None:
                ident = Identifiers(
                    names=set(self._ident.names),
                    glued=set(self._ident.glued),
                    ids=set(self._ident.ids),
                    birth_dates=set(self._ident.birth_dates),
                )
                self._people = Matcher(ident, ours=self._ours_words)
            return self._people
        return self

    @property
    def empty(self) -> bool:
        """True when the study carried no identifier to look for."""
        return not self._base.kinds and not self._extra.kinds and not self._short

    def hits(
        self, text: str, patterns: Detector | None = None, *, verify: bool = False
    ) -> list[Hit]:
        """Return the identifiers in ``text`` (``verify``: without the study's plain dates).

        Remembered per text: a study's instances repeat most of their values (the cleaner and
        the verifier ask about each one, in every slice)."""
        key = (text, patterns, verify)  # the detector itself: an id could be reused
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) > _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self._hits(text, patterns, verify=verify)
        return list(found)

    def _hits(self, text: str, patterns: Detector | None, *, verify: bool) -> list[Hit]:
        folded = fold(text)
        found: list[Hit] = []
        if self._short and folded.strip() in self._short:
            found.append(Hit(0, len(text), "name"))
        for group in (self._base,) if verify else (self._base, self._extra):
            found.extend(group.hits(folded))
        if patterns is not None:
            found.extend(Hit(f.start, f.end, f.kind) for f in patterns.find(text, folded))
        if found and self._ours is not None:
            spans = [m.span() for m in self._ours.finditer(folded)]
            found = [h for h in found if not any(s <= h.start and h.end <= e for s, e in spans)]
        return found

    def any_in_raw(self, raw: str, patterns: Detector | None = None) -> bool:
        """True if a raw text value (values split at backslashes) holds anything to clean:
        in one value, or across values read together (``clean_values`` strikes them)."""
        if "\\" not in raw:
            return bool(self.hits(raw, patterns))
        if self._short and any(fold(v).strip() in self._short for v in raw.split("\\")):
            return True
        return bool(self.hits(raw.replace("\\", " "), patterns))

    def kinds_in(self, text: str, patterns: Detector | None = None) -> list[str]:
        """Return the kinds of identifier found in ``text`` (empty when clean)."""
        return list(dict.fromkeys(h.kind for h in self.hits(text, patterns, verify=True)))

    def clean(self, text: str, patterns: Detector | None = None) -> tuple[str, list[str]]:
        """Return ``text`` with every identifier replaced, and the kinds that were struck."""
        found = self.hits(text, patterns)
        if not found:
            return text, []
        spans = [(h.start, h.end) for h in found]
        return _strike(text, spans), list(dict.fromkeys(h.kind for h in found))

    def clean_values(
        self,
        values: list[str],
        patterns: Detector | None = None,
        keep: StructureNames | None = None,
    ) -> tuple[list[str], list[str]]:
        """Clean the values of one multi-valued element, each alone and read together.

        A sender splits an identifier across values as easily as within one: ``DR\\PATEL``,
        ``MRN\\12345``, ``020\\7946 0321``. The values are also read joined by spaces, and a
        hit that spans a boundary strikes its part of every value it touches. Values in
        ``keep`` (structure names) stay exactly. Returns the values and the kinds struck."""
        keep = keep if keep is not None else StructureNames()
        if len(values) < 2:
            if not values or values[0] in keep:
                return list(values), []
            new, struck = self.clean(values[0], patterns)
            return [new], struck
        starts, pos = [], 0
        for v in values:
            starts.append(pos)
            pos += len(v) + 1
        spans: list[tuple[int, int]] = []
        kinds: list[str] = []
        for v, at in zip(values, starts, strict=True):
            if v not in keep:
                for h in self.hits(v, patterns):
                    spans.append((at + h.start, at + h.end))
                    kinds.append(h.kind)
        for h in self.hits(" ".join(values), patterns):
            spans.append((h.start, h.end))
            kinds.append(h.kind)
        if not spans:
            return list(values), []
        out = []
        for v, at in zip(values, starts, strict=True):
            local = [
                (max(s, at) - at, min(e, at + len(v)) - at)
                for s, e in spans
                if s < at + len(v) and e > at
            ]
            out.append(v if v in keep or not local else _strike(v, local))
        return out, list(dict.fromkeys(kinds))


def _strike(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each span (merged where they touch) replaced by ``Matcher.REPLACEMENT``."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out.append(text[last:start])
        out.append(Matcher.REPLACEMENT)
        last = end
    out.append(text[last:])
    return "".join(out)


def ours_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for the words the engine writes (folded, longest first), or None."""
    folded = sorted({fold(w).strip() for w in words if w and len(w.strip()) >= 2}, key=len)
    return re.compile("|".join(re.escape(w) for w in reversed(folded))) if folded else None


_MATCHERS: dict[tuple[object, ...], Matcher] = {}


def matcher_for(
    ident: Identifiers,
    *,
    keep_institution: bool = False,
    keep_device: bool = False,
    ours: Iterable[str] = (),
) -> Matcher:
    """Return the Matcher for these identifiers, compiled once per study and reused."""
    ours_key = tuple(sorted(set(ours)))
    key = (ident.key(), keep_institution, keep_device, ours_key)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        if len(_MATCHERS) > 64:
            _MATCHERS.clear()
        matcher = _MATCHERS[key] = Matcher(
            ident, keep_institution=keep_institution, keep_device=keep_device, ours=ours_key
        )
    return matcher


_TOKEN_SPLIT = re.compile(r"[\s_\-^~.,/()+]+")


class StructureNames:
    """Whole values the cleaner keeps exactly: text that names the trial's structures.

    A value is kept when it is one of the names (TG-263 primary names, the protocol's names and
    synonyms), or when every word of it is a word of those names ("Breast" and "Lung" are words
    of TG-263's Breast_L and Lung_L): a structure's name is not a person's, even when a patient
    is called Lung. Anything else in the value is cleaned like any other text.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = frozenset(names)
        self.words = frozenset(
            fold(w) for n in self.names for w in _TOKEN_SPLIT.split(n) if w and not w.isdigit()
        )

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or not value.strip():
            return False
        if value in self.names:
            return True
        words = [w for w in _TOKEN_SPLIT.split(fold(value)) if w]
        return bool(words) and all(w in self.words for w in words)

    def __bool__(self) -> bool:
        return bool(self.names)
