"""AAPM TG-263 structure nomenclature: the primary-name list (as data) and its conventions.

``check_name`` says whether an ROI name follows TG-263: a primary name from the list, or one
built by its conventions (targets such as ``PTV_4000`` or ``CTVn1``, ``<OAR>_PRV05`` margins,
``~`` partial and ``^`` qualifier suffixes, ``z`` for structures not evaluated), at most 16
characters. ``suggest`` proposes the closest names for one that does not.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from typing import Any

from uploader.datafiles import packaged_json

MAX_LENGTH = 16
_TARGET = re.compile(r"^(GTV|CTV|ITV|IGTV|ICTV|PTV)(n|p|sb|par|v|vas)?\d*(_[A-Za-z0-9]+)*$")
_PRV = re.compile(r"^(?P<base>.+?)_PRV(\d{2})?(?P<side>_[LR])?$")
_SUFFIXED = re.compile(r"^(?P<base>[^~^]+)(~|\^[A-Za-z0-9_]+)$")
_LATERALITY = re.compile(
    r"^(?:(left|lt|l|right|rt|r)[\s_-]+)?(.*?)(?:[\s_-]+(left|lt|l|right|rt|r))?$", re.I
)


@cache
def table() -> dict[str, Any]:
    """Return the packaged TG-263 list: {"version", "source", "names": [{"name", ...}]}.

    Raises:
        ConfigError: the packaged list is missing or unreadable (a broken installation).
    """
    data: dict[str, Any] = packaged_json("uploader.protocols", "data/tg263.json", "TG-263 list")
    return data


@cache
def primary_names() -> frozenset[str]:
    """Return the TG-263 primary names."""
    return frozenset(row["name"] for row in table()["names"])


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def check_name(name: str) -> str | None:
    """Return None if ``name`` follows TG-263, else the reason it does not."""
    if len(name) > MAX_LENGTH:
        return f"longer than {MAX_LENGTH} characters"
    if _valid(name):
        return None
    return "not a TG-263 primary name, target name or convention"


@cache
def _templates() -> re.Pattern[str]:
    return re.compile("|".join(table().get("patterns", [])) or "(?!)")


def _valid(name: str) -> bool:
    if name in primary_names() or _TARGET.match(name) or name.startswith("z"):
        return True
    if _templates().match(name):
        return True
    m = _PRV.match(name)
    if m and (_valid(m.group("base") + (m.group("side") or "")) or _valid(m.group("base"))):
        return True
    m = _SUFFIXED.match(name)
    return bool(m and _valid(m.group("base")))


#: Words staff write for a TG-263 prefix: lymph-node structures are LN_* in TG-263.
_WORD_PREFIXES = {"node": "LN", "nodes": "LN", "nodal": "LN", "lymph": "LN", "ln": "LN"}
_SPLIT = re.compile(r"[\s_\-^~.]+")


def _sharing_words(name: str, extra: tuple[str, ...], n: int) -> list[str]:
    """Names that share a whole word with ``name`` ("Parotid" -> Parotid_L), closest first;
    "Nodes" -> the LN_* names rather than "Nose" (a near spelling of another structure)."""
    words = {w.lower() for w in _SPLIT.split(name) if w}
    prefixes = {_WORD_PREFIXES[w] for w in words if w in _WORD_PREFIXES}
    pool = [*extra, *sorted(primary_names())]
    if prefixes:
        rest = " ".join(w for w in words if w not in _WORD_PREFIXES)
        candidates = [c for c in pool if c.split("_", 1)[0] in prefixes]
    else:
        rest = name.lower()
        candidates = [c for c in pool if words & {w.lower() for w in _SPLIT.split(c)}]
    ranked = sorted(
        candidates, key=lambda c: -difflib.SequenceMatcher(None, rest, c.lower()).ratio()
    )
    return ranked[:n]


def suggest(name: str, extra: tuple[str, ...] = (), n: int = 3) -> list[str]:
    """Return up to ``n`` valid names closest to ``name`` (``extra``: the protocol's own first)."""
    found: list[str] = []
    extra_keys = {_key(e): e for e in extra}
    if _key(name) in extra_keys:
        found.append(extra_keys[_key(name)])
    m = _LATERALITY.match(name.strip())
    side = (m.group(1) or m.group(3) or "")[:1].upper() if m else ""
    if m and side:
        # "Left Femoral Head" -> compare "femoral_head" with the bases of the *_L names
        base = re.sub(r"[\s-]+", "_", m.group(2).strip()).lower()
        lateral = {n[:-2].lower(): n for n in (*extra, *primary_names()) if n.endswith(f"_{side}")}
        for close in difflib.get_close_matches(base, list(lateral), n=n, cutoff=0.6):
            found.append(lateral[close])
    found += _sharing_words(name, extra, n)
    if not found:
        pool = {c.lower(): c for c in (*extra, *sorted(primary_names()))}
        for close in difflib.get_close_matches(name.lower(), list(pool), n=n, cutoff=0.6):
            found.append(pool[close])
    unique = list(dict.fromkeys(f for f in found if f != name))
    return unique[:n]
