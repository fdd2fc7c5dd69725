"""The trial protocol schema (the parts de-identification reads) and its loader.

A protocol is YAML written by a trial coordinator. Loading never shows a traceback: every
problem becomes one ``ConfigError`` naming the file, the field and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from uploader.deid.policy import BURNED_IN_KINDS, PrivateKey
from uploader.deid.profile import DEFAULT_OPTIONS, Option
from uploader.deid.pseudonyms import SESSION_FIELDS, SUBJECT_FIELDS, check_pattern
from uploader.errors import ConfigError

BurnedInKind = Literal["burned_in_annotation", "secondary_capture", "screen_save", "report_series"]
assert set(BurnedInKind.__args__) == set(BURNED_IN_KINDS)  # type: ignore[attr-defined]


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


def _pattern(value: str, allowed: frozenset[str], what: str) -> str:
    try:
        check_pattern(value, allowed, what)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc  # pydantic reports ValueErrors with their location
    return value


class Pseudonym(_Strict):
    """How subject IDs and session labels are made from keyed hashes."""

    subject: str = Field(default="{protocol}-{site}-{hash:6}", description="subject ID pattern")
    session: str = Field(default="{subject}_{hash:6}", description="session label pattern")

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
    keep_private: list[PrivateTag] = Field(default_factory=list)
    allow_burned_in: list[BurnedInKind] = Field(default_factory=list)
    script: str | None = Field(default=None, description="DicomEdit-style project script")


class Protocol(BaseModel):
    """A trial protocol. Sections other than these are read by later stages (validation)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str = ""
    sponsor: str = ""
    time_point: str = ""
    pseudonym: Pseudonym = Field(default_factory=Pseudonym)
    deidentify: Deidentify = Field(default_factory=Deidentify)


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def load_protocol(path: Path) -> Protocol:
    """Load and validate a protocol file.

    Raises:
        ConfigError: unreadable, not YAML, or not a valid protocol (first problem named).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the protocol: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a protocol is a YAML mapping (id: ..., name: ...)")
    try:
        protocol = Protocol.model_validate(data)
        for tag in protocol.deidentify.keep_private:
            tag.key()
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {_describe(dict(errors[0]))}{more}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return protocol
