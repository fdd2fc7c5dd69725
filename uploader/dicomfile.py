"""The one reader of DICOM files: every command and both nodes accept the same files.

A file is DICOM with or without its 128-byte preamble and file meta (pydicom's own
``rtstruct.dcm`` has neither), as long as it parses and names its SOP class and instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError


def read_dicom(
    source: Path | IO[bytes],
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[int | str] | None = None,
) -> Dataset:
    """Read a DICOM file with or without preamble and file meta.

    Raises:
        InvalidDicomError: the file is not DICOM (or holds no SOP Class/Instance UID).
        OSError, EOFError, ValueError, ...: the file cannot be read or is broken.
    """
    tags: Any = list(specific_tags) if specific_tags is not None else None
    try:
        return dcmread(source, stop_before_pixels=stop_before_pixels, specific_tags=tags)
    except InvalidDicomError:
        if not isinstance(source, Path):
            source.seek(0)
        ds = dcmread(source, force=True, stop_before_pixels=stop_before_pixels, specific_tags=tags)
        if "SOPInstanceUID" not in ds or (specific_tags is None and "SOPClassUID" not in ds):
            raise
        return ds
