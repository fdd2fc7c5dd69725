"""Hostile and corrupt sequences against the byte rewriter (``uploader.deid.rawseq``): for each
crafted file the output (as read back), the UID map and what was struck are the same with the
fast path as with pydicom's walk, and no planted identifier (names, the patient ID, a phone
number, a date, an original UID) is in the bytes written. Elements out of order, items whose
length cuts an element, undefined lengths where they do not belong, UIDs with spaces, names or
nothing in them, text in the wrong VR, group lengths, curves, overlays and private blocks in
items, ISO 2022 escapes, NUL padding, a deep nesting."""

from __future__ import annotations

import io
import struct

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from uploader.deid import batch, engine

from .test_rawseq_equals_pydicom_walk import _same, _settings

_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_PADDED = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM"})
UNDEFINED = 0xFFFFFFFF
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
#: what must never reach the written bytes (the original UIDs all start with ORIGINAL)
ORIGINAL = b"1.2.826.0.1.3680043.99."
PLANTED = (b"WHITCOMBE", b"AGATHA", b"PEMBERTON", b"RXQ7734219", b"0161 496 0734", b"15/03/2024")
PLANTED += (b"John Smith", ORIGINAL)


def el(tag: int, vr: str, value: bytes | str, length: int | None = None) -> bytes:
    """One explicit VR little endian element, padded as DICOM pads (unless ``length`` given)."""
    data = value.encode("latin-1") if isinstance(value, str) else value
    if length is None and len(data) % 2:
        data += b"\x00" if vr == "UI" else b" " if vr in _PADDED else b""
    size = len(data) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG:
        return head + b"\x00\x00" + struct.pack("<I", size) + data
    return head + struct.pack("<H", size) + data


def item(body: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body) if length is None else length) + body


def sq(tag: int, items: list[bytes], length: int | None = None) -> bytes:
    return el(tag, "SQ", b"".join(items), length)


def _uid(value: str) -> bytes:
    return el(0x00081155, "UI", value)


_CLASS = el(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2")
_NAME = "WHITCOMBE^AGATHA"


def _contours(*image: bytes) -> bytes:
    """ROIContourSequence > ContourSequence > ContourImageSequence > one item of ``image``."""
    contour = (
        sq(0x30060016, [item(b"".join(image))])
        + el(0x30060042, "CS", "CLOSED_PLANAR")
        + el(0x30060046, "IS", "1")
        + el(0x30060050, "DS", "1.0\\2.0\\3.0")
    )
    roi = el(0x3006002A, "IS", "255\\0\\0") + sq(0x30060040, [item(contour)])
    return sq(0x30060039, [item(roi + el(0x30060084, "IS", "1"))])


def _roi(*elements: bytes, length: int | None = None) -> bytes:
    return sq(0x30060039, [item(b"".join(elements), length)])


def _file(*raw: bytes) -> bytes:
    """An RTSTRUCT naming its patient, with ``raw`` elements (bytes) put in tag order."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.1.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1.3"
    ds.PatientName = _NAME
    ds.PatientID = "RXQ7734219"
    ds.PatientBirthDate = "19610315"
    ds.Modality = "RTSTRUCT"
    ds.StudyDate = "20240315"
    ds.ReferringPhysicianName = "PEMBERTON^HUGO"
    elements = [el(elem.tag, elem.VR, _encoded(elem.tag, ds)) for elem in ds]
    elements += raw
    elements.sort(key=lambda e: struct.unpack_from("<HH", e))
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    head = Dataset()
    head.file_meta = meta
    buffer = io.BytesIO()
    head.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue() + b"".join(elements)


def _encoded(tag: int, ds: Dataset) -> bytes:
    """An element's value as pydicom writes it (explicit VR little endian)."""
    one = Dataset()
    one[tag] = ds[tag]
    buffer = io.BytesIO()
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, one)
    data = buffer.getvalue()
    return data[8:]  # after tag, VR and 16-bit length (all of these are short VRs)


