"""The pre-pass's raw walk (``identifiers.collect_file``) gathers exactly what ``collect`` gathers
from pydicom's reading, on every file pydicom ships, on the sample RT study, and on encodings
built to test the walk's structure (implicit VR, sequences of defined and undefined length,
private and UN sequences, names deep down); anything it is unsure of goes to pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from uploader.deid.batch import file_identifiers
from uploader.deid.identifiers import Identifiers, collect, collect_file
from uploader.dicomfile import read_dicom
from uploader.sample import write_study

KEPT = frozenset({0x00080080})  # Retain Institution Identity keeps InstitutionName


def _by_pydicom(path: Path, kept: frozenset[int]) -> tuple[str, Identifiers] | None:
    try:
        ds = read_dicom(path, stop_before_pixels=True)
        return str(ds.get("StudyInstanceUID", "") or ""), collect(ds, kept=kept)
    except Exception:
        return None


def test_equal_to_pydicom_on_every_bundled_file() -> None:
    fast = slow = 0
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        for kept in (frozenset(), KEPT):
            got = collect_file(path.read_bytes(), kept)
            if got is None:
                slow += 1
                continue
            fast += 1
            assert got == _by_pydicom(path, kept), name
    assert fast > 150 and slow > 10, (fast, slow)  # both routes exercised


def test_equal_on_the_sample_rt_study(tmp_path: Path) -> None:
    write_study(tmp_path / "s", slices=3, size=32)
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.suffix != ".txt"]
    assert len(files) >= 6
    for path in files:
        got = collect_file(path.read_bytes())
        assert got is not None, path.name  # our own CT and RT objects take the fast route
        assert got == _by_pydicom(path, frozenset())
        assert got[1].names  # the patient's and staff names were found


def _nested(depth: int, name: str) -> Dataset:
    item = Dataset()
    item.OperatorsName = name
    item.ContentDate = "20240315"
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([item])
        item = outer
    return item


def _file(ds: Dataset, syntax: str, *, defined_lengths: bool = False) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3.9"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if defined_lengths:  # re-encode every sequence and item with its length (as some PACS do)
        back = dcmread(io.BytesIO(data))
        for elem in back.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = False
                for it in elem.value:
                    it.is_undefined_length_sequence_item = False
        buf = io.BytesIO()
        back.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
    return data


def _hostile_study() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Quill^Zora"
    ds.PatientID = "MRN0042424"
    ds.InstitutionName = "St Elsewhere"
    ds.StationName = "LINAC-TB3"
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = "20240315101500"
    ds.add(_nested(20, "Okafor^Nia")[0x00081115])
    private = Dataset()
    private.OperatorsName = "Hidden^Private"
    ds.add_new(0x00190010, "LO", "ACME")
    ds.add_new(0x00191001, "SQ", Sequence([private]))
    geometry = Dataset()
    geometry.ContourData = [1.0, 2.0, 3.0]
    ds.add_new(0x30060040, "SQ", Sequence([geometry]))
    return ds


def test_equal_on_built_encodings(tmp_path: Path) -> None:
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        for defined in (False, True):
            data = _file(_hostile_study(), syntax, defined_lengths=defined)
            path = tmp_path / "x.dcm"
            path.write_bytes(data)
            for kept in (frozenset(), KEPT):
                got = collect_file(data, kept)
                assert got is not None, (syntax, defined)
                assert got == _by_pydicom(path, kept), (syntax, defined)
                assert "Okafor" in got[1].names  # 20 sequences down
                assert "Hidden" not in got[1].names  # private: judged by the engine, not here


def test_character_sets(tmp_path: Path) -> None:
    path = tmp_path / "m.dcm"
    for charset, name in (("ISO_IR 100", "Müller^Jörg"), ("ISO_IR 192", "Łukasz^Żółć")):
        ds = _hostile_study()
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        data = _file(ds, ExplicitVRLittleEndian)
        path.write_bytes(data)
        got = collect_file(data)
        assert got is not None and got == _by_pydicom(path, frozenset()), charset
        assert name.split("^")[0] in got[1].names
    # escapes (ISO 2022), and an item with a character set of its own: pydicom decides
    ds = _hostile_study()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    assert collect_file(_file(ds, ExplicitVRLittleEndian)) is None
    ds = _hostile_study()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ReferencedSeriesSequence[0].SpecificCharacterSet = "ISO_IR 192"
    ds.ReferencedSeriesSequence[0].OperatorsName = "Müller"
    data = _file(ds, ExplicitVRLittleEndian)
    assert collect_file(data) is None
    path.write_bytes(data)
    study, found = file_identifiers(path, frozenset())
    assert study == "1.2.3.9" and found is not None and "Müller" in found.names


def test_damage_and_other_files_never_raise(tmp_path: Path) -> None:
    data = _file(_hostile_study(), ExplicitVRLittleEndian)
    # damage: cut inside the header, or no DICM prefix
    assert collect_file(data[:300]) is None
    assert collect_file(data[:128] + b"XXXX" + data[132:]) is None
    # an empty file and a non-DICOM one: the pre-pass says nothing, never raises
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_bytes(b"hello " * 100)
    assert file_identifiers(tmp_path / "empty", frozenset()) == ("", None)
    assert file_identifiers(tmp_path / "text", frozenset()) == ("", None)


def test_bundled_files_pydicom_cannot_read_are_not_guessed() -> None:
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        try:
            read_dicom(path, stop_before_pixels=True)
        except Exception:  # whatever pydicom refuses
            assert collect_file(path.read_bytes()) is None, name


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the damaged values
def test_mutated_files_never_raise(tmp_path: Path) -> None:
    import random

    write_study(tmp_path / "s", slices=1, size=16)
    seeds = [p.read_bytes() for p in (tmp_path / "s").rglob("*.dcm")]
    seeds.append(_file(_hostile_study(), ImplicitVRLittleEndian, defined_lengths=True))
    rng = random.Random(20261202)
    for _ in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(132, len(data))
            if rng.random() < 0.2:
                del data[at : at + rng.randint(1, 64)]
            else:
                data[at] = rng.randrange(256)
        got = collect_file(bytes(data))  # a result or None, never an exception
        if got is not None:  # and when it answers, pydicom reads the same
            path = tmp_path / "m.dcm"
            path.write_bytes(data)
            assert got == _by_pydicom(path, frozenset())
