"""The error hierarchy: permanent versus retriable, each carrying what the user needs.

Only ``uploader.cli.main`` (and the services' entry points) turn these into exit codes and
one-line messages; library code raises them and never prints.
"""

from __future__ import annotations


class UploaderError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(UploaderError):
    """Retrying will not help: bad input, bad configuration, policy refusal."""


class RetriableError(UploaderError):
    """A transient condition (peer down, disk busy): the same step may succeed later."""


class ConfigError(PermanentError):
    """A configuration, key or protocol file is missing or invalid; the message names the file."""


class NotDicomError(PermanentError):
    """The file is not DICOM (no preamble and no parsable data set)."""


class WithheldError(PermanentError):
    """Policy withholds this instance; ``reason`` says why, in words for the user."""

    def __init__(self, reason: str, code: str = "policy") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class VerificationError(PermanentError):
    """The de-identified output still carries something it must not; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
