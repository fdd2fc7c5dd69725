"""What the header says was done: identity removed, the method, the trial, XNAT's routing line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from uploader.deid.profile import Option
from uploader.version import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

if TYPE_CHECKING:
    from uploader.deid.engine import Settings

_LO = 64


def _lo(text: str) -> str:
    return text[:_LO]


def write(ds: Dataset, settings: Settings, *, subject: str, session: str, version: str) -> None:
    """Write the de-identification record, the pseudonyms and the trial attributes."""
    profile = settings.profile
    ds.PatientName = subject
    ds.PatientID = subject
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [
        _lo(f"DICOM PS3.15 {profile.edition} Basic Application Confidentiality Profile"),
        _lo(f"Secure DICOM Uploader {version}; keyed pseudonyms"),
    ]
    codes = []
    for value, meaning in profile.method_codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in profile.options:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile.options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
    trial = settings.trial
    project = ""
    if trial is not None:
        project = trial.protocol_id
        ds.ClinicalTrialSponsorName = _lo(trial.sponsor or trial.protocol_id)
        ds.ClinicalTrialProtocolID = _lo(trial.protocol_id)
        ds.ClinicalTrialProtocolName = _lo(trial.protocol_name)
        ds.ClinicalTrialSiteID = _lo(settings.site)
        ds.ClinicalTrialSiteName = _lo(trial.site_name)
        ds.ClinicalTrialSubjectID = _lo(subject)
        if trial.time_point:
            ds.ClinicalTrialTimePointID = _lo(trial.time_point)
    route(ds, project, subject, session)


def route(ds: Dataset, project: str, subject: str, session: str) -> None:
    """Write XNAT's routing line: ``Project:<p> Subject:<s> Session:<s>`` in PatientComments."""
    routing = f"Subject:{subject} Session:{session}"
    ds.PatientComments = f"Project:{project} {routing}" if project else routing


def fix_file_meta(ds: Dataset) -> None:
    """Make the file meta agree with the de-identified data set and name us as its writer."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is None or implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    for keyword in (
        "SourceApplicationEntityTitle",
        "SendingApplicationEntityTitle",
        "ReceivingApplicationEntityTitle",
        "SourcePresentationAddress",
        "SendingPresentationAddress",
        "ReceivingPresentationAddress",
        "PrivateInformationCreatorUID",
        "PrivateInformation",
    ):
        if keyword in meta:
            delattr(meta, keyword)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
