"""The file writer (``uploader.deid.encode``) writes byte for byte what pydicom's
``save_as(enforce_file_format=True)`` writes, or raises what it raises: on every file pydicom
ships, our generated RT study with planted identifiers and real TPS exports, each
de-identified under the Basic Profile, the clean options and a protocol; on the same files as
read, untouched; and on a thousand corrupted copies. And it does take its fast path (a
writer that always handed over to pydicom would pass the rest)."""

from __future__ import annotations

import copy
import io
import random
import struct
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from uploader.deid import encode as encoder
from uploader.deid import engine
from uploader.dicomfile import read_dicom

from .test_rawseq_equals_pydicom_walk import CASES, _settings, _study

BUNDLED = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def _pydicom(ds: Dataset) -> bytes | str:
    try:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    except Exception as exc:
        return type(exc).__name__


def _ours(ds: Dataset) -> bytes | str:
    try:
        return encoder.encode(ds)
    except Exception as exc:
        return type(exc).__name__


def _same(ds: Dataset) -> bool:
    """Assert both writers agree on ``ds``; return True if ours took its fast path."""
    fast: list[bool] = []
    original = encoder._encode

    def watching(d: Dataset) -> bytes:
        out = original(d)
        fast.append(True)
        return out

    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(encoder, "_encode", watching)
        ours = _ours(copy.deepcopy(ds))
    theirs = _pydicom(copy.deepcopy(ds))
    if ours != theirs:
        where = _first_difference(ours, theirs)
        raise AssertionError(f"the writers differ ({where})")
    return bool(fast)


def _first_difference(a: bytes | str, b: bytes | str) -> str:
    if isinstance(a, str) or isinstance(b, str):
        ours, theirs = (x if isinstance(x, str) else "wrote" for x in (a, b))
        return f"ours {ours}, pydicom's {theirs}"
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return f"at byte {at} of {len(a)} / {len(b)}"


def _deidentified(data: bytes, settings: engine.Settings) -> Dataset | None:
    try:
        ds = read_dicom(io.BytesIO(data))
        ident = engine.collect(read_dicom(io.BytesIO(data)), kept=settings.profile.kept_tags)
        return engine.deidentify(ds, settings, study=ident).dataset
    except Exception:  # withheld or refused: nothing is written, nothing to compare
        return None


@pytest.mark.parametrize("case", CASES)
def test_de_identified_files_are_written_as_pydicom_writes_them(tmp_path: Path, case: str) -> None:
    settings = _settings(case)
    inputs = [p.read_bytes() for p in BUNDLED] + _study(tmp_path / "study")
    fast = compared = 0
    for data in inputs:
        out = _deidentified(data, settings)
        if out is not None:
            compared += 1
            fast += _same(out)
    print(f"{case}: {compared} written, {fast} by the fast path")
    assert compared > 35
    assert fast > 25, f"the fast path was taken for only {fast} of {compared} files"


def test_real_tps_exports_are_written_as_pydicom_writes_them() -> None:
    from .test_real_rt_exports_stay_valid import _dicompyler_data

    files = sorted(_dicompyler_data().glob("*.dcm"))
    assert files
    for case in ("basic profile", "clean options"):
        settings = _settings(case)
        outputs = [_deidentified(p.read_bytes(), settings) for p in files]
        written = [out for out in outputs if out is not None]
        assert len(written) == len(files)
        assert all(_same(out) for out in written)  # implicit VR, as these TPS exports are


def test_files_as_read_are_written_as_pydicom_writes_them() -> None:
    """Untouched datasets: every element still raw, every transfer syntax and odd file."""
    fast = 0
    for path in BUNDLED:
        try:
            ds = dcmread(path)
        except Exception:
            continue
        fast += _same(ds)
    print(f"as read: {fast} by the fast path")
    assert fast > 40


