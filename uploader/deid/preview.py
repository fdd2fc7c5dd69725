"""A header before and after de-identification, element by element (``uploader script preview``
and the identifiable node's preview page use this one comparison)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset

from uploader.deid.elements import walk
from uploader.deid.engine import Settings, deidentify
from uploader.deid.identifiers import Identifiers
from uploader.errors import VerificationError, WithheldError

MAX_VALUE = 64
Kind = Literal["removed", "replaced", "added", "kept"]


@dataclass(frozen=True)
class Change:
    """One element: where (path and tag), its keyword, its value before and after, and what
    happened to it."""

    where: str
    keyword: str
    before: str | None
    after: str | None
    kind: Kind


@dataclass(frozen=True)
class Preview:
    """Every element of one instance with what de-identification does to it; why it would not
    be written: ``withheld`` (policy or script), ``problems`` (the verifier's)."""

    changes: list[Change]
    withheld: str = ""
    problems: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """True when the instance would not be written."""
        return bool(self.withheld or self.problems)


def flat(ds: Dataset) -> dict[str, tuple[str, str]]:
    """Every non-sequence element as where -> (keyword, value shown, shortened)."""
    out = {}
    for path, tag, vr, parent in walk(ds):
        if vr == "SQ":
            continue
        where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        elem = parent[tag]
        value = elem.value
        if isinstance(value, bytes):
            text = f"<{len(value)} bytes>"
        elif value is None:
            text = '""'
        else:
            text = str(value)
            if len(text) > MAX_VALUE:
                text = text[: MAX_VALUE - 3] + "..."
        out[where] = (elem.keyword or elem.name.replace(" ", ""), text)
    return out


def preview(  # noqa: PLR0917 - deidentify's own arguments, in its order
    ds: Dataset,
    settings: Settings,
    modality_label: str = "",
    subject: str | None = None,
    session: str | None = None,
    study: Identifiers | None = None,
) -> Preview:
    """De-identify a copy of ``ds`` and compare it with the original (``ds`` is not changed)."""
    before = flat(ds)
    out = copy.deepcopy(ds)
    withheld = ""
    problems: tuple[str, ...] = ()
    try:
        deidentify(out, settings, modality_label, subject, session, study)
    except WithheldError as exc:
        withheld = exc.reason
    except VerificationError as exc:
        problems = tuple(exc.problems)
    after = flat(out)
    changes = []
    for where in sorted(set(before) | set(after)):
        old, new = before.get(where), after.get(where)
        name = (new or old or ("", ""))[0]
        if old is None and new is not None:
            changes.append(Change(where, name, None, new[1], "added"))
        elif new is None and old is not None:
            changes.append(Change(where, name, old[1], None, "removed"))
        elif old is not None and new is not None:
            kind: Kind = "kept" if old == new else "replaced"
            changes.append(Change(where, name, old[1], new[1], kind))
    return Preview(changes, withheld, problems)
