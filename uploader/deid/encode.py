"""Encode a de-identified dataset as a DICOM file: byte for byte what pydicom writes, faster.

``ds.save_as(f, enforce_file_format=True)`` spends most of a CT slice's write on its Python
path through each element: a buffer per element, its VR looked up, its length measured, for
elements that left the engine untouched (still the bytes they were read in) as for the rest,
and the file meta's own small dataset written the same way. ``encode`` gives each untouched
element its header in one ``struct.pack`` and its bytes as they are, and remembers how pydicom
wrote an element of a plain value (most of what the engine writes is the same in every
instance of a run: the method, the flags, the study's UIDs and shifted dates, the pseudonyms).
Everything else is written by pydicom's own ``write_data_element``, and whenever a dataset is
not the plain case, or anything goes wrong, the whole file is written by ``save_as`` itself
(so its errors are pydicom's). The bytes are the same either way: the test
``tests/test_encode_equals_pydicom.py`` compares them on every file the tests know and on
mutated ones, so the verifier's judgement, made on the dataset, holds for what is written.

The plain case: little endian, explicit VR (native or encapsulated pixels, not deflated) or
implicit VR (as most treatment-planning systems export), read in the same encoding and
character set it is written in, with a 128-byte preamble or none.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Sequence

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_IMPLICIT = struct.Struct("<HHI")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2sHI")
_UNDEFINED = 0xFFFFFFFF
_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_PIXEL_DATA = 0x7FE00010
_PIXEL_VRS = frozenset({"OB", "OW"})
_ITEM = b"\xfe\xff\x00\xe0"
_GROUP_LENGTH = 0x00020000
_GROUP_LENGTH_UL = struct.Struct("<HH2sHI")  # (0002,0000), "UL", its 2-byte length 4, its value
#: value types whose encoding is a function of the value alone (not floats: 0.0 == -0.0)
_MEMO_TYPES = frozenset({str, UID, int, bytes, type(None)})
_MEMO_MAX = 4096
#: {(tag, VR, undefined length, character sets, value type, value): the element's bytes}
_MEMO: dict[tuple[object, ...], bytes] = {}


class _NotPlainError(Exception):
    """The dataset is not the plain case: pydicom's writer writes it."""


def encode(ds: Dataset) -> bytes:
    """Return ``ds`` as a DICOM file, exactly as ``ds.save_as(..., enforce_file_format=True)``
    would write it (and raising what it raises)."""
    try:
        return _encode(ds)
    except Exception:  # anything unusual, or an error: pydicom's own path decides and says
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def _encode(ds: Dataset) -> bytes:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if (
        meta is None
        or syntax is None
        or syntax.is_private
        or not syntax.is_transfer_syntax
        or not syntax.is_little_endian
        or syntax == DeflatedExplicitVRLittleEndian
        or ds.original_encoding != (syntax.is_implicit_VR, True)
        or ds.original_character_set != ds._character_set
        or any(tag >> 16 in (0, 2) for tag in ds._dict)
    ):
        raise _NotPlainError
    preamble = getattr(ds, "preamble", None) or b"\x00" * 128
    if len(preamble) != 128:
        raise _NotPlainError
    compressed, implicit = syntax.is_compressed, syntax.is_implicit_VR
    if _PIXEL_DATA in ds._dict:  # as pydicom's writer does: the element as a value, not as read
        ds[_PIXEL_DATA].is_undefined_length = compressed  # (an odd length padded, UN's VR given)
    encodings = ds.get("SpecificCharacterSet", "iso8859")
    chunks = [preamble, b"DICM", *_meta_chunks(_file_meta(ds, meta))]
    for tag in sorted(ds._dict):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths are not written
            continue
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            head = _raw_header(elem, implicit)
            if head is not None:
                chunks += (head, elem.value)
                if elem.length == _UNDEFINED:
                    chunks.append(_DELIMITER)
                continue
        elif tag == _PIXEL_DATA and (head := _pixel_header(elem, implicit)) is not None:
            chunks += (head, elem.value)
            if elem.is_undefined_length:
                chunks.append(_DELIMITER)
            continue
        chunks.append(_element(elem, encodings, implicit))
    return b"".join(chunks)


def _file_meta(ds: Dataset, meta: FileMetaDataset) -> FileMetaDataset:
    """The file meta as pydicom's writer makes it: its media storage UIDs those of the
    dataset, and the Type 1 elements it adds when missing (on a copy, if anything changes)."""
    sop_class, sop_instance = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    stale_class = _stale(meta.get("MediaStorageSOPClassUID"), sop_class)
    stale_instance = _stale(meta.get("MediaStorageSOPInstanceUID"), sop_instance)
    complete = _filled(meta, 0x00020001) and _filled(meta, 0x00020012) and 0x00020013 in meta._dict
    if complete and not stale_class and not stale_instance:
        validate_file_meta(meta, enforce_standard=True)  # adds nothing here: checks, may raise
        return meta
    new = FileMetaDataset()
    for elem in meta.elements():
        new[elem.tag] = copy.copy(elem)
    if stale_class:
        new.MediaStorageSOPClassUID = sop_class
    if stale_instance:
        new.MediaStorageSOPInstanceUID = sop_instance
    validate_file_meta(new, enforce_standard=True)
    return new


