"""The patient's own identifiers, gathered from an input instance, and a matcher for them.

The engine uses the matcher to clean kept free text; the verifier uses the same matcher to
prove that no output string still carries a name part, ID, birth date, accession number or
address of the patient. Matching folds case and accents without changing string lengths, so
"Müller", "MULLER" and "mueller" are all found and the spans still index the original text.
Nothing here ever logs or returns an identifier's value: only its kind.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword

_MIN_NAME = 2
_MIN_ID = 3
_MIN_ADDRESS = 5
_UMLAUTS = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa"}
_WORD = r"(?<![0-9a-z]){}(?![0-9a-z])"

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
)
DATE_KEYWORDS = (
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
)


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
    """What identifies the patient of one instance, by kind (values never leave this object)."""

    names: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    birth_dates: set[str] = field(default_factory=set)
    other_dates: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)

    def key(self) -> tuple[tuple[str, ...], ...]:
        """Return a hashable form (the same patient's files share one matcher)."""
        parts = (self.names, self.ids, self.birth_dates, self.other_dates, self.addresses)
        return tuple(tuple(sorted(p)) for p in parts)


def _text(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    return [text] if text else []


def _name_parts(pn: str) -> Iterator[str]:
    for group in pn.split("="):  # alphabetic, ideographic, phonetic groups
        components = group.split("^")
        for comp in components[:3]:  # family, given, middle (not prefix or suffix)
            for token in re.split(r"[\s,]+", comp):
                part = token.strip(".-'")
                if len(part) >= _MIN_NAME:
                    yield part
                    for piece in part.split("-"):
                        if len(piece) >= _MIN_NAME:
                            yield piece


_TAGS = {
    kw: tag_for_keyword(kw)
    for kw in (*NAME_KEYWORDS, *ID_KEYWORDS, *DATE_KEYWORDS, "PatientBirthDate", "PatientAddress")
}


def _get(ds: Any, keyword: str) -> Any:
    tag = _TAGS[keyword]
    return ds[tag].value if tag in ds else None


def collect(ds: Any) -> Identifiers:
    """Gather the patient's identifiers from the top level of a pydicom Dataset."""
    found = Identifiers()
    for kw in NAME_KEYWORDS:
        for pn in _text(_get(ds, kw)):
            found.names.update(_name_parts(pn))
    for kw in ID_KEYWORDS:
        found.ids.update(v for v in _text(_get(ds, kw)) if len(v) >= _MIN_ID)
    for item in ds.get("OtherPatientIDsSequence") or []:
        found.ids.update(v for v in _text(item.get("PatientID")) if len(v) >= _MIN_ID)
    found.birth_dates.update(_text(_get(ds, "PatientBirthDate")))
    for kw in DATE_KEYWORDS:
        found.other_dates.update(_text(_get(ds, kw)))
    for address in _text(_get(ds, "PatientAddress")):
        if len(address) >= _MIN_ADDRESS:
            found.addresses.add(address)
        for piece in re.split(r"[,;\n^]+", address):
            part = piece.strip()
            if len(part) >= 6 or (len(part) >= _MIN_ID and re.search(r"\d", part)):
                found.addresses.add(part)
    return found


def _variants(text: str) -> set[str]:
    base = fold(text)
    expanded = "".join(_UMLAUTS.get(c, c) for c in text.lower())
    return {base, fold(expanded)}


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
    return [
        rf"(?<!\d){y}{mo}{d}(?!\d)",
        rf"(?<!\d){y}{sep}{mo_}{sep}{d_}(?!\d)",
        rf"(?<!\d){d_}{sep}{mo_}{sep}{y}(?!\d)",
        rf"(?<!\d){mo_}{sep}{d_}{sep}{y}(?!\d)",
        rf"(?<!\d){d_}{sep}{mo_}{sep}{y[2:]}(?!\d)",
    ]


class Matcher:
    """Finds and cleans one patient's identifiers in any string, in a single regex pass."""

    REPLACEMENT = "***"

    def __init__(self, ident: Identifiers, clean_dates: bool = True) -> None:
        by_kind: dict[str, list[str]] = {
            "name": [_WORD.format(re.escape(v)) for n in ident.names for v in _variants(n)],
            "id": [_id_pattern(v) for v in ident.ids],
            "birth date": [p for d in ident.birth_dates for p in _date_patterns(d)],
            "address": [re.escape(v) for a in ident.addresses for v in _variants(a)],
        }
        self._verify = self._compile(by_kind)
        if clean_dates:
            by_kind["date"] = [p for d in ident.other_dates for p in _date_patterns(d)]
        self._clean = self._compile(by_kind)
        self._kinds = [(kind, re.compile("|".join(pats))) for kind, pats in by_kind.items() if pats]

    @staticmethod
    def _compile(by_kind: dict[str, list[str]]) -> re.Pattern[str] | None:
        pats = sorted({p for ps in by_kind.values() for p in ps}, key=len, reverse=True)
        return re.compile("|".join(pats)) if pats else None

    @property
    def empty(self) -> bool:
        """True when the instance carried no identifier to look for."""
        return self._clean is None

    def found_in(self, text: str) -> bool:
        """True if ``text`` holds anything ``clean`` would replace."""
        return self._clean is not None and self._clean.search(fold(text)) is not None

    def kinds_in(self, text: str) -> list[str]:
        """Return the kinds of identifier found in ``text`` (empty when clean)."""
        if self._verify is None or not self._verify.search(fold(text)):
            return []
        folded = fold(text)
        return [kind for kind, pat in self._kinds if kind != "date" and pat.search(folded)]

    def clean(self, text: str) -> str:
        """Return ``text`` with every identifier (and the instance's own dates) replaced."""
        if self._clean is None:
            return text
        folded = fold(text)
        spans = [m.span() for m in self._clean.finditer(folded)]
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(self.REPLACEMENT)
            last = end
        out.append(text[last:])
        return "".join(out)


_MATCHERS: dict[tuple[object, ...], Matcher] = {}


def matcher_for(ident: Identifiers, clean_dates: bool = True) -> Matcher:
    """Return the Matcher for these identifiers, compiled once per patient and reused."""
    key = (ident.key(), clean_dates)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        if len(_MATCHERS) > 64:
            _MATCHERS.clear()
        matcher = _MATCHERS[key] = Matcher(ident, clean_dates)
    return matcher