def _written(data: bytes) -> bytes:
    """The bytes ``uploader anonymise`` writes for ``data`` (basic profile)."""
    settings = _settings("basic profile")
    ident = engine.collect(batch.read_dicom(io.BytesIO(data)), kept=settings.profile.kept_tags)
    out = engine.deidentify(batch.read_dicom(io.BytesIO(data)), settings, study=ident)
    buffer = io.BytesIO()
    out.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_ID = _uid("1.2.826.0.1.3680043.99.7.1")
_IS = el(0x30060084, "IS", "1")
#: attack -> (raw elements, whether the fast path must take the contour sequence)
ATTACKS: dict[str, tuple[bytes, bool]] = {
    "elements out of order": (_contours(_ID, _CLASS), False),
    "UID: a name": (_contours(_CLASS, _uid("John Smith")), True),
    "UID: the patient ID": (_contours(_CLASS, _uid("RXQ7734219")), True),
    "UID: spaces around": (_contours(_CLASS, _uid(" 1.2.826.0.1.3680043.99.7.1 ")), True),
    "UID: space inside": (_contours(_CLASS, _uid("1.2.826.0.1.3680043.99 .7.1")), True),
    "UID: two values": (
        _contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1\\1.2.826.0.1.3680043.99.7.2")),
        True,
    ),
    "UID: a backslash alone": (_contours(_CLASS, _uid("\\")), True),
    "UID: empty values and spaces": (
        _contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1 \\ \\")),
        True,
    ),
    "UID: empty": (_contours(_CLASS, _uid("")), True),
    "UID: NUL padding": (_contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1\x00\x00\x00")), True),
    "UID: a tab": (_contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1\t")), True),
    "UID: odd length, no padding": (
        _contours(_CLASS, el(0x00081155, "UI", b"1.2.826.0.1.3680043.99.71", 25)),
        True,
    ),
    "UID written as LO": (
        _contours(_CLASS, el(0x00081155, "LO", "1.2.826.0.1.3680043.99.7.1")),
        False,
    ),
    "UID written as SH": (
        _contours(_CLASS, el(0x00081155, "SH", "1.2.826.0.1.3680043.99.7.1")),
        False,
    ),
    "UID written as UT": (
        _contours(_CLASS, el(0x00081155, "UT", "1.2.826.0.1.3680043.99.7.1")),
        False,
    ),
    "UID written as OB": (
        _contours(_CLASS, el(0x00081155, "OB", b"1.2.826.0.1.3680043.99.7.1\x00")),
        False,
    ),
    "UID written as SQ holding a name": (
        _contours(_CLASS, sq(0x00081155, [item(el(0x00100010, "PN", _NAME))])),
        False,
    ),
    "PN in a contour item": (_contours(_CLASS, _ID, el(0x00100010, "PN", _NAME)), False),
    "PN written as LO": (_contours(_CLASS, _ID, el(0x00100010, "LO", _NAME)), False),
    "ROI interpreter written as LO": (
        _contours(_CLASS, _ID, el(0x300600A6, "LO", "PEMBERTON^HUGO")),
        False,
    ),
    "referring physician in an item": (_roi(el(0x00080090, "PN", "PEMBERTON^HUGO"), _IS), False),
    "referring physician as LO": (_roi(el(0x00080090, "LO", "PEMBERTON^HUGO"), _IS), False),
    "patient ID in text": (_contours(_CLASS, _ID, el(0x00081030, "LO", "RXQ7734219")), False),
    "patient ID in an ROI name": (
        _contours(_CLASS, _ID, el(0x30060026, "LO", "RXQ7734219 GTV")),
        False,
    ),
    "phone number in text": (
        _contours(_CLASS, _ID, el(0x30060026, "LO", "call 0161 496 0734")),
        False,
    ),
    "date in text": (_contours(_CLASS, _ID, el(0x30060026, "LO", "GTV 15/03/2024")), False),
    "name with a NUL inside": (
        _contours(_CLASS, _ID, el(0x30060026, "LO", "WHIT\x00COMBE")),
        False,
    ),
    "name NUL-padded": (_contours(_CLASS, _ID, el(0x30060026, "LO", "WHITCOMBE\x00")), False),
    "name in UT": (_roi(_IS, el(0x30060028, "UT", "WHITCOMBE")), False),
    "name in AE": (_roi(el(0x00080055, "AE", "WHITCOMBE"), _IS), True),
    "text NUL-padded": (_contours(_CLASS, _ID, el(0x30060026, "LO", "GTV\x00")), False),
    "text of odd length": (_contours(_CLASS, _ID, el(0x30060026, "LO", b"GTV", 3)), False),
    "ISO 2022 escapes in text": (
        _contours(_CLASS, _ID, el(0x30060026, "LO", b"\x1b$B;3ED\x1b(B")),
        False,
    ),
    "a character set in the item": (
        _contours(el(0x00080005, "CS", "ISO 2022 IR 87"), _CLASS, _ID),
        True,
    ),
    "date in an item": (_contours(_CLASS, _ID, el(0x00080020, "DA", "20240315")), False),
    "name typed into a date": (_contours(_CLASS, _ID, el(0x00080020, "DA", "WHITCOMBE")), False),
    "name typed into numbers": (_contours(_CLASS, _ID, el(0x30060050, "DS", "WHITCOMBE")), False),
    "group length in an item": (
        _contours(el(0x00080000, "UL", struct.pack("<I", 99)), _CLASS, _ID),
        True,
    ),
    "overlay in an item": (
        _contours(_CLASS, _ID, el(0x60000022, "LO", "WHITCOMBE"), el(0x60003000, "OW", b"\0\0")),
        True,
    ),
    "curve in an item": (_contours(_CLASS, _ID, el(0x50000022, "LO", "WHITCOMBE AGATHA")), True),
    "private block in an item": (
        _contours(_CLASS, _ID, el(0x00090010, "LO", "ACME"), el(0x00091001, "LO", "WHITCOMBE")),
        False,
    ),
    "undefined length on OB": (
        _contours(_CLASS, _ID, el(0x30060050, "OB", item(b"") + SEQ_END, UNDEFINED)),
        False,
    ),
    "undefined length on LO": (_contours(_CLASS, _ID, el(0x30060026, "LO", b"", 0xFFFF)), False),
    "item length cuts an element": (_roi(_IS, el(0x30060026, "LO", "WHITCOMBE"), length=12), False),
    "item length past the sequence": (_roi(_IS, length=40), False),
    "undefined-length item": (_roi(_IS, ITEM_END, length=UNDEFINED), True),
    "undefined-length nested sequence": (
        _roi(
            _IS, el(0x30060040, "SQ", item(_CLASS + _ID, UNDEFINED) + ITEM_END + SEQ_END, UNDEFINED)
        ),
        False,
    ),
    "undefined-length nested sequence, a name": (
        _roi(
            _IS,
            el(
                0x30060040,
                "SQ",
                item(el(0x30060026, "LO", "WHITCOMBE") + _ID, UNDEFINED) + ITEM_END + SEQ_END,
                UNDEFINED,
            ),
        ),
        False,
    ),
    "sequence delimiter in a defined sequence": (sq(0x30060039, [item(_IS), SEQ_END]), False),
    "item delimiter in a defined item": (
        _roi(_IS, ITEM_END, el(0x30060026, "LO", "WHITCOMBE")),
        False,
    ),
    "SQ on a text attribute": (_roi(_IS, sq(0x30060026, [item(_ID)])), False),
    "SQ on a text attribute, a name": (
        _roi(_IS, sq(0x30060026, [item(el(0x30060026, "LO", "WHITCOMBE"))])),
        False,
    ),
    "text on a sequence attribute": (_roi(el(0x30060040, "LO", "WHITCOMBE"), _IS), False),
    "a short number without bytes": (_roi(el(0x00280010, "US", b""), _IS), True),
    "an AT of odd length": (_roi(el(0x00209165, "AT", b"\x01\x02\x03\x04\x05"), _IS), True),
    "a VR in lower case": (_roi(el(0x30060084, "is", "1")), False),
    "a VR DICOM lacks": (_roi(el(0x30060084, "XX", "1")), False),
    "original attributes in an item": (
        _roi(_IS, sq(0x04000561, [item(el(0x00100010, "PN", _NAME))])),
        False,
    ),
    "original attributes, undefined length": (
        _roi(
            _IS,
            el(
                0x04000561,
                "SQ",
                item(el(0x00100010, "PN", _NAME), UNDEFINED) + ITEM_END + SEQ_END,
                UNDEFINED,
            ),
        ),
        False,
    ),
    "an empty sequence": (sq(0x30060039, []), True),
    "an empty item": (sq(0x30060039, [item(b"")]), True),
    "UN on a sequence attribute": (
        el(0x30060039, "UN", item(_IS + el(0x30060026, "LO", "GTV"))),
        False,
    ),
    "UN on a sequence attribute, a name": (
        el(0x30060039, "UN", item(_IS + el(0x30060026, "LO", "WHITCOMBE"))),
        False,
    ),
}


def _deep(levels: int) -> bytes:
    body = _ID
    for _ in range(levels):
        body = sq(0x00081115, [item(body + el(0x00200013, "IS", "1"))])
    return sq(0x30060039, [item(body)])


ATTACKS["50 levels deep"] = (_deep(50), True)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_hostile_sequence_de_identifies_as_pydicom_walk_does(attack: str) -> None:
    raw, fast = ATTACKS[attack]
    data = _file(raw)
    taken = _same(data, _settings("basic profile"))
    assert (0x30060039 in taken) == fast, "the fast path took (or refused) the sequence"
    written = _written(data)
    assert [p for p in PLANTED if p in written] == []


# What the attack found wrong, fixed, kept as tests (F1-F4, F6 of the attack's report).


def test_a_senders_de_identification_record_never_replaces_ours() -> None:
    """F1: the sender's DeidentificationMethodCodeSequence is rewritten, then the header writes
    ours over it: ours is what is written (the sender's was put back over it)."""
    from pydicom import dcmread

    for theirs in ([], [item(_uid("1.2.826.0.1.3680043.99.7.9"))]):
        back = dcmread(io.BytesIO(_written(_file(sq(0x00120064, theirs)))))
        codes = [c.CodeValue for c in back.DeidentificationMethodCodeSequence]
        assert "113100" in codes, codes  # the Basic Application Confidentiality Profile


def test_a_body_read_as_explicit_under_an_implicit_meta_is_written_whole() -> None:
    """F2: the meta says implicit VR, the body is explicit; the output is written implicit,
    so the explicit bytes of a rewritten sequence must not be copied into it."""
    from pydicom import dcmread

    data = _file(_contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1")))
    data = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2\x00\x00\x00", 1)
    _same(data, _settings("basic profile"))
    back = dcmread(io.BytesIO(_written(data)))
    contour = back.ROIContourSequence[0].ContourSequence[0]
    assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")


def test_a_fallback_leaves_no_remap_of_its_own() -> None:
    """F3: the fast path remaps a UID, meets a duplicate and falls back: the UID map holds only
    what the walk wrote (the same as without the fast path)."""
    data = _file(
        _contours(_CLASS, _uid("1.2.826.0.1.3680043.99.7.1"), _uid("1.2.826.0.1.3680043.99.7.2"))
    )
    _same(data, _settings("basic profile"))  # compares the UID maps too


def test_sequences_nested_too_deep_are_withheld_not_cut() -> None:
    """F4: 70 levels (more than any IOD, far less than where pydicom breaks) are withheld with
    the reason, by both paths; they were cut short and written."""
    settings = _settings("basic profile")
    data = _file(_deep(70))
    ident = engine.collect(batch.read_dicom(io.BytesIO(data)), kept=settings.profile.kept_tags)
    with pytest.raises(engine.WithheldError, match="nested more than 64 levels"):
        engine.deidentify(batch.read_dicom(io.BytesIO(data)), settings, study=ident)
    _same(data, settings)  # the same refusal without the fast path
    _same(_file(_deep(60)), settings)  # and 60 levels are still de-identified


def test_text_sent_as_binary_under_a_number_attribute_goes() -> None:
    """F6: ContourData (DS) sent as OB holding a name is removed, top level and in an item."""
    from pydicom import dcmread

    hidden = el(0x30060050, "OB", b"WHITCOMBE AGATHA")
    for data in (_file(hidden), _file(_roi(el(0x30060026, "LO", "GTV"), hidden))):
        written = _written(data)
        assert b"WHITCOMBE" not in written
        _same(data, _settings("basic profile"))
    assert "ContourData" not in dcmread(io.BytesIO(_written(_file(hidden))))
