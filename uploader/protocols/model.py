"""The trial protocol schema: what a site must send for one trial, and how it is de-identified.

Trial coordinators write it as YAML (see docs/protocols.md); ``uploader protocol schema`` prints
the JSON Schema generated from these models. Every field has a description: the docs test checks
that the authoring guide explains each one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from uploader.deid.policy import BURNED_IN_KINDS, PrivateKey
from uploader.deid.profile import DEFAULT_OPTIONS, Option
from uploader.deid.pseudonyms import SESSION_FIELDS, SUBJECT_FIELDS, check_pattern
from uploader.errors import ConfigError
from uploader.protocols.patterns import PatternError, compile_pattern, search

BurnedInKind = Literal["burned_in_annotation", "secondary_capture", "screen_save", "report_series"]
assert set(BurnedInKind.__args__) == set(BURNED_IN_KINDS)  # type: ignore[attr-defined]

_MODALITY = r"^[A-Z][A-Z0-9]{1,15}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivateTag(_Strict):
    """A private element a study needs, kept by creator and element: ``(7053,xx00)``."""

    tag: str = Field(description="(gggg,xxee) with an odd group")
    creator: str = Field(description="the private creator string, e.g. Philips PET Private Group")
    why: str = Field(default="", description="why the study needs it (for the audit record)")

    def key(self) -> PrivateKey:
        """Return the parsed (group, creator, element) key; raises ConfigError if malformed."""
        return PrivateKey.parse(self.tag, self.creator)

    @model_validator(mode="after")
    def _parses(self) -> PrivateTag:
        try:
            self.key()
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return self


def _pattern(value: str, allowed: frozenset[str], what: str) -> str:
    try:
        check_pattern(value, allowed, what)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc  # pydantic reports ValueErrors with their location
    return value


def _regex(value: str) -> str:
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise ValueError(str(exc)) from exc  # pydantic reports it at the pattern's line
    return value


class Pseudonym(_Strict):
    """How subject IDs and session labels are made from keyed hashes."""

    subject: str = Field(default="{protocol}-{site}-{hash:6}", description="subject ID pattern")
    session: str = Field(default="{subject}_{hash:6}", description="session label pattern")
    manual_subject: str | None = Field(
        default=None,
        description="regex of the subject IDs the trial assigns, entered by staff (none: none)",
    )
    manual_session: str | None = Field(
        default=None,
        description="regex of the session IDs the trial assigns, entered by staff (none: none)",
    )

    @field_validator("manual_subject", "manual_session")
    @classmethod
    def _manual(cls, v: str | None) -> str | None:
        return _regex(v) if v is not None else None

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        return _pattern(v, SUBJECT_FIELDS, "subject")

    @field_validator("session")
    @classmethod
    def _session(cls, v: str) -> str:
        return _pattern(v, SESSION_FIELDS, "session")


class Deidentify(_Strict):
    """The de-identification a trial asks for, on top of the Basic Profile."""

    options: list[Option] = Field(
        default_factory=lambda: sorted(DEFAULT_OPTIONS),
        description="Annex E options; replaces the default (retain_patient_characteristics)",
    )
    keep_private: list[PrivateTag] = Field(
        default_factory=list, description="private elements the study needs, by creator"
    )
    allow_burned_in: list[BurnedInKind] = Field(
        default_factory=list, description="kinds of instance with burned-in text to send anyway"
    )
    script: str | None = Field(default=None, description="DicomEdit-style project script")
    variables: dict[str, str] = Field(
        default_factory=dict, description="values the project script can read by name"
    )
    lookups: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="tables for the script's lookup[table, key]"
    )


class Modalities(_Strict):
    """Which modalities a study must, may and must not contain."""

    required: list[str] = Field(default_factory=list, description="each must be present")
    optional: list[str] = Field(default_factory=list, description="accepted when present")
    forbidden: list[str] = Field(default_factory=list, description="must not be present")

    @field_validator("required", "optional", "forbidden")
    @classmethod
    def _codes(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(_MODALITY, v):
                raise ValueError(f"{v!r} is not a DICOM modality code (CT, MR, RTSTRUCT...)")
        return values


class Structure(_Strict):
    """One structure (ROI): by exact name, with synonyms relabelled to it, or by pattern."""

    name: str | None = Field(default=None, description="the ROI name the trial wants")
    synonyms: list[str] = Field(
        default_factory=list, description="other names accepted and relabelled to `name`"
    )
    pattern: str | None = Field(default=None, description="a regular expression ROI names match")
    description: str = Field(default="", description="what the structure is, for people")
    allow_empty: bool = Field(default=False, description="an ROI with no contour still counts")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        return None if v is None else _regex(v)

    @model_validator(mode="after")
    def _name_or_pattern(self) -> Structure:
        if (self.name is None) == (self.pattern is None):
            raise ValueError("give exactly one of `name` or `pattern`")
        if self.pattern is not None and self.synonyms:
            raise ValueError("`synonyms` go with `name`, not with `pattern`")
        return self

    @property
    def label(self) -> str:
        """How reports name this structure."""
        return self.name or f"/{self.pattern}/"

    def matches(self, roi_name: str) -> bool:
        """True if an ROI name (after relabelling) is this structure."""
        if self.name is not None:
            return roi_name == self.name
        return search(self.pattern or "", roi_name)


class Structures(_Strict):
    """The structures an RTSTRUCT must, may and must not contain, and their nomenclature."""

    naming: Literal["tg263", "none"] = Field(
        default="tg263", description="the nomenclature every ROI name must follow"
    )
    required: list[Structure] = Field(default_factory=list, description="each must be present")
    optional: list[Structure] = Field(default_factory=list, description="accepted when present")
    forbidden: list[str] = Field(
        default_factory=list, description="ROI names (or /regex/) that must not appear"
    )

    @field_validator("forbidden")
    @classmethod
    def _forbidden(cls, values: list[str]) -> list[str]:
        for v in values:
            if len(v) > 2 and v.startswith("/") and v.endswith("/"):
                _regex(v[1:-1])
        return values


class SeriesCount(_Strict):
    """How many series of one modality a study may hold."""

    min: int = Field(default=0, ge=0, description="at least this many series")
    max: int | None = Field(default=None, ge=0, description="at most this many series")


class AttributeRule(_Strict):
    """A check on one attribute of every instance (of one modality, if given)."""

    attribute: str = Field(description="DICOM keyword, e.g. SliceThickness")
    modality: str | None = Field(default=None, description="only instances of this modality")
    min: float | None = Field(default=None, description="numeric value at least this")
    max: float | None = Field(default=None, description="numeric value at most this")
    equals: str | None = Field(default=None, description="value equal to this")
    one_of: list[str] | None = Field(default=None, description="value is one of these")
    matches: str | None = Field(default=None, description="value matches this regex")
    present: bool | None = Field(default=None, description="true: must hold a value; false: absent")
    severity: Literal["fail", "warn"] = Field(default="fail", description="fail or warn")
    message: str = Field(default="", description="what to tell the radiographer")

    @field_validator("attribute")
    @classmethod
    def _known(cls, v: str) -> str:
        if tag_for_keyword(v) is None:
            raise ValueError(f"{v!r} is not a DICOM attribute keyword")
        return v

    @field_validator("matches")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return None if v is None else _regex(v)

    @model_validator(mode="after")
    def _one_condition(self) -> AttributeRule:
        set_ = [
            k
            for k in ("min", "max", "equals", "one_of", "matches", "present")
            if getattr(self, k) is not None
        ]
        if not set_:
            raise ValueError(
                "a rule needs a condition: min, max, equals, one_of, matches or present"
            )
        return self


class Protocol(_Strict):
    """A trial protocol: what a site sends for this trial, and how it is de-identified."""

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the trial's protocol ID: ClinicalTrialProtocolID and the XNAT project",
    )
    version: str = Field(default="1", description="the protocol's own version, for the audit")
    name: str = Field(default="", description="the trial's full name")
    sponsor: str = Field(default="", description="ClinicalTrialSponsorName")
    time_point: str = Field(default="", description="ClinicalTrialTimePointID, e.g. baseline")
    auto_approve: bool = Field(
        default=False, description="the anonymised node pushes without waiting for staff approval"
    )
    modalities: Modalities = Field(default_factory=Modalities, description="modalities expected")
    series: dict[str, SeriesCount] = Field(
        default_factory=dict, description="series counts per modality, e.g. CT: {min: 1, max: 1}"
    )
    structures: Structures | None = Field(default=None, description="the RTSTRUCT's structures")
    rules: list[AttributeRule] = Field(default_factory=list, description="attribute checks")
    pseudonym: Pseudonym = Field(default_factory=Pseudonym, description="pseudonym formats")
    deidentify: Deidentify = Field(default_factory=Deidentify, description="de-identification")

    def synonym_map(self) -> dict[str, str]:
        """Return {synonym: protocol name} for every structure that declares synonyms."""
        if self.structures is None:
            return {}
        return {
            syn: s.name
            for s in (*self.structures.required, *self.structures.optional)
            if s.name is not None
            for syn in s.synonyms
        }
