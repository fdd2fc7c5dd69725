"""Policies applied before de-identification: burned-in text, and which private tags may stay.

An instance that may carry the patient's identity in its pixels (BurnedInAnnotation YES,
secondary captures and screen saves, dose reports and patient-protocol series) is withheld
with a reason unless the protocol explicitly allows that kind. Private tags are removed unless
a protocol allow-list (by private creator and element) or the standard's Safe Private list,
under the Retain Safe Private option, names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uploader.deid.profile import Option, Profile
from uploader.errors import ConfigError, WithheldError

SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
#: Series that hospital guidance warns carry burned-in patient data.
RISKY_SERIES = re.compile(
    r"dose\s*(report|info|summary|page)|patient\s*protocol|exam\s*protocol|screen\s*(save|shot)",
    re.IGNORECASE,
)

#: The kinds a protocol may allow, by name, in ``deidentify.allow_burned_in``.
BURNED_IN_KINDS = ("burned_in_annotation", "secondary_capture", "screen_save", "report_series")


MEDIA_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"


def check_instance(ds: Any) -> None:
    """Raise WithheldError for files that are not instances to send (a DICOMDIR, say)."""
    if (
        str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        == MEDIA_DIRECTORY_CLASS
    ):
        raise WithheldError(
            "a DICOMDIR (media index that lists patients), not an instance", "dicomdir"
        )
    if "DirectoryRecordSequence" in ds:
        raise WithheldError(
            "a DICOMDIR (media index that lists patients), not an instance", "dicomdir"
        )
    if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
        raise WithheldError("no SOP Class or SOP Instance UID: not a storable instance", "no_sop")


def check_pixels(ds: Any, allowed: Iterable[str] = ()) -> None:
    """Raise WithheldError if the instance may carry burned-in identity and that is not allowed."""
    allow = set(allowed)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        if "burned_in_annotation" not in allow:
            raise WithheldError(
                "BurnedInAnnotation is YES: the pixels carry text", "burned_in_annotation"
            )
        return
    if str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES:
        if "secondary_capture" not in allow:
            raise WithheldError("secondary capture: may carry burned-in text", "secondary_capture")
        return
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "SCREEN SAVE" in image_type or str(ds.get("ConversionType", "")).upper() == "WSD":
        if "screen_save" not in allow:
            raise WithheldError("screen save: may carry burned-in text", "screen_save")
        return
    for kw in ("SeriesDescription", "ProtocolName", "StudyDescription"):
        text = str(ds.get(kw, "") or "")
        if RISKY_SERIES.search(text) and "report_series" not in allow:
            raise WithheldError(
                f"{kw} names a dose report or patient protocol series, which may carry "
                "burned-in patient data",
                "report_series",
            )


_PRIVATE_RE = re.compile(r"^\(([0-9A-Fa-f]{4}),(?:[xX]{2}|[0-9A-Fa-f]{2})([0-9A-Fa-f]{2})\)$")


@dataclass(frozen=True)
class PrivateKey:
    """A private element identified the only stable way: group, creator and element byte."""

    group: int
    creator: str
    element: int

    @classmethod
    def parse(cls, tag: str, creator: str) -> PrivateKey:
        """Parse ``(7053,xx00)`` (or ``(7053,1000)``) with its private creator string.

        Raises:
            ConfigError: not a private tag in that notation.
        """
        m = _PRIVATE_RE.match(tag.strip())
        if not m or not int(m.group(1), 16) & 1:
            raise ConfigError(
                f"private tag {tag!r}: write it as (gggg,xxee) with an odd group, e.g. (7053,xx00)"
            )
        return cls(int(m.group(1), 16), creator.strip(), int(m.group(2), 16))


class PrivatePolicy:
    """Decides which private elements of a data set stay; everything else goes."""

    def __init__(self, allowed: Iterable[PrivateKey] = ()) -> None:
        self._allowed = frozenset(allowed)

    def __bool__(self) -> bool:
        return bool(self._allowed)

    def keeps(self, group: int, creator: str, element_byte: int) -> bool:
        """Return True if the element (group, creator, low byte) is on the allow-list."""
        return PrivateKey(group, creator.strip(), element_byte) in self._allowed

    def with_keys(self, keys: Iterable[PrivateKey]) -> PrivatePolicy:
        """Return a policy that also allows ``keys``."""
        return PrivatePolicy(self._allowed | frozenset(keys))


def private_kept(
    tag: int, creators: dict[tuple[int, int], str], policy: PrivatePolicy, profile: Profile
) -> bool:
    """True if a private data element stays: on the allow-list, or Safe Private under the option.

    Creator elements (gggg,0010-00FF) are judged by the elements of their block, by the caller.
    """
    group, elem_no = tag >> 16, tag & 0xFFFF
    creator = creators.get((group, elem_no >> 8))
    if creator is None:
        return False  # a private element without its creator cannot be identified: it goes
    if policy.keeps(group, creator, elem_no & 0xFF):
        return True
    return Option.RETAIN_SAFE_PRIVATE in profile.options and profile.is_safe_private(
        group, creator, elem_no & 0xFF
    )


#: The letters each string VR that is not text may hold (PS3.5 6.2): a letter outside them (a
#: name typed into a time, a note in a decimal string) is text in the wrong place, which cannot
#: be cleaned as text, so it is not kept. Digits and punctuation are never judged: a comma
#: decimal ("0,5") is malformed but names nobody, and emptying it would break the geometry.
_VR_LETTERS: dict[str, bytes] = {
    "DS": b"eE",
    "IS": b"",
    "TM": b"",
    "DA": b"",
    "DT": b"",
    "AS": b"DWMY",
}
_NOT_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())
_DELETE = {vr: _NOT_LETTERS + letters for vr, letters in _VR_LETTERS.items()}
_WORD_LETTERS = 2
#: The VRs ``malformed`` judges.
FORMED_VRS = frozenset(_VR_LETTERS)


def malformed(vr: str, value: object) -> bool:
    """True if a DS, IS, TM, DA, DT or AS value holds letters (or non-ASCII characters) its VR
    does not allow: two or more, as any word or initials take (a stray "1A" names nobody, and
    emptying a NumberOfFrames would break the pixels).

    ``value``: the raw bytes (or the decoded value). One pass in C over the bytes: cheap
    enough for every number of a contour."""
    allowed = _DELETE.get(vr)
    if allowed is None or value is None:
        return False
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "replace")
    elif isinstance(value, Iterable):  # a list or pydicom's MultiValue
        raw = "\\".join(str(v) for v in value).encode("utf-8", "replace")
    else:
        return False  # a number pydicom already converted
    return len(raw.translate(None, allowed)) >= _WORD_LETTERS


#: An age over 89 years identifies (HIPAA's Safe Harbor, 45 CFR 164.514(b)(2)(i)(C), and
#: TCIA's practice): a kept age is written as this, "90 or older".
AGE_CAP = "090Y"
#: a number in an age and the unit after it (none: years); read in any form, not only the
#: standard's nnnX: "1080M", "95.5Y", "+95Y", "095Y." are 90 years to anyone who reads them
_AGE = re.compile(r"([0-9]+(?:[.,][0-9]+)?)(?:[^0-9A-Z]{0,3}([DWMY]))?")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25, None: 365.25}


def age_over_89(value: object) -> bool:
    """True if an age string value (AS, "095Y"; or a bare "95", read as years) is 90 years
    or more, in any of its values, written otherwise than as ``AGE_CAP`` (the category)."""
    if value is None:
        return False
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("ascii", "replace")
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Iterable):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    for part in text.split("\\"):
        age = part.strip("\x00 ").upper()
        if age == AGE_CAP:
            continue
        for m in _AGE.finditer(age):
            number = float(m.group(1).replace(",", "."))
            if number * _DAYS_PER[m.group(2)] >= 90 * 365.25:
                return True
    return False


#: SR concepts whose NUM value is the patient's age (DCM "Subject Age", LOINC "Age", SNOMED
#: "Age"), as dose reports' patient characteristics carry it.
_AGE_CONCEPTS = frozenset({("121033", "DCM"), ("30525-0", "LN"), ("397669002", "SCT")})
#: UCUM units of an age, in days (any other unit is read as years)
_AGE_UNIT_DAYS = {"a": 365.25, "mo": 365.25 / 12, "wk": 7.0, "d": 1.0}
_NINETY_YEARS = 90 * 365.25


def _code(item: Any, keyword: str) -> tuple[str, str]:
    codes = item.get(keyword)
    if not codes or not hasattr(codes[0], "get"):
        return ("", "")
    return (
        str(codes[0].get("CodeValue", "") or ""),
        str(codes[0].get("CodingSchemeDesignator", "") or "").upper(),
    )


def sr_ages(ds: Any) -> Iterable[tuple[Any, float]]:
    """Each measured value (its item, and its unit in days) of an SR age concept anywhere in
    ``ds``'s content tree."""
    for item in ds.get("ContentSequence") or []:
        if not hasattr(item, "get"):
            continue
        value_type = str(item.get("ValueType", "") or "").upper()
        if value_type == "NUM" and _code(item, "ConceptNameCodeSequence") in _AGE_CONCEPTS:
            for measured in item.get("MeasuredValueSequence") or []:
                if hasattr(measured, "get"):
                    unit = _code(measured, "MeasurementUnitsCodeSequence")[0]
                    yield measured, _AGE_UNIT_DAYS.get(unit, 365.25)
        yield from sr_ages(item)


def sr_age_over_89(measured: Any, days: float) -> bool:
    """True if a measured value of an SR age is more than 90 years (90 itself: the category)."""
    value = measured.get("NumericValue")
    values = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    for v in values:
        try:
            if float(v) * days > _NINETY_YEARS + 1e-6:
                return True
        except (TypeError, ValueError):
            continue
    return False


def cap_sr_ages(ds: Any) -> None:
    """Write each SR age over 89 as 90 years in its unit ("90 or older")."""
    for measured, days in sr_ages(ds):
        if sr_age_over_89(measured, days):
            measured.NumericValue = f"{_NINETY_YEARS / days:.6g}"
