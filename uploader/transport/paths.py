"""Values that become part of a path or a URL: checked, never assumed.

A UID from a file, a subject label from a manifest or a protocol ID from a header is data from
outside. Before it names a file or a URL segment it must be a valid UID (PS3.5 9.1: digits and
dots, at most 64 characters, no empty component, no leading zero except a lone ``0``) or a plain
label (letters, digits, ``.``, ``_``, ``-``; not ``.`` or ``..``), and a path built from it is
resolved and checked to lie under its root. Errors never repeat the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from uploader.errors import PermanentError

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def valid_uid(value: object) -> bool:
    """True if ``value`` is a syntactically valid DICOM UID."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def valid_label(value: object) -> bool:
    """True if ``value`` may name one folder or one URL segment (a pseudonym, a protocol ID)."""
    return (
        isinstance(value, str)
        and _LABEL.fullmatch(value) is not None
        and value not in (".", "..")
        and ".." not in value
    )


def check_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID.

    Raises:
        PermanentError: it is not (the message names ``what``, never the value).
    """
    if not valid_uid(value):
        raise PermanentError(f"{what} is not a valid UID")
    return str(value)


def check_label(value: object, what: str) -> str:
    """Return ``value`` if it may be one path or URL segment.

    Raises:
        PermanentError: it may not (the message names ``what``, never the value).
    """
    if not valid_label(value):
        raise PermanentError(f"{what} is not a plain label (letters, digits, '.', '_', '-')")
    return str(value)


def inside(root: Path, *parts: str) -> Path:
    """``root / parts...``, proven to stay under ``root`` once resolved (symlinks included).

    Raises:
        PermanentError: the path would leave ``root``.
    """
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if os.path.commonpath([base, path]) != str(base) or path == base:
        raise PermanentError("a path built from received values would leave its folder")
    return path
