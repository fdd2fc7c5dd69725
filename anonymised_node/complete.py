"""An arriving instance must parse completely before anything else looks at it.

pydicom reads a truncated file without complaint (a value shorter than its declared length, a
sequence without its delimiter, a file cut between elements), so each element's declared length
is compared with what was read, at every depth, end-of-file warnings are refusals, and an image
must carry its pixel data in full. The reasons name the attribute, never a value.
"""

from __future__ import annotations

import threading
import warnings
from io import BytesIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_warnings_lock = threading.Lock()  # catch_warnings is process-wide state


class IncompleteError(Exception):
    """The bytes are not one complete DICOM instance (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_complete(data: bytes) -> Dataset:
    """Parse a Part 10 file and prove nothing is missing.

    Raises:
        Incomplete: not DICOM, truncated, or an image without all its pixel data.
    """
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = dcmread(BytesIO(data))
            _delimited(ds, data)  # first: _lengths converts the raw elements
            _lengths(ds, "")
        except IncompleteError:
            raise
        except Exception as exc:
            reason = f"not a readable DICOM Part 10 file ({type(exc).__name__})"
            raise IncompleteError(reason) from None
    for w in caught:
        text = str(w.message)
        if "End of file" in text or "delimiter" in text or "truncat" in text.lower():
            raise IncompleteError("the file ends before its last element is complete")
    _pixels(ds)
    return ds


def _lengths(ds: Dataset, path: str) -> None:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if isinstance(raw, RawDataElement):
            value = raw.value
            if (
                isinstance(value, bytes | bytearray)
                and raw.length != _UNDEFINED
                and len(value) != raw.length
            ):
                raise IncompleteError(f"{where}: {len(value)} of its {raw.length} bytes arrived")
        elem = ds[tag]
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value or []):
                _lengths(item, f"{where}[{n}]")


_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
#: Modalities whose instances are images: without all their pixels they are incomplete.
IMAGE_MODALITIES = frozenset(
    {"CT", "MR", "PT", "NM", "CR", "DX", "MG", "US", "XA", "RF", "RTIMAGE", "RTDOSE", "OT", "SC"}
)


def _delimited(ds: Dataset, data: bytes) -> None:
    """Encapsulated pixel data must end with its sequence delimiter (pydicom accepts a cut)."""
    raw = ds.get_item(_PIXEL_DATA) if _PIXEL_DATA in ds else None
    if isinstance(raw, RawDataElement) and raw.length == _UNDEFINED:
        end = raw.value_tell + len(raw.value or b"")
        if data[end : end + 8] != _SEQ_DELIMITER:
            raise IncompleteError("(7FE0,0010) PixelData: the fragments end without a delimiter")


def _pixels(ds: Dataset) -> None:
    missing = [k for k in _REQUIRED if not str(ds.get(k, "") or "")]
    if missing:
        raise IncompleteError(f"no {missing[0]}: the file is cut short or is not an instance")
    image = str(ds.Modality).upper() in IMAGE_MODALITIES
    if not image and ("Rows" not in ds or "Columns" not in ds):
        return
    if "Rows" not in ds or "Columns" not in ds:
        raise IncompleteError("an image without its Rows and Columns: the file is cut short")
    if _PIXEL_DATA not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise IncompleteError("an image without its pixel data (7FE0,0010)")
    if _PIXEL_DATA not in ds or ds.file_meta.get("TransferSyntaxUID") is None:
        return
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return  # fragments: their item lengths were checked as they were read
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        need = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel") or 1)
            * frames
            * int(ds.get("BitsAllocated") or 16)
            + 7
        ) // 8
    except (TypeError, ValueError):
        raise IncompleteError("the image's size attributes are not numbers") from None
    have = len(ds.PixelData)
    if have < need:
        raise IncompleteError(f"(7FE0,0010) PixelData: {have} of the {need} bytes the image needs")
