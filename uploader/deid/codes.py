"""Coded entries: which attributes hold codes, and whether a code's meaning is the standard's.

A code value (SNOMED CT concept IDs are long digit runs) is not free text: the pattern detectors
would take it for an ID. A code meaning is the standard's own text when its scheme and value are
in the coding schemes pydicom ships (DCM, SCT, LN, UCUM, ...) and the meaning is the one
listed; anything else in a code meaning is free text and is cleaned and checked like any other.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydicom.datadict import tag_for_keyword

#: Attributes whose values are codes or identifiers of coding schemes, never prose.
CODED_KEYWORDS = (
    "CodeValue",
    "LongCodeValue",
    "URNCodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "ContextIdentifier",
    "MappingResource",
    "ContextGroupExtensionCreatorUID",
    "CodingSchemeRegistry",
    "CodingSchemeExternalID",
)
CODED_TAGS = frozenset(t for t in (tag_for_keyword(k) for k in CODED_KEYWORDS) if t is not None)
#: Device descriptions: never struck by institution words or header dates (a vendor may share
#: a word with the hospital; a version number may look like a date).
DEVICE_TAGS = frozenset(
    t
    for t in (
        tag_for_keyword(k)
        for k in (
            "Manufacturer",
            "ManufacturerModelName",
            "SoftwareVersions",
            "DeviceSerialNumber",
            "ConvolutionKernel",
            "ImplementationVersionName",
        )
    )
    if t is not None
)
#: The institution's own attributes that Retain Institution Identity keeps: under the option
#: only person names and e-mail addresses strike them (not the hospital's name, street, ZIP
#: code or web address, which the option keeps).
INSTITUTION_TAGS = frozenset(
    t
    for t in (
        tag_for_keyword(k)
        for k in ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")
    )
    if t is not None
)


def people_only_tags(retain_institution: bool) -> frozenset[int]:
    """Tags that only names and e-mails strike: device descriptions, and the institution's own
    attributes where Retain Institution Identity keeps them (the engine and both verifiers)."""
    return DEVICE_TAGS | INSTITUTION_TAGS if retain_institution else DEVICE_TAGS


#: Code strings with enumerated values or defined terms (no person's name belongs there,
#: and a name part may equal a term: MR, F, TEXT).
ENUMERATED_TAGS = frozenset(
    t
    for t in (
        tag_for_keyword(k)
        for k in (
            "Modality",
            "PatientSex",
            "ValueType",
            "RelationshipType",
            "ContinuityOfContent",
            "Laterality",
            "ImageLaterality",
            "PatientPosition",
            "PhotometricInterpretation",
            "ContourGeometricType",
            "RTROIInterpretedType",
            "ROIGenerationAlgorithm",
            "ApprovalStatus",
            "PlanIntent",
            "RTPlanGeometry",
            "DoseUnits",
            "DoseType",
            "DoseSummationType",
            "RadiationType",
            "BeamType",
            "TreatmentDeliveryType",
            "PositionReferenceIndicator",
            "ScanOptions",
            "SpecificCharacterSet",
            "BurnedInAnnotation",
            "PatientIdentityRemoved",
            "LongitudinalTemporalInformationModified",
            "CompletionFlag",
            "VerificationFlag",
            "PresentationIntentType",
            "RescaleType",
            "PixelIntensityRelationship",
        )
    )
    if t is not None
)
_CODE_MEANING = 0x00080104
_CODE_VALUES = frozenset(
    t for t in (tag_for_keyword(k) for k in ("CodeValue", "LongCodeValue")) if t is not None
)
#: Coding schemes whose codes are the scheme's own (beside those pydicom ships): codes, never
#: text. A private scheme ("99" and a site's letters) or one nobody knows is a site's own list,
#: where a sender can type anything: its code values are judged like prose.
_KNOWN_SCHEMES = frozenset(
    {"SRT", "SNM3", "99SDM", "I9C", "I9", "I11", "ICD10", "ICDO3", "ACR", "C4", "C5", "CPT4"}
    | {"HL7", "ISO3166_1", "ISO639_1", "ISO639_2", "UPC", "NCDR", "NICIP", "OPCS4", "LOINC"}
)


def is_code(item: Any, tag: int) -> bool:
    """True if ``tag`` of ``item`` holds a code, not prose (no pattern judges it): every coded
    attribute, except a code value of a private or unknown coding scheme."""
    if tag not in CODED_TAGS:
        return False
    if tag not in _CODE_VALUES:
        return True
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
    return scheme in _KNOWN_SCHEMES or scheme in _schemes()


#: The coding schemes pydicom packages (``pydicom.sr._concepts_dict.concepts``), written out:
#: importing that module takes 0.1-0.3 s, paid by every worker process of a run that meets a
#: code value. ``tests/test_codes_schemes_are_pydicoms.py`` fails when a pydicom upgrade
#: changes them.
PYDICOM_SCHEMES = frozenset(
    {"BARI", "DCM", "FMA", "I10", "IBSI", "ITIS_TSN", "LN", "MDC", "MSH", "NCIt", "NDC"}
    | {"NEU", "PUBCHEM_CID", "RADLEX", "RXNORM", "SCT", "UCUM", "UMLS"}
)


def _schemes() -> frozenset[str]:
    return PYDICOM_SCHEMES


@cache
def _meanings() -> dict[tuple[str, str], str]:
    from pydicom.sr import _concepts_dict  # pinned pydicom: its packaged coding schemes

    out: dict[tuple[str, str], str] = {}
    concepts: dict[str, dict[str, Any]] = _concepts_dict.concepts
    for scheme, names in concepts.items():
        for codes in names.values():
            for value, (meaning, _cids) in codes.items():
                out[(scheme, value)] = meaning.casefold()
    aliases = {"SRT": "SCT", "99SDM": "SCT"}
    for (scheme, value), meaning in list(out.items()):
        for alias, real in aliases.items():
            if scheme == real:
                out.setdefault((alias, value), meaning)
    return out


def is_standard_meaning(item: Any, tag: int) -> bool:
    """True if ``tag`` is the CodeMeaning of ``item`` and it is the coding scheme's own text."""
    if tag != _CODE_MEANING:
        return False
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
    value = str(item.get("CodeValue", "") or "").strip()
    meaning = str(item.get("CodeMeaning", "") or "").strip().casefold()
    return bool(meaning) and _meanings().get((scheme, value)) == meaning
