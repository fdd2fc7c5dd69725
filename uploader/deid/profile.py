"""The PS3.15 Annex E confidentiality profile, loaded from data, resolved for a set of options.

The table in ``data/annex_e.json`` is generated from the standard by ``tools/gen_annex_e.py``;
its edition is recorded there. Nothing here lists attributes by hand: code only interprets
the action codes (X, Z, D, U, K, C and the conditional ones) for a value representation.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from uploader.datafiles import packaged_json


class Option(enum.StrEnum):
    """The profile options of Table E.1-1's columns (names as protocols spell them)."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"


#: CID 7050 "De-identification Method" codes (scheme DCM), one per profile / option.
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

DEFAULT_OPTIONS: frozenset[Option] = frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS})


class Op(enum.Enum):
    """What the engine does to one element, once the action code is resolved for its VR."""

    REMOVE = "remove"  # X
    EMPTY = "empty"  # Z: zero-length value (an empty sequence for SQ)
    DUMMY = "dummy"  # D: a dummy value consistent with the VR
    UID = "uid"  # U: keyed remap of the UID
    KEEP = "keep"  # K: kept (text is still cleaned of the patient's identifiers)
    CLEAN = "clean"  # C on text: identifiers removed from the value
    SHIFT = "shift"  # C on dates under the Modified Dates option: keyed per-patient shift
    RECURSE = "recurse"  # a kept sequence: its items are de-identified by the same profile