def _stale(current: object, wanted: object) -> bool:
    return current is None or bool(wanted and wanted != current)


def _filled(meta: FileMetaDataset, tag: int) -> bool:
    return tag in meta._dict and not meta[tag].is_empty


def _meta_chunks(meta: FileMetaDataset) -> list[bytes]:
    """The file meta group as pydicom's ``write_file_meta_info`` writes it (enforcing the
    standard): its elements in tag order after a group length that counts them."""
    if _GROUP_LENGTH in meta._dict and not _one_ul(meta.get_item(_GROUP_LENGTH)):
        raise _NotPlainError  # pydicom writes it as it is, then overwrites its first 12 bytes
    tags = sorted(t for t in meta._dict if t != _GROUP_LENGTH)
    body = [_element(meta.get_item(t), "iso8859", implicit=False) for t in tags]
    return [_GROUP_LENGTH_UL.pack(2, 0, b"UL", 4, sum(map(len, body))), *body]


def _one_ul(elem: DataElement | RawDataElement) -> bool:
    """Whether a group length is one UL value (12 bytes written): what pydicom overwrites."""
    value = elem.value
    if elem.VR != "UL":
        return False
    if isinstance(elem, RawDataElement):
        return isinstance(value, bytes) and len(value) == 4
    return type(value) is int and 0 <= value <= 0xFFFFFFFF


def _element(
    elem: DataElement | RawDataElement, encodings: str | Sequence[str], implicit: bool
) -> bytes:
    """One element as pydicom's ``write_data_element`` writes it in little endian, explicit
    or implicit VR, remembered when its value is a plain one."""
    key: tuple[object, ...] | None = None
    if isinstance(elem, DataElement):
        value, kind = elem.value, type(elem.value)
        if kind is MultiValue and all(type(v) in (str, UID) for v in value):
            value, kind = tuple((type(v), v) for v in value), tuple
        if (kind in _MEMO_TYPES or kind is tuple) and not (kind is bytes and len(value) > 1024):
            charsets = encodings if isinstance(encodings, str) else tuple(encodings)
            key = (implicit, elem.tag, elem.VR, elem.is_undefined_length, charsets, kind, value)
            found = _MEMO.get(key)
            if found is not None:
                return found
    one = DicomBytesIO()
    one.is_little_endian, one.is_implicit_VR = True, implicit
    write_data_element(one, elem, encodings)  # type: ignore[arg-type]
    encoded = one.getvalue()
    if key is not None and len(encoded) <= 1024:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = encoded
    return encoded


def _pixel_header(elem: DataElement, implicit: bool) -> bytes | None:
    """The header pydicom writes before Pixel Data of even length in OB or OW (its value and,
    if encapsulated, a sequence delimiter follow), or None (pydicom's path then writes it)."""
    value, undefined = elem.value, elem.is_undefined_length
    if type(value) is not bytes or len(value) % 2 or elem.VR not in _PIXEL_VRS:
        return None
    if undefined and value[:4] != _ITEM:
        return None  # pydicom refuses pixel data not encapsulated
    group, element = elem.tag >> 16, elem.tag & 0xFFFF
    length = _UNDEFINED if undefined else len(value)
    if implicit:
        return _IMPLICIT.pack(group, element, length)
    return _LONG.pack(group, element, str(elem.VR).encode(), 0, length)


def _raw_header(elem: RawDataElement, implicit: bool) -> bytes | None:
    """The header pydicom writes before a raw element's bytes in little endian (its value
    and, for an undefined length, a sequence delimiter follow), or None when it is not the
    plain case (pydicom's path then writes the element)."""
    vr, value = elem.VR, elem.value
    if not isinstance(value, bytes):
        return None
    undefined = elem.length == _UNDEFINED
    group, element = elem.tag >> 16, elem.tag & 0xFFFF
    if implicit:
        return _IMPLICIT.pack(group, element, _UNDEFINED if undefined else len(value))
    if not isinstance(vr, str) or len(vr) != 2 or not vr.isascii():
        return None
    if vr in EXPLICIT_VR_LENGTH_32:
        return _LONG.pack(group, element, vr.encode(), 0, _UNDEFINED if undefined else len(value))
    if undefined or len(value) > 0xFFFF:
        return None  # pydicom writes these its own way (a 4-byte length, or as UN)
    return _SHORT.pack(group, element, vr.encode(), len(value))
