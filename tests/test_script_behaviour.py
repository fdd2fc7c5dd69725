"""Scripts on real files: every function, the two XNAT tutorial scripts, and safety (a script
cannot put an identifier back: the verifier still runs after it)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from uploader.deid.engine import Settings, deidentify
from uploader.deid.profile import Option, Profile, load_table
from uploader.deid.script.stage import ScriptStage, build_stage
from uploader.errors import VerificationError, WithheldError
from uploader.sample import Patient, write_study

from .conftest import run_cli

SITE_TUTORIAL = """\
- (0010,0030) //Remove Patient Birth Date
- (0010,1000) //Remove Other Patient IDs
- (0010,1001) //Remove Other Patient Names
- (0010,1005) //Remove Patient Birth Name
- (0010,1040) //Remove Patient Address
(0012,0063) := "My XNAT sitewide anon script v01"
(0020,000D) := hashUID[(0020,000D)]     // Study Instance UID
"""
PROJECT_TUTORIAL = """\
(0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
session := makeSessionLabel[format["{0}_v##_{1}", subject, lowercase[modalityLabel]]]
"""


@pytest.fixture
def ct(tmp_path: Path) -> Dataset:
    files = write_study(tmp_path / "in", slices=2)
    return dcmread(files[0])


def _with(settings: Settings, script: str, **kw: object) -> Settings:
    stage = build_stage(
        None, script, None, dict(kw.get("variables", {})), dict(kw.get("lookups", {}))
    )  # type: ignore[arg-type]
    assert stage is not None
    private = settings.private.with_keys(stage.private_keys())
    return dataclasses.replace(settings, scripts=stage, private=private)


def _run(ds: Dataset, settings: Settings, script: str, **kw: object) -> Dataset:
    return deidentify(copy.deepcopy(ds), _with(settings, script, **kw)).dataset


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('concatenate["CT-", (0020,0011), "-", modalityLabel]', "CT-2-CT"),
        ('format["{1}/{0}", "a", "b"]', "b/a"),
        ('lowercase["MiXeD"]', "mixed"),
        ("uppercase[modalityLabel]", "CT"),
        ('substring["20241105", 0, 4]', "2024"),
        ('substring["ABCDEF", 2]', "CDEF"),
        ('replace["a b c", " ", "_"]', "a_b_c"),
        ('match["T1_MPRAGE", "(T[12])_(.*)", 2]', "MPRAGE"),
        ('match["nothing", "(T[12]).*", 1]', ""),
        ('shiftDateByIncrement["20240301", "-1"]', "20240229"),
        ('shiftDateTimeByIncrement["20241231233000", "3600"]', "20250101003000"),
        ('lookup["arms", "A"]', "Arm A: control"),
        ("arm", "A"),
    ],
)
def test_value_functions(ct: Dataset, settings: Settings, expr: str, expected: str) -> None:
    # a date written into free text is refused by the verifier (a date pattern): dates go to
    # date attributes (InstanceCreationDate DA, AcquisitionDateTime DT), the rest to Manufacturer
    tag = 0x00080070
    if expr.startswith("shiftDate"):
        tag = 0x0008002A if "DateTime" in expr else 0x00080012
    out = _run(
        ct,
        settings,
        f"({tag >> 16:04X},{tag & 0xFFFF:04X}) := {expr}",
        variables={"arm": "A"},
        lookups={"arms": {"A": "Arm A: control"}},
    )
    assert str(out[tag].value) == expected


def test_tests_and_conditionals(ct: Dataset, settings: Settings) -> None:
    script = """\
ismatch[(0008,0060), "C."] ? (0008,0070) := "matched" : (0008,0070) := "no"
isPresent[(0018,9999)] ? (0018,1030) := "yes" : (0018,1030) := "absent"
(0008,0060) = "CT" ? (0018,0015) := "EQ"
(0008,0060) != "CT" ? (0018,0015) := "NE"
(0008,0060) ~ "[A-Z]{2}" ? (0008,1090) := "RE"
(0008,0060) !~ "MR" ? (0018,1000) := "NOTMR"
"""
    out = _run(ct, settings, script)
    assert (out.Manufacturer, out.ProtocolName, out.BodyPartExamined) == ("matched", "absent", "EQ")
    assert out.ManufacturerModelName == "RE" and out.DeviceSerialNumber == "NOTMR"


def test_hash_uid_agrees_with_the_profile_so_references_hold(
    ct: Dataset, settings: Settings
) -> None:
    plain = deidentify(copy.deepcopy(ct), settings).dataset
    scripted = _run(ct, settings, SITE_TUTORIAL)
    assert scripted.StudyInstanceUID == plain.StudyInstanceUID
    assert scripted.DeidentificationMethod == "My XNAT sitewide anon script v01"


def test_new_uid_and_map_referenced_uids(ct: Dataset, settings: Settings) -> None:
    out = _run(ct, settings, "(0008,0014) := newUID[]")
    assert out.InstanceCreatorUID.startswith("2.25.")
    keep_uids = dataclasses.replace(
        settings, profile=Profile(load_table(), frozenset({Option.RETAIN_UIDS}))
    )
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7133.777.5"
    ct.ReferencedImageSequence = [item]
    kept = _run(ct, keep_uids, "-(0008,0014)")
    assert (
        kept.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        == "1.2.826.0.1.3680043.9.7133.777.5"
    )
    mapped = _run(ct, keep_uids, "mapReferencedUIDs[+/(0008,1155)]")
    assert mapped.ReferencedImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")


def test_private_tags_retain_and_remove(ct: Dataset, settings: Settings) -> None:
    kept = _run(ct, settings, "retainPrivateTags[(7053,{Philips PET Private Group}00)]")
    assert kept[0x70531000].value == "0.00123" and 0x70531009 not in kept
    allow_all = _with(settings, "retainPrivateTags[(7053,{Philips PET Private Group}00)]")
    stage = build_stage(None, "removeAllPrivateTags", None, {}, {})
    assert stage is not None
    gone = deidentify(copy.deepcopy(ct), dataclasses.replace(allow_all, scripts=stage)).dataset
    assert not [e for e in gone if e.tag.is_private]


def test_deletes_by_path_wildcard_and_anywhere(ct: Dataset, protocol_settings: Settings) -> None:
    out = _run(ct, protocol_settings, "-+/(0040,1002)\n-(0010,10XX)\n-(0040,0275)[0]/(0040,1002)")
    assert "ReasonForTheRequestedProcedure" not in out.RequestAttributesSequence[0]
    assert "PatientAge" not in out and "PatientWeight" not in out  # (0010,1010) and (0010,1030)


def test_reject_withholds_with_the_scripts_reason(ct: Dataset, settings: Settings) -> None:
    with pytest.raises(WithheldError) as info:
        _run(ct, settings, '(0008,0060) = "CT" ? reject["no CT for this trial"]')
    assert info.value.code == "script" and "no CT for this trial" in info.value.reason


def test_a_script_copying_an_identifier_back_is_withheld(ct: Dataset, settings: Settings) -> None:
    with pytest.raises(VerificationError) as info:
        _run(ct, settings, "(0010,0010) := (0010,0020)")  # the MRN, read from the input
    assert any(p.startswith("(0010,0010) PatientName: ID") for p in info.value.problems)
    with pytest.raises(VerificationError):
        _run(ct, settings, '(0008,103E) := concatenate["for ", (0010,0010)]')


def test_make_session_label_numbers_visits_per_subject(tmp_path: Path, settings: Settings) -> None:
    stage = build_stage(None, PROJECT_TUTORIAL, None, {}, {})
    assert isinstance(stage, ScriptStage)
    run = dataclasses.replace(settings, scripts=stage)
    first = write_study(tmp_path / "a", slices=1, rt=())
    second = write_study(
        tmp_path / "b", slices=1, rt=(), patient=Patient(tag="2")
    )  # same patient, new study
    sessions = [deidentify(dcmread(f[0]), run).session for f in (first, second, first)]
    subject = deidentify(dcmread(first[0]), run).subject
    assert sessions == [f"{subject}_v01_ct", f"{subject}_v02_ct", f"{subject}_v01_ct"]


@pytest.mark.integration
def test_tutorial_scripts_through_the_cli(tmp_path: Path, key_file: Path) -> None:
    study = tmp_path / "in"
    write_study(study, slices=3)
    site = tmp_path / "site.das"
    site.write_text(SITE_TUTORIAL)
    protocol = tmp_path / "p.yaml"
    body = "\n".join("    " + line for line in PROJECT_TUTORIAL.splitlines())
    protocol.write_text(
        "id: XNATDEMO\ndeidentify:\n"
        "  options: [retain_patient_characteristics, clean_descriptors]\n"
        f"  script: |\n{body}\n"
    )
    check = run_cli("script", "check", site)
    assert check.returncode == 0 and check.stdout.count("warning:") == 5
    links = tmp_path / "links"
    result = run_cli(
        "anonymise",
        study,
        tmp_path / "out",
        "--key-file",
        key_file,
        "--protocol",
        protocol,
        "--site",
        "RXH",
        "--site-script",
        site,
        "--mapping-dir",
        links,
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    ((subject, sessions),) = summary["subjects"].items()
    assert sessions == [f"{subject}_v01_ct"]  # the RTSTRUCT, RTPLAN and RTDOSE join the CT session
    files = [dcmread(p) for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(files) == 6
    for ds in files:
        assert ds.StudyDescription == "XNATDEMO" and ds.PatientName == subject
        assert ds.DeidentificationMethod == "My XNAT sitewide anon script v01"
        assert ds.PatientComments == f"Project:XNATDEMO Subject:{subject} Session:{subject}_v01_ct"
    assert len({ds.StudyInstanceUID for ds in files}) == 1
    rows = (links / "session_numbers.csv").read_text().splitlines()
    assert rows[0] == "subject,template,study,number"
    assert f"{subject}_v##_ct,2.25." in rows[1]
    assert rows[1].startswith(subject) and rows[1].endswith(",1") and len(rows) == 2


@pytest.mark.integration
def test_protocol_check_reports_script_errors_at_their_yaml_line(tmp_path: Path) -> None:
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "id: X\ndeidentify:\n  script: |\n    -(0010,0030)\n    (0008,1030) := nope[]\n"
    )
    result = run_cli("protocol", "check", protocol)
    assert result.returncode == 1
    assert f"{protocol}:5: deidentify.script:2:16: unknown function 'nope'" in result.stdout


@pytest.mark.integration
def test_script_check_cli_points_a_caret_at_each_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.das"
    bad.write_text(
        '(0008,1030) := concatinate["a"]\n- (0010,0030)\n(0008,103E) := lowercase["a", "b"]\n'
    )
    result = run_cli("script", "check", bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    first = lines.index(f"{bad}:1:16: unknown function 'concatinate'; did you mean 'concatenate'?")
    assert lines[first + 1] == '    (0008,1030) := concatinate["a"]'
    assert lines[first + 2] == "    " + " " * 15 + "^"
    assert (
        f"{bad}:2:1: warning: (0010,0030) Patient's Birth Date: the profile already removes it (Z)"
        in lines
    )
    assert f"{bad}:3:16: lowercase takes 1 argument(s), not 2" in lines


@pytest.mark.integration
def test_script_preview_shows_the_header_before_and_after(tmp_path: Path, key_file: Path) -> None:
    files = write_study(tmp_path / "in", slices=1, rt=())
    script = tmp_path / "s.das"
    script.write_text('(0008,1030) := "Trial CT"\n(0008,0070) := "X"\n')
    result = run_cli("script", "preview", script, files[0], "--key-file", key_file)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "~ (0008,1030) StudyDescription: RT planning Jörg Mueller -> Trial CT" in out
    assert "~ (0008,0070) Manufacturer: ACME -> X" in out
    assert '~ (0010,0030) PatientBirthDate: 19620314 -> ""' in out
    assert "+ (0012,0062) PatientIdentityRemoved: YES" in out
    copying = tmp_path / "copy.das"
    copying.write_text("(0010,0010) := (0010,0020)\n")
    withheld = run_cli("script", "preview", copying, files[0])
    assert withheld.returncode == 1 and "WOULD BE WITHHELD" in withheld.stdout
    assert "(0010,0010) PatientName: ID" in withheld.stdout
