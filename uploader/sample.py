"""Generate a sample radiotherapy study with identifiers planted everywhere they hide.

A CT series, an RTSTRUCT on it, an RTPLAN on the RTSTRUCT and an RTDOSE on the RTPLAN, whose
references are real. The patient's name, IDs, birth date, accession number and address are
planted in the places Annex E worries about: the patient module, free-text descriptions (in
several spellings), nested sequences, private tags, overlays, curves, and dates inside UIDs.
Used by the quick start, the tests and the benchmarks; every value is fictitious.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
)

ROOT = "1.2.826.0.1.3680043.9.7133"


@dataclass(frozen=True)
class Patient:
    """The fictitious patient whose identity the sample carries."""

    name: str = "MÜLLER^JÖRG^HEINRICH^DR"
    spoken_name: str = "Jörg Mueller"  # how a radiographer types it into a description
    patient_id: str = "9434765919"
    other_id: str = "MRN0012345"
    birth_date: str = "19620314"
    accession: str = "ACC7781234"
    address: str = "12 Acacia Avenue, Guildford, GU1 4XX"
    phone: str = "01483 555123"
    study_date: str = "20241105"
    tag: str = "1"  # makes UIDs differ between sample patients


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _uid(p: Patient, *parts: object) -> str:
    # Dates inside UIDs, as some scanners write them: the birth date is in every UID here.
    return ".".join([ROOT, p.birth_date, p.tag, *map(str, parts)])


def _base(p: Patient, sop_class: str, modality: str, series: int, instance: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(p, series, instance)
    ds.StudyInstanceUID = _uid(p, 1)
    ds.SeriesInstanceUID = _uid(p, series)
    ds.FrameOfReferenceUID = _uid(p, 9)
    ds.Modality = modality
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "RXH"
    ds.OtherPatientIDs = p.other_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = "M"
    ds.PatientAge = "062Y"
    ds.PatientWeight = "81.5"
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.AccessionNumber = p.accession
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = p.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "4411"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OperatorsName = "SMITH^ANNA"
    ds.InstitutionName = "Royal Example Hospital"
    ds.InstitutionAddress = "Downs Road, Sutton"
    ds.StationName = "CTSIM01"
    ds.Manufacturer = "ACME"
    ds.DeviceSerialNumber = "SN-5512"
    ds.StudyDescription = f"RT planning {p.spoken_name}"
    ds.SeriesDescription = f"{modality} for {p.name.split('^')[0]} born 14/03/1962"
    ds.ImageComments = (
        f"Pt {p.other_id} NHS {p.patient_id[:3]} {p.patient_id[3:6]} {p.patient_id[6:]}"
    )
    request = Dataset()
    request.RequestedProcedureID = p.accession
    request.ReasonForTheRequestedProcedure = f"Planning for {p.name.split('^')[1]}"
    request.ScheduledProcedureStepID = "SPS1"
    ds.RequestAttributesSequence = DicomSequence([request])
    ds.add_new(0x00090010, "LO", "ACME 1.1")
    ds.add_new(0x00091001, "LO", p.name)
    ds.add_new(0x00091002, "LO", p.patient_id)
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "DS", "0.00123")
    ds.add_new(0x70531009, "DS", "0.0456")
    return ds


def _write(ds: Dataset, path: Path, implicit: bool = False) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "CTSIM01"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _ct(p: Patient, i: int, size: int) -> Dataset:
    ds = _base(p, CTImageStorage, "CT", 2, i + 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [-250.0, -250.0, -100.0 + 2.5 * i]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = "2.5"
    ds.PixelSpacing = [500 / size, 500 / size]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.BurnedInAnnotation = "NO"
    pattern = bytes((i * 7 + k) % 256 for k in range(256))
    ds.PixelData = (pattern * (size * size * 2 // 256 + 1))[: size * size * 2]
    # an overlay with a comment naming the patient, and a curve: both carry PHI in the wild
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x60004000, "LT", f"Marked by {p.name}")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50003000, "OW", b"\x00\x01" * 4)
    return ds


DEFAULT_ROIS = ("Prostate", "Rectum", "Bladder", "PTV_1")


def _rtstruct(
    p: Patient, cts: list[Dataset], points: int, names: Sequence[str], empty: Iterable[str] = ()
) -> Dataset:
    ds = _base(p, RTStructureSetStorage, "RTSTRUCT", 3, 1)
    ds.StructureSetLabel = "PLAN1"
    ds.StructureSetName = f"{p.name.split('^')[0]} contours"
    ds.StructureSetDate, ds.StructureSetTime = p.study_date, "120000"
    images = [
        _item(ReferencedSOPClassUID=c.SOPClassUID, ReferencedSOPInstanceUID=c.SOPInstanceUID)
        for c in cts
    ]
    series = _item(SeriesInstanceUID=cts[0].SeriesInstanceUID, ContourImageSequence=images)
    study = _item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
        ReferencedSOPInstanceUID=cts[0].StudyInstanceUID,
        RTReferencedSeriesSequence=[series],
    )
    ds.ReferencedFrameOfReferenceSequence = [
        _item(FrameOfReferenceUID=cts[0].FrameOfReferenceUID, RTReferencedStudySequence=[study])
    ]
    ds.StructureSetROISequence = [
        _item(
            ROINumber=n + 1,
            ReferencedFrameOfReferenceUID=cts[0].FrameOfReferenceUID,
            ROIName=name,
            ROIGenerationAlgorithm="MANUAL",
        )
        for n, name in enumerate(names)
    ]
    contours = []
    no_contour = set(empty)
    for n in range(len(names)):
        items = []
        for c in [] if names[n] in no_contour else cts:
            z = float(c.ImagePositionPatient[2])
            data = []
            for k in range(points):
                data += [round(10.0 * n + k * 0.37, 2), round(5.0 + k * 0.21, 2), z]
            item = _item(
                ContourGeometricType="CLOSED_PLANAR",
                NumberOfContourPoints=points,
                ContourData=data,
            )
            item.ContourImageSequence = [
                _item(
                    ReferencedSOPClassUID=c.SOPClassUID, ReferencedSOPInstanceUID=c.SOPInstanceUID
                )
            ]
            items.append(item)
        contours.append(
            _item(ReferencedROINumber=n + 1, ROIDisplayColor=[255, 0, 0], ContourSequence=items)
        )
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = [
        _item(
            ObservationNumber=n + 1,
            ReferencedROINumber=n + 1,
            RTROIInterpretedType="ORGAN",
            ROIInterpreter="SMITH^ANNA",
        )
        for n in range(len(names))
    ]
    return ds


def _rtplan(p: Patient, struct: Dataset) -> Dataset:
    ds = _base(p, RTPlanStorage, "RTPLAN", 4, 1)
    ds.RTPlanLabel = "PROST60"
    ds.RTPlanName = f"Plan for {p.spoken_name}"
    ds.RTPlanDate, ds.RTPlanTime = p.study_date, "130000"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = [
        _item(
            ReferencedSOPClassUID=struct.SOPClassUID, ReferencedSOPInstanceUID=struct.SOPInstanceUID
        )
    ]
    ds.DoseReferenceSequence = [
        _item(
            DoseReferenceNumber=1,
            DoseReferenceUID=_uid(p, 4, 99),
            DoseReferenceStructureType="SITE",
            DoseReferenceDescription="PTV_1 60Gy",
            DoseReferenceType="TARGET",
        )
    ]
    ds.FractionGroupSequence = [
        _item(
            FractionGroupNumber=1,
            NumberOfFractionsPlanned=20,
            NumberOfBeams=0,
            NumberOfBrachyApplicationSetups=0,
        )
    ]
    return ds


def _rtdose(p: Patient, plan: Dataset) -> Dataset:
    ds = _base(p, RTDoseStorage, "RTDOSE", 5, 1)
    ds.ReferencedRTPlanSequence = [
        _item(ReferencedSOPClassUID=plan.SOPClassUID, ReferencedSOPInstanceUID=plan.SOPInstanceUID)
    ]
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.Rows = ds.Columns = 4
    ds.NumberOfFrames = 2
    ds.GridFrameOffsetVector = [0, 2.5]
    ds.ImagePositionPatient = [-10.0, -10.0, -2.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [5, 5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseGridScaling = "0.0001"
    ds.PixelData = bytes(range(128))
    return ds


def write_study(
    out: Path,
    *,
    slices: int = 8,
    size: int = 64,
    points: int = 20,
    patient: Patient | None = None,
    rois: Sequence[str] = DEFAULT_ROIS,
    empty_rois: Iterable[str] = (),
    rt: Sequence[str] = ("RTSTRUCT", "RTPLAN", "RTDOSE"),
    slice_thickness: float = 2.5,
) -> list[Path]:
    """Write one sample RT study under ``out`` and return its files.

    The CT files have no extension, sit in a folder named after the patient (as exports often
    do) and the RTDOSE is implicit VR; a non-DICOM note lies beside them. ``rt`` selects which
    RT objects are written (their references are always made as if all existed).
    """
    p = patient or Patient()
    folder = out / f"{p.name.split('^')[0]}_{p.patient_id}"
    cts = [_ct(p, i, size) for i in range(slices)]
    for ct in cts:
        ct.SliceThickness = str(slice_thickness)
    files = []
    for i, ct in enumerate(cts):
        files.append(folder / "CT" / f"IM{i + 1:04d}")
        _write(ct, files[-1])
    struct = _rtstruct(p, cts, points, rois, empty_rois)
    plan = _rtplan(p, struct)
    dose = _rtdose(p, plan)
    for ds, name, implicit in (
        (struct, "RS.dcm", False),
        (plan, "RP.dcm", False),
        (dose, "RD.dcm", True),
    ):
        if ds.Modality not in rt:
            continue
        files.append(folder / name)
        _write(ds, files[-1], implicit=implicit)
    note = folder / "README.txt"
    note.write_text(f"Export for {p.spoken_name}\n", encoding="utf-8")
    os.utime(note)
    return files
