"""`uploader anonymise` and `uploader verify` on a generated RT study, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import dcmread

from .conftest import EXAMPLE_PROTOCOL, run_cli

# Every identifier the sample plants, in the spellings that must never reach the output.
PLANTED = [
    "MÜLLER",
    "MULLER",
    "MUELLER",
    "Müller",
    "JÖRG",
    "JORG",
    "Jörg",
    "HEINRICH",
    "9434765919",
    "943 476 5919",
    "MRN0012345",
    "ACC7781234",
    "19620314",
    "14/03/1962",
    "Acacia",
    "GU1 4XX",
    "01483 555123",
    "HOUSE^GREGORY",
    "SMITH^ANNA",
    "Royal Example Hospital",
    "Downs Road",
    "CTSIM01",
    "SN-5512",
    "1.2.826.0.1.3680043.9.7133",  # the original UID root (with the birth date inside)
]

pytestmark = pytest.mark.integration  # every test runs the `uploader` command


def _anonymise(study: Path, out: Path, key: Path, *extra: str) -> dict:
    result = run_cli("anonymise", study, out, "--key-file", key, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_output_carries_none_of_the_planted_identifiers(
    study: Path, tmp_path: Path, key_file: Path
) -> None:
    out = tmp_path / "out"
    summary = _anonymise(study, out, key_file, "--protocol", EXAMPLE_PROTOCOL, "--site", "RXH")
    assert summary["written"] == 11
    assert summary["failed"] == [] and summary["withheld"] == []
    assert [e["file"] for e in summary["not_dicom"]] == ["MÜLLER_9434765919/README.txt"]
    files = _outputs(out)
    assert len(files) == 11
    for path in files:
        data = path.read_bytes()
        rel = str(path.relative_to(out))
        for phi in PLANTED:
            for encoding in ("latin-1", "utf-8"):
                needle = phi.encode(encoding, errors="ignore")
                assert needle.lower() not in data.lower(), f"{phi!r} in {rel}"
            assert phi.lower() not in rel.lower(), f"{phi!r} in the output path {rel}"


def test_default_run_without_protocol_removes_descriptions_and_privates(
    study: Path, tmp_path: Path, key_file: Path
) -> None:
    out = tmp_path / "out"
    _anonymise(study, out, key_file)
    for path in _outputs(out):
        ds = dcmread(path)
        assert "StudyDescription" not in ds and "SeriesDescription" not in ds
        assert not [e for e in ds if e.tag.is_private]
        assert not [e for e in ds if e.tag.group in range(0x5000, 0x5020)]  # curves
        assert not [e for e in ds if e.tag.group in range(0x6000, 0x6020)]  # overlays
        assert ds.PatientSex == "M" and ds.PatientAge == "062Y"  # Retain Patient Characteristics
        assert ds.PatientBirthDate == ""


def test_verify_passes_on_output_and_fails_loudly_on_input(
    study: Path, tmp_path: Path, key_file: Path
) -> None:
    out = tmp_path / "out"
    _anonymise(study, out, key_file, "--protocol", EXAMPLE_PROTOCOL, "--site", "RXH")
    ok = run_cli("verify", out, "--protocol", EXAMPLE_PROTOCOL)
    assert ok.returncode == 0, ok.stdout
    assert "11 passed, 0 failed" in ok.stdout
    bad = run_cli("verify", study, "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["passed"] == 0
    ct = next(f for f in report["files"] if f["file"].endswith("IM0001"))
    text = "\n".join(ct["problems"])
    for expected in (
        "PatientIdentityRemoved",
        "private tag",
        "UID not remapped",
        "curve or overlay",
        "PatientBirthDate",
        "OperatorsName",
    ):
        assert expected in text
    # the report names attributes, never the values they hold
    all_problems = json.dumps([f["problems"] for f in report["files"]])
    assert "LLER" not in all_problems and "9434765919" not in all_problems


def test_refuses_to_run_without_a_key_and_never_overwrites_one(study: Path, tmp_path: Path) -> None:
    result = run_cli("anonymise", study, tmp_path / "out")
    assert result.returncode == 2
    assert "no site key" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    key = tmp_path / "new.key"
    first = run_cli("anonymise", study, tmp_path / "out", "--generate-key", key, "--json")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    again = run_cli("anonymise", study, tmp_path / "out2", "--generate-key", key)
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_bad_input_gets_a_one_line_reason_not_a_traceback(tmp_path: Path, key_file: Path) -> None:
    missing = run_cli("anonymise", tmp_path / "nope", tmp_path / "out", "--key-file", key_file)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    broken = tmp_path / "in"
    broken.mkdir()
    (broken / "truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x20")
    result = run_cli("anonymise", broken, tmp_path / "out", "--key-file", key_file)
    assert "Traceback" not in result.stderr
    assert "truncated.dcm" in result.stdout
    bad_protocol = tmp_path / "p.yaml"
    bad_protocol.write_text("id: X\ndeidentify:\n  options: [retain_everything]\n")
    result = run_cli(
        "anonymise", broken, tmp_path / "o2", "--key-file", key_file, "--protocol", bad_protocol
    )
    assert result.returncode == 2
    assert str(bad_protocol) in result.stderr and "deidentify.options.0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_mapping_files_link_originals_to_pseudonyms(
    study: Path, tmp_path: Path, key_file: Path
) -> None:
    out, links = tmp_path / "out", tmp_path / "links"
    summary = _anonymise(study, out, key_file, "--mapping-dir", links)
    patients = (links / "patid_mapping.csv").read_text().splitlines()
    subject = next(iter(summary["subjects"]))
    assert patients == ["id_old,id_new", f"9434765919,{subject}"]
    uids = dict(
        line.split(",") for line in (links / "uid_mapping.csv").read_text().splitlines()[1:]
    )
    ct = dcmread(next(p for p in _outputs(out) if "/CT_" in str(p)))
    original = "1.2.826.0.1.3680043.9.7133.19620314.1.1"
    assert uids[original] == ct.StudyInstanceUID
    assert all(new.startswith("2.25.") for new in uids.values())


def test_pixel_data_round_trips_unchanged(study: Path, tmp_path: Path, key_file: Path) -> None:
    out = tmp_path / "out"
    _anonymise(study, out, key_file)
    originals = {dcmread(p).InstanceNumber: dcmread(p).PixelData for p in (study.rglob("IM*"))}
    outputs = [dcmread(p) for p in _outputs(out) if "/CT_" in str(p)]
    assert len(outputs) == len(originals) == 8
    for ds in outputs:
        assert ds.PixelData == originals[ds.InstanceNumber]
    dose_in = dcmread(next(study.rglob("RD.dcm")))
    dose_out = dcmread(next(p for p in _outputs(out) if "/RTDOSE_" in str(p)))
    assert dose_out.PixelData == dose_in.PixelData
    assert (
        dose_out.file_meta.TransferSyntaxUID == dose_in.file_meta.TransferSyntaxUID
    )  # implicit VR


@pytest.mark.parametrize("name", ["latin1", "utf8"])
def test_names_in_other_character_sets_are_found(name: str, tmp_path: Path, key_file: Path) -> None:
    from uploader.sample import Patient, write_study

    patient = Patient(name="ÅSTRÖM^BJØRN", spoken_name="Bjørn Åström", tag="7")
    write_study(tmp_path / "in", slices=2, patient=patient)
    if name == "utf8":
        for path in (tmp_path / "in").rglob("*.dcm"):
            ds = dcmread(path)
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.save_as(path)
    out = tmp_path / "out"
    _anonymise(tmp_path / "in", out, key_file, "--protocol", EXAMPLE_PROTOCOL, "--site", "X")
    for path in _outputs(out):
        data = dcmread(path)
        text = str([str(e.value) for e in data.iterall() if e.VR in ("LO", "LT", "PN", "SH", "ST")])
        for part in ("ÅSTRÖM", "ASTROM", "BJØRN", "Bjørn", "Åström"):
            assert part.lower() not in text.lower()
