"""Identifiable variants of the sample study, made from the legitimate de-identified output the
way a misconfigured site (or a sender holding the forwarding key) would produce them. Each is
returned with the manifest that would announce it, so the gate itself is what refuses it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from uploader.sample import Patient, write_study

from .conftest import EXAMPLE_PROTOCOL, run_cli
from .intake_client import manifest_for

ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]
P = Patient()
#: Values planted in the sample: none may be found on the anonymised side afterwards.
PLANTED = [
    "MÜLLER",
    "JÖRG",
    "Mueller",
    P.patient_id,
    P.other_id,
    P.birth_date,
    P.accession,
    "Acacia",
    "01483 555123",
    "HOUSE^GREGORY",
    "RXH_CT_ACC778",
    "1.2.826.0.1.3680043.9.7133",  # the sample's UID root (its UIDs embed the birth date)
]


@dataclass
class Study:
    raw: list[Path]  # the identifiable sample
    deid: list[Path]  # what the identifiable node makes of it


def make_study(tmp: Path, key_file: Path) -> Study:
    write_study(tmp / "raw", slices=2, rois=ROIS)
    raw = sorted(p for p in (tmp / "raw").rglob("*") if p.is_file() and p.suffix != ".txt")
    out = tmp / "deid"
    made = run_cli(
        "anonymise",
        tmp / "raw",
        out,
        "--key-file",
        key_file,
        "--protocol",
        EXAMPLE_PROTOCOL,
        "--site",
        "RXH",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    return Study(raw, sorted(out.rglob("*.dcm")))


def _bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _ct(study: Study) -> Dataset:
    path = next(p for p in study.deid if dcmread(p, stop_before_pixels=True).Modality == "CT")
    return dcmread(path)


def _raw_ct(study: Study) -> Dataset:
    return dcmread(
        next(p for p in study.raw if dcmread(p, stop_before_pixels=True).Modality == "CT")
    )


def _legit_manifest(study: Study, extra: tuple[bytes, ...] | list[bytes] = ()) -> dict[str, Any]:
    doc = manifest_for(study.deid)
    for data in extra:
        uid = str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        if uid not in doc["sop_instance_uids"]:
            doc["sop_instance_uids"].append(uid)
    doc["instances"] = len(doc["sop_instance_uids"])
    return doc


Variant = tuple[list[bytes], dict[str, Any], str]  # instances, manifest, the kind expected


def raw_sample(study: Study) -> Variant:
    data = [p.read_bytes() for p in study.raw]
    doc = _legit_manifest(study)
    first = dcmread(study.raw[0], stop_before_pixels=True)
    doc["study_uid"] = str(first.StudyInstanceUID)
    doc["sop_instance_uids"] = [
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.raw
    ]
    doc["instances"] = len(data)
    return data, doc, "a study no manifest announced"  # its manifest is refused: original UIDs


def only_patient_name_left(study: Study) -> Variant:
    ds = _ct(study)
    ds.PatientName = P.name
    data = _bytes(ds)
    return [data], _legit_manifest(study), "(0010,0010) PatientName: not the announced subject"


def nhs_number_as_patient_id(study: Study) -> Variant:
    ds = _ct(study)
    ds.PatientID = P.patient_id
    data = _bytes(ds)
    return [data], _legit_manifest(study), "(0010,0020) PatientID: not the announced subject"


def original_2_25_uid(study: Study) -> Variant:
    ds = _ct(study)
    original = "2.25." + str(uuid.UUID("6fa459ea-ee8a-4ca4-894e-db77e160355e").int)  # v4
    ds.SOPInstanceUID = original
    ds.file_meta.MediaStorageSOPInstanceUID = original
    data = _bytes(ds)
    return [data], _legit_manifest(study), "not a derived one"


def private_tag_left(study: Study) -> Variant:
    ds = _ct(study)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "LO", P.patient_id)
    data = _bytes(ds)
    return [data], _legit_manifest(study), "private tag"


def declares_retain_uids(study: Study) -> Variant:
    ds = _ct(study)
    raw = _raw_ct(study)
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID"):  # the hospital's UIDs kept
        setattr(ds, keyword, getattr(raw, keyword))
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "113110", "DCM"
    item.CodeMeaning = "Retain UIDs Option"
    ds.DeidentificationMethodCodeSequence = Sequence([*ds.DeidentificationMethodCodeSequence, item])
    data = _bytes(ds)
    return [data], _legit_manifest(study), "does not allow"


def birth_date_left(study: Study) -> Variant:
    ds = _ct(study)
    ds.PatientBirthDate = P.birth_date
    return [_bytes(ds)], _legit_manifest(study), "(0010,0030) PatientBirthDate"


def referring_physician_left(study: Study) -> Variant:
    ds = _ct(study)
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    return [_bytes(ds)], _legit_manifest(study), "(0008,0090) ReferringPhysicianName"


def station_in_file_meta(study: Study) -> Variant:
    ds = _ct(study)
    ds.file_meta.SourceApplicationEntityTitle = "RXH_CT_ACC778"
    return [_bytes(ds)], _legit_manifest(study), "(0002,0016)"


def subject_pseudonym_swapped(study: Study) -> Variant:
    """Another subject's pseudonym in the header (a mix-up): not the one announced."""
    ds = _ct(study)
    ds.PatientID = ds.PatientName = ds.ClinicalTrialSubjectID = "PACE-C-RXH-AAAAAA"
    return [_bytes(ds)], _legit_manifest(study), "not the announced subject"