# Most permissive first: when several selected options name an attribute, the most retaining wins,
# since each option is an explicit permission granted by the protocol.
_OPTION_PRECEDENCE = ("K", "C", "U", "D", "Z", "X")
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_TAG_RE = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1: an attribute, its basic action and its per-option actions."""

    tag: str
    name: str
    basic: str
    options: dict[str, str] = field(default_factory=dict)

    def code_for(self, selected: frozenset[Option]) -> str:
        """Return the action code that applies under the selected options."""
        codes = [self.options[o] for o in selected if o in self.options]
        if not codes:
            return self.basic
        return min(codes, key=lambda c: _OPTION_PRECEDENCE.index(c[0]) if c[0] in "KCUDZX" else 9)

    def describe(self, selected: frozenset[Option]) -> str:
        """One line for the audit record: which action applies to this attribute and why."""
        code = self.code_for(selected)
        why = "basic profile" if code == self.basic else "option"
        return f"{self.tag} {self.name}: {code} ({why})"


@dataclass(frozen=True)
class SafePrivate:
    """One row of Table E.3.10-1: a private element safe to keep under Retain Safe Private."""

    group: int
    element_byte: int
    creator: str
    condition: str = ""


#: IOD requirement types under which an attribute may not be removed, or not be empty.
_PRESENT = frozenset({"1", "1C", "2", "2C"})
_NON_EMPTY = frozenset({"1", "1C"})


def resolve(code: str, vr: str, required: str | None = None) -> Op:
    """Turn an action code into the operation for an element of this VR.

    ``required``: the attribute's Type where it sits in its IOD (``iod.py``), when known.
    Conditional codes keep the IOD valid: X/D, X/Z and X/Z/D remove only what the IOD does not
    require; a Type 1 attribute gets a dummy, a Type 2 one an empty value (Z/D: a dummy for
    Type 1, else empty). Unknown requirement: the conservative choice that keeps the file
    valid (empty, or a dummy for X/D). A sequence whose action keeps it is walked: its items
    are de-identified by the same profile (U*: their references remapped).
    """
    is_seq = vr == "SQ"
    if "U" in code:  # U, X/Z/U*: remap; a sequence keeps its items, their UIDs remapped
        return Op.RECURSE if is_seq else (Op.UID if vr == "UI" else Op.EMPTY)
    if code == "K":
        return Op.RECURSE if is_seq else Op.KEEP
    if code == "C":
        if is_seq:
            return Op.RECURSE
        return Op.SHIFT if vr in _DATE_VRS else Op.CLEAN
    if code == "X":
        return Op.REMOVE
    if code in ("D", "Z/D") and (code == "D" or required in _NON_EMPTY):
        return Op.RECURSE if is_seq else Op.DUMMY
    if code in {"Z/D", "Z"}:
        return Op.EMPTY
    if code in ("X/D", "X/Z", "X/Z/D"):
        if required is not None and required not in _PRESENT:
            return Op.REMOVE  # the IOD does not require it here
        if required is None and code != "X/D":
            return Op.EMPTY  # unknown IOD: an empty value satisfies every one of them
        if code == "X/Z" and required not in _NON_EMPTY:
            return Op.EMPTY
        if code == "X/Z/D" and required not in _NON_EMPTY:
            return Op.EMPTY
        return Op.RECURSE if is_seq else Op.DUMMY
    return Op.EMPTY


def is_conditional(code: str) -> bool:
    """True for the action codes whose result depends on the IOD (X/Z, X/D, X/Z/D, Z/D)."""
    return "/" in code and "U" not in code


def _parse_tag(text: str) -> tuple[int, int] | None:
    """Return (value, mask) for a tag like (0008,0050) or (60xx,4000); None if not a tag."""
    m = _TAG_RE.match(text.strip())
    if not m:
        return None
    hexdigits = m.group(1) + m.group(2)
    value = int(hexdigits.replace("x", "0").replace("X", "0"), 16)
    mask = int("".join("0" if c in "xX" else "F" for c in hexdigits), 16)
    return value, mask


class Profile:
    """Table E.1-1 resolved for one set of options; answers "what to do with this tag?"."""

    def __init__(self, table: dict[str, Any], options: frozenset[Option] = DEFAULT_OPTIONS) -> None:
        self.edition: str = table["edition"]
        self.options = frozenset(Option(o) for o in options)
        self.rules: dict[int, Rule] = {}
        self._masked: list[tuple[int, int, Rule]] = []
        for row in table["attributes"]:
            rule = Rule(row["tag"], row["name"], row["basic"], dict(row.get("options", {})))
            parsed = _parse_tag(rule.tag)
            if parsed is None:
                continue  # rows such as "private attributes" are handled by the engine's policy
            value, mask = parsed
            if mask == 0xFFFFFFFF:
                self.rules[value] = rule
            else:
                self._masked.append((value, mask, rule))
        self.safe_private = [
            SafePrivate(
                int(r["group"], 16), int(r["element"], 16), r["creator"], r.get("condition", "")
            )
            for r in table.get("safe_private", [])
        ]
        # rows with a condition are never kept: we keep only what is safe without judgement
        self._safe = frozenset(
            (sp.group, sp.creator, sp.element_byte) for sp in self.safe_private if not sp.condition
        )
        self._cache: dict[tuple[int, str], Op | None] = {}
        self._kept: frozenset[int] | None = None

    def is_safe_private(self, group: int, creator: str, element_byte: int) -> bool:
        """True if Table E.3.10-1 lists this private element (its creator matters)."""
        return (group, creator, element_byte) in self._safe

    def rule(self, tag: int) -> Rule | None:
        """Return the Table E.1-1 row for this tag, or None when the table does not list it."""
        rule = self.rules.get(tag)
        if rule is not None:
            return rule
        for value, mask, r in self._masked:
            if tag & mask == value:
                return r
        return None

    @property
    def kept_tags(self) -> frozenset[int]:
        """Return the attributes this profile keeps whole (action K under its options)."""
        if self._kept is None:
            self._kept = frozenset(
                t for t, r in self.rules.items() if r.code_for(self.options) == "K"
            )
        return self._kept

    def code(self, tag: int) -> str | None:
        """Return the action code that applies to ``tag`` under the options (None: unlisted)."""
        rule = self.rule(tag)
        return None if rule is None else rule.code_for(self.options)

    def op(self, tag: int, vr: str) -> Op | None:
        """Return the operation for a public tag of this VR, or None when the table is silent.

        For a conditional code this is the choice without IOD knowledge; the engine asks
        ``resolve`` with the attribute's requirement instead."""
        key = (tag, vr)
        try:
            return self._cache[key]
        except KeyError:
            pass
        rule = self.rule(tag)
        result = None if rule is None else resolve(rule.code_for(self.options), vr)
        self._cache[key] = result
        return result

    def method_codes(self) -> list[tuple[str, str]]:
        """Return the CID 7050 (code value, meaning) pairs of the profile and options applied."""
        codes = [METHOD_CODES["basic"]]
        codes += [METHOD_CODES[o] for o in sorted(self.options)]
        return codes


@cache
def load_table() -> dict[str, Any]:
    """Return the packaged Annex E table (attributes, safe private list, edition).

    Raises:
        ConfigError: the packaged table is missing or unreadable (a broken installation).
    """
    data: dict[str, Any] = packaged_json("uploader.deid", "data/annex_e.json", "Annex E table")
    return data


def load_profile(options: frozenset[Option] | None = None) -> Profile:
    """Return the profile for these options (default: Retain Patient Characteristics)."""
    return Profile(load_table(), DEFAULT_OPTIONS if options is None else options)
