"""Trial protocols against generated CT + RTSTRUCT studies: studies that pass, and studies that
fail in each way a protocol checks; the `uploader protocol` commands; relabelling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from uploader.protocols.loader import load_protocol
from uploader.protocols.study import load_study
from uploader.protocols.validate import Report, validate_study
from uploader.sample import write_study

from .conftest import ROOT, run_cli

PROTOCOLS = ROOT / "protocols"
PROSTATE = PROTOCOLS / "example-prostate.yaml"
GOOD_ROIS = {
    "example-prostate.yaml": ["prostate", "Rectum", "BLADDER", "PTV_3625", "Femur_Head_L"],
    "example-lung-sbrt.yaml": [
        "GTV",
        "PTV",
        "Left Lung",
        "Lung_R",
        "Spinal Cord",
        "Heart",
        "Oesophagus",
    ],
    "example-head-neck-imrt.yaml": [
        "PTV65",
        "PTV_5400",
        "Lt Parotid",
        "Parotid_R",
        "SpinalCord",
        "Brainstem",
        "SpinalCord_PRV05",
    ],
}


def _validate(protocol: Path, study: Path) -> Report:
    return validate_study(load_protocol(protocol), load_study(study))


def _status(report: Report, check: str) -> str:
    found = [c.status for c in report.checks if c.check == check]
    assert found, f"no check {check!r} in {[c.check for c in report.checks]}"
    return found[0]


def _study(tmp_path: Path, **kwargs: Any) -> Path:
    root = tmp_path / "study"
    kwargs.setdefault("rois", GOOD_ROIS["example-prostate.yaml"])
    write_study(root, slices=4, **kwargs)
    return root


@pytest.mark.integration
def test_example_protocols_pass_protocol_check() -> None:
    files = sorted(PROTOCOLS.glob("*.yaml"))
    assert len(files) >= 3
    result = run_cli("protocol", "check", *files)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count(": ok (") == len(files)
    assert "warning" not in result.stdout  # every structure name in the examples is TG-263


@pytest.mark.parametrize("name", sorted(GOOD_ROIS))
def test_a_good_study_passes_each_example_protocol(tmp_path: Path, name: str) -> None:
    study = _study(tmp_path, rois=GOOD_ROIS[name], slice_thickness=2.0)
    report = _validate(PROTOCOLS / name, study)
    assert report.passed, [c for c in report.checks if c.status == "fail"]
    assert all(v in {*GOOD_ROIS[name], *report.relabel.values()} for v in report.relabel.values())


def test_synonyms_are_relabelled_and_do_not_fail(tmp_path: Path) -> None:
    report = _validate(PROSTATE, _study(tmp_path))
    assert report.relabel == {"prostate": "Prostate", "BLADDER": "Bladder"}
    assert _status(report, "roi:prostate") == "pass"
    assert _status(report, "structure:Prostate") == "pass"
    assert _status(report, "roi:Femur_Head_L") == "pass"


def test_missing_and_forbidden_modalities_fail(tmp_path: Path) -> None:
    report = _validate(PROSTATE, _study(tmp_path, rt=()))
    assert _status(report, "modality:RTSTRUCT") == "fail"
    assert not report.passed
    study = _study(tmp_path / "2")
    first = sorted(study.rglob("IM*"))[0]
    ds = dcmread(first)
    ds.Modality = "US"
    ds.save_as(first)
    assert _status(_validate(PROSTATE, study), "modality:US") == "fail"


def test_a_name_outside_protocol_and_tg263_fails_with_suggestions(tmp_path: Path) -> None:
    rois = ["Prostate", "Rectm", "Bladder", "PTV", "Left Femoral Head"]
    report = _validate(PROSTATE, _study(tmp_path, rois=rois))
    rectm = next(c for c in report.checks if c.check == "roi:Rectm")
    assert rectm.status == "fail" and "'Rectum'" in rectm.message
    femur = next(c for c in report.checks if c.check == "roi:Left Femoral Head")
    assert femur.status == "fail" and "Femur_Head_L" in femur.message
    assert _status(report, "structure:Rectum") == "fail"  # so the required Rectum is missing


def test_missing_required_structure_empty_contour_and_forbidden_roi_fail(tmp_path: Path) -> None:
    rois = ["Prostate", "Rectum", "PTV_1", "BODY"]
    report = _validate(PROSTATE, _study(tmp_path, rois=rois, empty_rois=["Rectum"]))
    assert _status(report, "structure:Bladder") == "fail"
    rectum = next(c for c in report.checks if c.check == "structure:Rectum")
    assert rectum.status == "fail" and "no contour" in rectum.message
    assert _status(report, "roi:BODY") == "fail"


def test_broken_references_fail(tmp_path: Path) -> None:
    study = _study(tmp_path)
    sorted(study.rglob("IM*"))[0].unlink()  # a CT slice the RTSTRUCT contours on is missing
    report = _validate(PROSTATE, study)
    check = next(
        c for c in report.checks if c.check.startswith("reference:") and "RS.dcm" in c.check
    )
    assert check.status == "fail" and "1 of 4 images" in check.message
    no_struct = _study(tmp_path / "2", rt=("RTPLAN", "RTDOSE"))
    report = _validate(PROSTATE, no_struct)
    plan = next(
        c for c in report.checks if c.check.startswith("reference:") and "RP.dcm" in c.check
    )
    assert plan.status == "fail"
    no_plan = _study(tmp_path / "3", rt=("RTSTRUCT", "RTDOSE"))
    dose = next(c for c in _validate(PROSTATE, no_plan).checks if "RD.dcm" in c.check)
    assert dose.status == "fail"
    moved = _study(tmp_path / "4")
    rd = next(moved.rglob("RD.dcm"))
    ds = dcmread(rd)
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.save_as(rd)
    frame = next(c for c in _validate(PROSTATE, moved).checks if c.check.startswith("frame:"))
    assert frame.status == "fail"


def test_attribute_rules_and_series_counts(tmp_path: Path) -> None:
    report = _validate(PROSTATE, _study(tmp_path, slice_thickness=5))
    rule = next(c for c in report.checks if c.check == "rule:CT SliceThickness")
    assert rule.status == "fail" and "3 mm or thinner" in rule.message and "4 of 4" in rule.message
    study = _study(tmp_path / "2")
    first = sorted(study.rglob("IM*"))[0]
    ds = dcmread(first)
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".2"
    ds.save_as(first)
    assert _status(_validate(PROSTATE, study), "series:CT") == "fail"


@pytest.mark.integration
def test_validate_cli_json_and_exit_codes(tmp_path: Path) -> None:
    good = _study(tmp_path)
    result = run_cli("protocol", "validate", PROSTATE, good, "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["protocol"] == "PACE-C" and report["passed"] is True
    assert report["relabel"] == {"prostate": "Prostate", "BLADDER": "Bladder"}
    assert {c["status"] for c in report["checks"]} <= {"pass", "fail", "warn"}
    assert set(report["checks"][0]) == {"check", "status", "message"}
    bad = _study(tmp_path / "bad", rois=["Prostate"])
    table = run_cli("protocol", "validate", PROSTATE, bad)
    assert table.returncode == 1
    assert "FAIL  structure:Rectum" in table.stdout and "PACE-C: FAILED" in table.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    none = run_cli("protocol", "validate", PROSTATE, empty)
    assert (
        none.returncode == 2 and "no DICOM files" in none.stderr and "Traceback" not in none.stderr
    )
    missing = run_cli("protocol", "validate", tmp_path / "nope.yaml", good)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


@pytest.mark.integration
def test_rtstruct_without_rois_or_with_broken_sequences_fails_cleanly(tmp_path: Path) -> None:
    study = _study(tmp_path)
    rs = next(study.rglob("RS.dcm"))
    ds = dcmread(rs)
    ds.StructureSetROISequence = []
    ds.save_as(rs)
    report = _validate(PROSTATE, study)
    assert any(c.check.startswith("rtstruct:") and "no ROIs" in c.message for c in report.checks)
    ds.StructureSetROISequence = [dcmread(rs).ROIContourSequence[0]]  # wrong kind of item
    item = ds.ROIContourSequence[0]  # a ReferencedROINumber that is not a number, as read from disk
    item._dict[Tag(0x30060084)] = RawDataElement(Tag(0x30060084), "IS", 2, b"x ", 0, False, True)
    ds.save_as(rs)
    result = run_cli("protocol", "validate", PROSTATE, study, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert any(c["check"].startswith("rtstruct:") and c["status"] == "fail" for c in checks)


@pytest.mark.integration
def test_anonymise_applies_the_relabel_from_synonyms(tmp_path: Path, key_file: Path) -> None:
    study = _study(tmp_path)
    out = tmp_path / "out"
    result = run_cli(
        "anonymise",
        study,
        out,
        "--key-file",
        key_file,
        "--protocol",
        PROSTATE,
        "--site",
        "RXH",
        "--json",
    )
    assert result.returncode == 0, result.stdout
    rs = dcmread(next(p for p in out.rglob("*.dcm") if "/RTSTRUCT_" in str(p)))
    names = [r.ROIName for r in rs.StructureSetROISequence]
    assert names == ["Prostate", "Rectum", "Bladder", "PTV_3625", "Femur_Head_L"]


@pytest.mark.integration
def test_schema_command_prints_the_json_schema() -> None:
    result = run_cli("protocol", "schema")
    schema = json.loads(result.stdout)
    assert result.returncode == 0
    assert {"id", "modalities", "structures", "rules", "deidentify"} <= set(schema["properties"])
    assert "Structure" in schema["$defs"]


@pytest.mark.parametrize("name", sorted(GOOD_ROIS))
def test_each_example_protocol_fails_a_study_in_each_way(tmp_path: Path, name: str) -> None:
    protocol = load_protocol(PROTOCOLS / name)
    good = GOOD_ROIS[name]
    required = [s.name for s in protocol.structures.required if s.name]  # type: ignore[union-attr]
    first = next(r for r in good if protocol.synonym_map().get(r, r) == required[0])

    def fails(study: Path, prefix: str) -> None:
        report = validate_study(protocol, load_study(study))
        failed = [c.check for c in report.checks if c.status == "fail"]
        assert not report.passed and any(c.startswith(prefix) for c in failed), failed

    fails(_study(tmp_path / "a", rois=good, rt=()), "modality:RTSTRUCT")
    fails(_study(tmp_path / "b", rois=[*good, "Hrt_Lft"]), "roi:Hrt_Lft")
    fails(_study(tmp_path / "c", rois=[r for r in good if r != first]), f"structure:{required[0]}")
    fails(_study(tmp_path / "d", rois=good, empty_rois=[first]), f"structure:{required[0]}")
    fails(_study(tmp_path / "e", rois=good, slice_thickness=5.0), "rule:CT SliceThickness")
    broken = _study(tmp_path / "f", rois=good, slice_thickness=2.0)
    sorted(broken.rglob("IM*"))[-1].unlink()
    fails(broken, "reference:")