VARIANTS: dict[str, Callable[[Study], Variant]] = {
    "raw sample": raw_sample,
    "only PatientName left": only_patient_name_left,
    "NHS number as PatientID": nhs_number_as_patient_id,
    "an original 2.25 UID": original_2_25_uid,
    "a private tag left": private_tag_left,
    "declares Retain UIDs": declares_retain_uids,
    "the birth date left": birth_date_left,
    "a referring physician left": referring_physician_left,
    "an AE title in the file meta": station_in_file_meta,
    "another subject's pseudonym": subject_pseudonym_swapped,
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def name_in_study_description(study: Study) -> Variant:
    ds = _ct(study)
    ds.StudyDescription = "CT planning MÜLLER^JÖRG"  # kept, cleaned, under clean_descriptors
    return [_bytes(ds)], _legit_manifest(study), "(0008,1030) StudyDescription: kept text holds"


def name_in_image_comments(study: Study) -> Variant:
    ds = _ct(study)
    ds.ImageComments = "checked with Dr Mueller"
    return [_bytes(ds)], _legit_manifest(study), "(0020,4000) ImageComments: kept text holds"


def name_in_nested_code_meaning(study: Study) -> Variant:
    ds = _ct(study)
    region = _code("T-9200B", "99LOCAL", "Pelvis")
    region.AnatomicRegionModifierSequence = Sequence([_code("X1", "99LOCAL", "for Mr Mueller")])
    ds.AnatomicRegionSequence = Sequence([region])
    where = "AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].(0008,0104) CodeMeaning"
    return [_bytes(ds)], _legit_manifest(study), where


def name_in_sr_text_value(study: Study) -> Variant:
    """A Basic Text SR in the study whose text, two levels down, names the patient."""
    from uploader.deid.pseudonyms import Pseudonymiser

    from .conftest import KEY

    ct = _ct(study)
    sr = Dataset()
    for keyword in (
        "SpecificCharacterSet", "PatientName", "PatientID", "PatientComments",
        "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
        "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
        "ClinicalTrialSiteID", "ClinicalTrialSubjectID", "ClinicalTrialTimePointID",
        "StudyInstanceUID", "StudyDate", "StudyTime",
    ):  # fmt: skip
        if keyword in ct:
            setattr(sr, keyword, getattr(ct, keyword))
    pseudo = Pseudonymiser(KEY)
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = pseudo.uid("sr instance")
    sr.SeriesInstanceUID = pseudo.uid("sr series")
    sr.Modality, sr.ValueType = "SR", "CONTAINER"
    sr.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    text.TextValue = "Discussed with MÜLLER^JÖRG on the ward"
    section = Dataset()
    section.RelationshipType, section.ValueType = "CONTAINS", "CONTAINER"
    section.ConceptNameCodeSequence = Sequence([_code("121070", "DCM", "Findings")])
    section.ContentSequence = Sequence([text])
    sr.ContentSequence = Sequence([section])
    sr.file_meta = ct.file_meta.copy()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    data = _bytes(sr)
    return [data], _legit_manifest(study, [data]), "TextValue"


#: The variants only the pattern detectors (free text kept under clean_descriptors) can refuse.
PATTERN_VARIANTS: dict[str, Callable[[Study], Variant]] = {
    "the patient's name in StudyDescription": name_in_study_description,
    "the patient's name in ImageComments": name_in_image_comments,
    "the patient's name in an SR TextValue": name_in_sr_text_value,
    "the patient's name in a nested CodeMeaning": name_in_nested_code_meaning,
}
ALL_VARIANTS = {**VARIANTS, **PATTERN_VARIANTS}
