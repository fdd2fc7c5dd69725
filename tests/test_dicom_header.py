"""The fast header walk gives exactly what pydicom gives, on every file pydicom ships and on our
sample RT study, and leaves to pydicom what it cannot read with certainty."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from identifiable_node.ingest import _FAST_WANTED, fast_header, read_header
from uploader.dicom_header import scan
from uploader.errors import NotDicomError
from uploader.sample import write_study


def _pydicom_header(data: bytes) -> object:
    # read_header on a Path takes the pydicom route
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        return read_header(Path(f.name))


def test_fast_header_equals_pydicom_on_every_bundled_file() -> None:
    fast = slow = 0
    for name in get_testdata_files():
        if not Path(name).is_file():
            continue
        data = Path(name).read_bytes()
        header = fast_header(data)
        try:
            expected = _pydicom_header(data)
        except NotDicomError:
            expected = None
        if header is None:
            slow += 1
            continue
        fast += 1
        assert header == expected, name
    assert fast > 100 and slow > 10, (fast, slow)  # both routes exercised


def test_fast_header_on_the_sample_rt_study(tmp_path: Path) -> None:
    write_study(tmp_path / "s", slices=3, size=32)
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.suffix != ".txt"]
    assert len(files) >= 6
    for path in files:
        data = path.read_bytes()
        header = fast_header(data)
        assert header is not None, path.name  # CT and RT objects take the fast route
        assert header == _pydicom_header(data)
        assert header.patient_id and header.study_uid and header.modality


def test_unsupported_encodings_and_damage_fall_back(tmp_path: Path) -> None:
    big_endian = next(f for f in get_testdata_files() if "ExplVR_BigEnd" in f)
    assert scan(Path(big_endian).read_bytes(), _FAST_WANTED) is None
    deflated = next(f for f in get_testdata_files() if "image_dfl" in f)
    assert scan(Path(deflated).read_bytes(), _FAST_WANTED) is None
    ct = Path(next(f for f in get_testdata_files() if f.endswith("CT_small.dcm"))).read_bytes()
    assert scan(ct[:128] + b"XXXX" + ct[132:], _FAST_WANTED) is None  # no DICM
    # cut inside the header: the walk refuses rather than guess
    assert scan(ct[:400], _FAST_WANTED) is None
    with pytest.raises(NotDicomError):
        read_header(b"not dicom at all" * 20)


def test_non_ascii_patient_id_goes_to_pydicom(tmp_path: Path) -> None:
    ds = dcmread(next(f for f in get_testdata_files() if f.endswith("CT_small.dcm")))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID = "MÜLLER1"
    ds.save_as(tmp_path / "x.dcm")
    data = (tmp_path / "x.dcm").read_bytes()
    assert fast_header(data) is None
    assert read_header(data).patient_id == "MÜLLER1"
    assert replace(read_header(data), patient_id="") == replace(
        read_header(tmp_path / "x.dcm"), patient_id=""
    )
