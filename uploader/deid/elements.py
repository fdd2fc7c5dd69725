"""Reading elements cheaply: VRs of implicit elements, string values straight from raw bytes.

pydicom keeps every element of a file raw until it is accessed; decoding one costs tens of
microseconds. These helpers read what the engine and the verifiers need (VRs, strings, UIDs)
from the raw bytes when that is exact (ASCII without ISO 2022 escapes), and decode otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom._uid_dict import UID_dictionary  # pinned pydicom: the registry of standard UIDs
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import VR as _VR

TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
#: The value representations DICOM has (PS3.5 6.2, as pydicom knows them). An element read with
#: any other (a sender's or a corrupt file's two letters) has a value nobody can judge.
STANDARD_VRS = frozenset(v.value for v in _VR)  # with the ambiguous ones, as "US or SS"
_REGISTRY_SUFFIXES = ("ClassUID", "SyntaxUID", "SchemeUID", "ResourceUID", "CreatorUID")


def vr_of(elem: Any, tag: int) -> str:
    """Return the VR of a (possibly raw, implicit) element, from the dictionary if needed."""
    vr = elem.VR
    if vr and vr != "UN":
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def is_registry_uid(tag: int, value: str, listed: bool = False) -> bool:
    """True if a UI value names a registered class or scheme rather than an instance.

    ``listed``: Table E.1-1 lists the attribute as U, so only a registered value is spared.
    """
    if value in UID_dictionary:
        return True
    if listed:
        return False
    kw = keyword_for_tag(tag)
    return bool(kw) and kw.endswith(_REGISTRY_SUFFIXES)


def raw_ascii(elem: Any) -> str | None:
    """Return a raw element's value as text when its bytes decode exactly as ASCII, else None."""
    if not getattr(elem, "is_raw", False):
        return None
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes) and value.isascii() and b"\x1b" not in value:
        return value.decode("ascii")
    return None


def split_values(text: str) -> list[str]:
    """The non-empty values of a raw text value (split at backslashes, padding stripped)."""
    return [v for v in (p.strip(" \x00") for p in text.split("\\")) if v]


def strings(ds: Dataset, tag: int) -> list[str]:
    """Return the non-empty string values of an element (multi-values split, padding stripped)."""
    elem = ds.get_item(tag)
    text = raw_ascii(elem)
    if text is not None:
        return split_values(text)
    value = ds[tag].value
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if v is not None and str(v) != ""]
    return [str(value)]


#: Sequences nested deeper than this are refused: no IOD nests more than a handful of levels,
#: and pydicom (its reader, writer and dictionary look-ups) fails or runs out of memory near 300.
MAX_DEPTH = 64
_BINARY = ("OB", "OD", "OF", "OL", "OV", "OW")


def binary_in_disguise(tag: int, vr: str) -> bool:
    """True if a standard attribute arrives as binary (OB, OW, ...) where the dictionary says it
    holds text or numbers (ContourData sent as OB): such a value cannot be judged."""
    if vr not in _BINARY or tag >> 16 & 1:
        return False
    try:
        known = str(dictionary_VR(tag))
    except KeyError:
        return False
    return not any(b in known for b in _BINARY) and known != "UN"


def walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, int, str, Dataset]]:
    """Yield (path, tag, vr, parent) for every element at any depth, sequences included."""
    for tag in list(ds.keys()):
        vr = private_vr(ds, tag) if tag >> 16 & 1 else vr_of(ds.get_item(tag), tag)
        yield path, tag, vr, ds
        if vr == "SQ":
            value = ds[tag].value
            if isinstance(value, Sequence):
                name = keyword_for_tag(tag) or "item"
                for i, item in enumerate(value):
                    yield from walk(item, f"{path}{name}[{i}].")


def private_vr(ds: Dataset, tag: int, creators: dict[tuple[int, int], str] | None = None) -> str:
    """Return the VR of a private element: as written (explicit VR), else as pydicom's private
    dictionary gives it for its creator; "UN" when neither knows."""
    elem = ds.get_item(tag)
    vr = str(elem.VR or "")
    if vr and vr != "UN":
        return vr
    creators = private_creators(ds) if creators is None else creators
    creator = creators.get((tag >> 16, (tag & 0xFFFF) >> 8))
    if creator is None:
        return "UN"
    try:
        found = str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"
    return found.split(" or ", 1)[0]


def private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """Return {(group, block): private creator} for the private blocks of one data set level."""
    out = {}
    for tag in ds.keys():
        if tag >> 16 & 1 and 0x0010 <= tag & 0xFFFF <= 0x00FF:
            value = ds.get_item(tag).value
            raw = value if isinstance(value, bytes) else str(value).encode()
            out[(tag >> 16, tag & 0xFF)] = raw.decode("latin-1").strip(" \x00")
    return out
