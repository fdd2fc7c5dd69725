"""The engine on a CT + RTSTRUCT + RTPLAN + RTDOSE study: references, pseudonyms, policies."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from uploader.deid.engine import Settings, deidentify
from uploader.deid.identifiers import collect
from uploader.deid.policy import PrivateKey, PrivatePolicy
from uploader.deid.profile import Option, Profile, load_table
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.deid.verify import check_output
from uploader.errors import VerificationError, WithheldError
from uploader.sample import write_study


def _study(tmp_path: Path) -> dict[str, list[Dataset]]:
    files = write_study(tmp_path / "in", slices=4)
    by_modality: dict[str, list[Dataset]] = {}
    for f in files:
        ds = dcmread(f)
        by_modality.setdefault(ds.Modality, []).append(ds)
    return by_modality


def _run(study: dict[str, list[Dataset]], settings: Settings) -> dict[str, list[Dataset]]:
    return {
        m: [deidentify(copy.deepcopy(ds), settings).dataset for ds in dss]
        for m, dss in study.items()
    }


def test_references_between_ct_and_rt_objects_still_resolve(
    tmp_path: Path, settings: Settings
) -> None:
    out = _run(_study(tmp_path), settings)
    ct_uids = {ds.SOPInstanceUID for ds in out["CT"]}
    (struct,), (plan,), (dose,) = out["RTSTRUCT"], out["RTPLAN"], out["RTDOSE"]
    frame = out["CT"][0].FrameOfReferenceUID
    refs = struct.ReferencedFrameOfReferenceSequence[0]
    assert refs.FrameOfReferenceUID == frame
    study_ref = refs.RTReferencedStudySequence[0]
    assert study_ref.ReferencedSOPInstanceUID == out["CT"][0].StudyInstanceUID
    series_ref = study_ref.RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == out["CT"][0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series_ref.ContourImageSequence} == ct_uids
    for roi in struct.ROIContourSequence:
        for contour in roi.ContourSequence:
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in ct_uids
    assert {r.ReferencedFrameOfReferenceUID for r in struct.StructureSetROISequence} == {frame}
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == struct.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    all_out = [ds for dss in out.values() for ds in dss]
    assert len({ds.StudyInstanceUID for ds in all_out}) == 1
    assert all(ds.SOPInstanceUID.startswith("2.25.") for ds in all_out)
    # PS3.15 2026d: ROI Name is Z in the Basic Profile, C (cleaned, kept) under Clean Descriptors
    assert {r.ROIName for r in struct.StructureSetROISequence} == {None}


def test_clean_descriptors_keeps_roi_names(tmp_path: Path, protocol_settings: Settings) -> None:
    out = _run(_study(tmp_path), protocol_settings)
    names = [r.ROIName for r in out["RTSTRUCT"][0].StructureSetROISequence]
    assert names == ["Prostate", "Rectum", "Bladder", "PTV_1"]


def test_same_key_same_identifiers_and_a_late_series_joins_its_study(
    tmp_path: Path, settings: Settings
) -> None:
    study = _study(tmp_path)
    first = _run({"CT": study["CT"]}, settings)["CT"]
    late = _run({"RTSTRUCT": study["RTSTRUCT"]}, settings)["RTSTRUCT"][0]  # a new run, days later
    again = _run({"CT": study["CT"]}, build := settings)["CT"]
    assert build is settings
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    assert late.StudyInstanceUID == first[0].StudyInstanceUID
    assert late.PatientID == first[0].PatientID
    assert late.PatientComments == first[0].PatientComments  # same XNAT subject and session
    contour_refs = {
        i.ReferencedSOPInstanceUID
        for i in late.ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .ContourImageSequence
    }
    assert contour_refs == {d.SOPInstanceUID for d in first}


def test_another_key_gives_unrelated_pseudonyms_not_a_bare_hash(
    tmp_path: Path, settings: Settings
) -> None:
    study = _study(tmp_path)
    ours = _run({"CT": study["CT"][:1]}, settings)["CT"][0]
    other_settings = dataclasses.replace(
        settings, pseudonymiser=Pseudonymiser(b"another key 1234567")
    )
    theirs = _run({"CT": study["CT"][:1]}, other_settings)["CT"][0]
    assert ours.PatientID != theirs.PatientID
    assert ours.SOPInstanceUID != theirs.SOPInstanceUID
    # an attacker hashing every possible NHS number cannot reproduce the pseudonyms
    nhs = "9434765919"
    for digest in (hashlib.sha256(nhs.encode()).hexdigest(), hashlib.md5(nhs.encode()).hexdigest()):
        assert digest[:8].upper() not in ours.PatientID.upper()
    assert (
        str(int(hashlib.sha256(b"1.2.826.0.1.3680043.9.7133.19620314.1.1").hexdigest()[:32], 16))
        not in ours.StudyInstanceUID
    )


def test_uids_are_valid_2_25_form(pseudo: Pseudonymiser) -> None:
    import uuid

    for original in ("1.2.3", "1.2.826.0.1.3680043.9.7133.19620314.1.1", "9" * 64):
        new = pseudo.uid(original)
        assert new.startswith("2.25.") and len(new) <= 64 and new == pseudo.uid(original)
        value = uuid.UUID(int=int(new[5:]))
        assert value.version == 8 and value.variant == uuid.RFC_4122


def test_date_shift_is_per_patient_and_in_the_past(pseudo: Pseudonymiser) -> None:
    shifts = {pseudo.date_shift_days(f"id::{n}") for n in range(200)}
    assert all(-3653 <= s <= -366 for s in shifts)
    assert len(shifts) > 150
    assert pseudo.date_shift_days("id::1") == pseudo.date_shift_days("id::1")


def test_private_tags_go_unless_the_protocol_allow_list_names_creator_and_element(
    tmp_path: Path, settings: Settings
) -> None:
    ct = _study(tmp_path)["CT"][0]
    default = deidentify(copy.deepcopy(ct), settings).dataset
    assert not [e for e in default if e.tag.is_private]
    philips = "Philips PET Private Group"
    allow = PrivatePolicy(
        [PrivateKey.parse("(7053,xx00)", philips), PrivateKey.parse("(7053,xx09)", philips)]
    )
    kept = deidentify(copy.deepcopy(ct), dataclasses.replace(settings, private=allow)).dataset
    assert sorted(f"{e.tag:08X}" for e in kept if e.tag.is_private) == [
        "70530010",
        "70531000",
        "70531009",
    ]
    assert kept[0x70531000].value == "0.00123"
    wrong_creator = PrivatePolicy([PrivateKey.parse("(7053,xx00)", "Someone Else")])
    gone = deidentify(
        copy.deepcopy(ct), dataclasses.replace(settings, private=wrong_creator)
    ).dataset
    assert not [e for e in gone if e.tag.is_private]


def test_safe_private_option_keeps_the_standards_list_only(
    tmp_path: Path, settings: Settings
) -> None:
    ct = _study(tmp_path)["CT"][0]
    profile = Profile(load_table(), frozenset({Option.RETAIN_SAFE_PRIVATE}))
    out = deidentify(copy.deepcopy(ct), dataclasses.replace(settings, profile=profile)).dataset
    private = sorted(f"{e.tag:08X}" for e in out if e.tag.is_private)
    assert private == ["70530010", "70531000", "70531009"]  # Philips SUV factors are in E.3.10-1
    assert 0x00091001 not in out  # "ACME 1.1" holds the name: not on the list


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"BurnedInAnnotation": "YES"}, "burned_in_annotation"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "secondary_capture"),
        ({"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "screen_save"),
        ({"SeriesDescription": "Dose Report"}, "report_series"),
        ({"SeriesDescription": "Patient Protocol"}, "report_series"),
    ],
)
def test_instances_that_may_carry_burned_in_text_are_withheld_unless_allowed(
    tmp_path: Path, settings: Settings, change: dict[str, object], kind: str
) -> None:
    ct = _study(tmp_path)["CT"][0]
    for k, v in change.items():
        setattr(ct, k, v)
    with pytest.raises(WithheldError) as info:
        deidentify(copy.deepcopy(ct), settings)
    assert info.value.code == kind
    allowed = dataclasses.replace(settings, allow_burned_in=frozenset({kind}))
    assert deidentify(copy.deepcopy(ct), allowed).dataset.PatientIdentityRemoved == "YES"


def test_header_records_the_method_options_and_trial(
    tmp_path: Path, protocol_settings: Settings
) -> None:
    ct = _study(tmp_path)["CT"][0]
    out = deidentify(ct, protocol_settings)
    ds = out.dataset
    assert ds.PatientIdentityRemoved == "YES"
    codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in ds.DeidentificationMethodCodeSequence)
    assert "2026d" in ds.DeidentificationMethod[0]
    assert ds.ClinicalTrialProtocolID == "PACE-C" and ds.ClinicalTrialSponsorName == "ICR-CTSU"
    assert ds.ClinicalTrialSiteID == "RXH" and ds.ClinicalTrialSubjectID == out.subject
    assert ds.ClinicalTrialTimePointID == "baseline"
    assert out.subject.startswith("PACE-C-RXH-") and len(out.subject) == len("PACE-C-RXH-") + 6
    assert ds.PatientComments == f"Project:PACE-C Subject:{out.subject} Session:{out.session}"
    assert ds.PatientName == ds.PatientID == out.subject
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_free_text_keeps_its_meaning_but_loses_the_patient(
    tmp_path: Path, protocol_settings: Settings
) -> None:
    ct = _study(tmp_path)["CT"][0]
    ds = deidentify(ct, protocol_settings).dataset
    assert ds.StudyDescription == "RT planning *** ***"
    assert ds.SeriesDescription == "CT for *** born ***"
    assert ds.ImageComments == "Pt *** NHS ***"
    assert ds.RequestAttributesSequence[0].ReasonForTheRequestedProcedure == "Planning for ***"
    assert "RequestedProcedureID" not in ds.RequestAttributesSequence[0]


def test_verifier_withholds_an_output_that_reintroduces_an_identifier(
    tmp_path: Path, settings: Settings
) -> None:
    ct = _study(tmp_path)["CT"][0]
    ident = collect(ct)
    ds = deidentify(ct, settings).dataset
    ds.StudyDescription = "follow-up of 943-476-5919"  # what a careless site script might do
    ds.add_new(0x00081140, "SQ", [Dataset()])
    ds.ReferencedImageSequence[
        0
    ].ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7133.19620314.1.2.1"
    with pytest.raises(VerificationError) as info:
        check_output(
            ds,
            ident,
            {"1.2.826.0.1.3680043.9.7133.19620314.1.2.1"},
            settings.private,
            settings.profile,
        )
    problems = info.value.problems
    assert "(0008,1030) StudyDescription: ID" in problems
    assert any(
        "ReferencedImageSequence[0].(0008,1155)" in p and "original UID" in p for p in problems
    )
    assert "943" not in str(info.value)