def _corrupted(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    start = 132 if data[128:132] == b"DICM" else 0
    end = min(len(data), 6000)  # the header, not the pixels
    for _ in range(rng.randint(1, 6)):
        mutated[rng.randrange(start, end)] = rng.choice([0, 0xFF, 0x20, 0x5C, rng.randrange(256)])
    return bytes(mutated)


def test_corrupted_files_are_written_as_pydicom_writes_them(tmp_path: Path) -> None:
    """Bytes flipped anywhere in the header (tags, VRs, lengths, values, the file meta) of a
    CT slice, an RTSTRUCT, RTPLAN and RTDOSE: as read, and as de-identified."""
    rng = random.Random(20261202)
    settings = _settings("clean options")
    seeds = [d for d in _study(tmp_path / "s") if b"DICM" in d[:132]]
    read = deidentified = 0
    for i in range(1000):
        data = _corrupted(seeds[i % len(seeds)], rng)
        try:
            ds = dcmread(io.BytesIO(data))
            ds.get("PatientName")  # reading may fail only now: then there is nothing to write
        except Exception:
            continue
        try:
            _same(ds)
        except AssertionError as exc:
            raise AssertionError(f"mutation {i}: {exc}") from None
        read += 1
        if i % 4 == 0:
            out = _deidentified(data, settings)
            if out is not None:
                _same(out)
                deidentified += 1
    assert read > 500 and deidentified > 100, (read, deidentified)


def test_values_the_memo_must_not_confuse_are_written_apart() -> None:
    """Equal-comparing values that are written differently (0.0 and -0.0 as a float, 1 and
    True, '1.50' and '1.5' as a decimal string) each come out as pydicom writes them, in the
    same process one after the other (the writer remembers what it wrote)."""
    cases: list[tuple[int, str, list[Any]]] = [
        (0x00189087, "FD", [0.0, -0.0, 0.0]),  # DiffusionBValue
        (0x00280010, "US", [1, True, 1]),  # Rows
        (0x00180050, "DS", ["1.50", "1.5", "1.50"]),  # SliceThickness
        (0x00100010, "PN", ["Doe^J", "Doe^J "]),  # PatientName
    ]
    for tag, vr, values in cases:
        written = [_write_one(tag, vr, v) for v in values]
        assert written[0] == written[-1]
        if vr == "US":
            assert written[0] == written[1]  # True is written as 1, as pydicom does
        elif vr != "PN":
            assert written[0] != written[1]


def _write_one(tag: int, vr: str, value: Any) -> bytes:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path)
    ds.add_new(tag, vr, value)
    ours, theirs = _ours(copy.deepcopy(ds)), _pydicom(copy.deepcopy(ds))
    assert ours == theirs
    assert isinstance(ours, bytes)
    return ours


def _ct_bytes(syntax: str = "1.2.840.10008.1.2.1") -> bytes:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _pixel_data_at(data: bytes) -> int:
    at = data.index(b"\xe0\x7f\x10\x00")
    return at


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_odd_length_pixel_data_is_padded_as_pydicom_pads_it(syntax: str) -> None:
    """pydicom's writer takes the Pixel Data element as a value (not its bytes as read), and
    pads an odd length to an even one: a file whose pixel data has an odd length."""
    data = _ct_bytes(syntax)
    at = _pixel_data_at(data)
    length_at = at + (8 if syntax.endswith(".1") else 4)
    (length,) = struct.unpack("<I", data[length_at : length_at + 4])
    end = length_at + 4 + length
    shorter = struct.pack("<I", length - 1)
    odd = data[:length_at] + shorter + data[length_at + 4 : end - 1] + data[end:]
    ds = dcmread(io.BytesIO(odd))
    assert len(ds.get_item(0x7FE00010).value) % 2 == 1
    assert _same(ds)  # and by the fast path
    out = _deidentified(odd, _settings("clean options"))
    assert out is not None
    assert _same(out)


def test_pixel_data_read_as_un_is_written_with_its_own_vr() -> None:
    """Pixel Data whose explicit VR is UN (as some archives write it): pydicom writes it with
    the VR its dictionary gives (OW here), not as read."""
    data = _ct_bytes()
    at = _pixel_data_at(data)
    assert data[at + 4 : at + 6] == b"OW"
    un = data[: at + 4] + b"UN" + data[at + 6 :]
    assert _same(dcmread(io.BytesIO(un)))
    out = _deidentified(un, _settings("basic profile"))
    assert out is not None
    assert _same(out)


@pytest.mark.parametrize("value", [b"", b"\x00\x00\x00\x00\x07\x00\x00\x00"])
def test_a_group_length_of_another_size_is_written_as_pydicom_writes_it(value: bytes) -> None:
    """A file meta group length (UL) that is not one 4-byte value (empty, or two values):
    pydicom writes it as it is and then overwrites its first 12 bytes; ours must not differ."""
    data = _ct_bytes()
    at = data.index(b"\x02\x00\x00\x00UL\x04\x00", 128)
    (length,) = struct.unpack("<I", data[at + 8 : at + 12])
    head = b"\x02\x00\x00\x00UL" + struct.pack("<H", len(value))
    if value:
        value = struct.pack("<I", length + len(value) - 4) + value[4:]
    odd = data[:at] + head + value + data[at + 12 :]
    _same(dcmread(io.BytesIO(odd)))  # pydicom's path (the result is its to answer for)
    out = _deidentified(odd, _settings("clean options"))
    assert out is not None
    _same(out)
