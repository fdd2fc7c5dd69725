"""Running a script on one instance, after the profile and before the verifier.

Reads see the **input** (a snapshot of the attributes the script reads, taken before the
profile), so ``hashUID[(0020,000D)]`` agrees with the profile and a script that copies an
identifier (``(0010,0010) := (0010,0020)``) really copies it, and is caught by the verifier.
Writes and deletions change the output. Nothing here logs a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from uploader.deid.elements import private_creators
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.deid.script.functions import FUNCTIONS
from uploader.deid.script.syntax import (
    Assign,
    Call,
    Condition,
    Delete,
    Describe,
    Do,
    Echo,
    Expr,
    If,
    Script,
    Str,
    TagPath,
    TagStep,
    Var,
)
from uploader.errors import WithheldError


def _step_tags(ds: Dataset, step: TagStep) -> list[int]:
    if step.creator is not None:
        creators = private_creators(ds)
        return [
            (group << 16) | (block << 8) | step.element
            for (group, block), creator in creators.items()
            if group == step.group and creator == step.creator
        ]
    exact = step.exact
    if exact is not None:
        return [exact] if exact in ds else []
    return [t for t in ds.keys() if step.matches(t)]


def _items(ds: Dataset, tag: int, item: int | None) -> list[Dataset]:
    value = ds[tag].value
    if not isinstance(value, Sequence):
        return []
    if item == -1:
        return list(value)
    return [value[item]] if item is not None and 0 <= item < len(value) else []


def find(ds: Dataset, path: TagPath) -> Iterator[tuple[Dataset, int]]:
    """Yield (parent, tag) for every element the path names in ``ds``."""
    yield from _find(ds, path.steps)
    if path.anywhere:
        for tag in list(ds.keys()):
            if ds.get_item(tag).VR == "SQ" or _is_seq(ds, tag):
                for item in _items(ds, tag, -1):
                    yield from find(item, path)


def _is_seq(ds: Dataset, tag: int) -> bool:
    try:
        return isinstance(ds[tag].value, Sequence)
    except Exception:
        return False


def _find(ds: Dataset, steps: tuple[TagStep, ...]) -> Iterator[tuple[Dataset, int]]:
    step, rest = steps[0], steps[1:]
    for tag in _step_tags(ds, step):
        if not rest:
            yield ds, tag
        else:
            for item in _items(ds, tag, step.item):
                yield from _find(item, rest)


def text_of(ds: Dataset, tag: int) -> str:
    """The value of an element as script text (multi-values joined by backslash)."""
    value = ds[tag].value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def snapshot(ds: Dataset, paths: list[TagPath]) -> dict[str, str | None]:
    """Read the paths a script reads from the input, before the profile changes it."""
    out: dict[str, str | None] = {}
    for path in paths:
        hit = next(find(ds, path), None)
        out[path.text] = None if hit is None else text_of(*hit)
    return out


class SessionNumbers:
    """XNAT's visit numbering: the n-th session of a subject with a label template, per study."""

    def __init__(self) -> None:
        self.labels: dict[tuple[str, str], dict[str, int]] = {}

    def number(self, subject: str, template: str, study_key: str) -> int:
        """Return the study's visit number (the same on every call for the same study)."""
        known = self.labels.setdefault((subject, template), {})
        if study_key not in known:
            known[study_key] = len(known) + 1
        return known[study_key]


@dataclass
class Run:
    """One script run on one instance."""

    out: Dataset
    original: dict[str, str | None]
    variables: dict[str, str]
    pseudo: Pseudonymiser
    produced_uids: set[str] = field(default_factory=set)
    lookups: dict[str, dict[str, str]] = field(default_factory=dict)
    sessions: SessionNumbers | None = None
    study_key: str = ""
    script_name: str = "script"
    echoes: list[str] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)

    def execute(self, script: Script) -> None:
        """Run every statement in order; raises WithheldError on ``reject``."""
        self.script_name = script.name
        for st in script.statements:
            self._statement(st)

    def _statement(self, st: Any) -> None:
        if isinstance(st, If):
            branch = st.then if self._test(st.condition) else st.otherwise
            if branch is not None:
                self._statement(branch)
        elif isinstance(st, Assign):
            value = self.value(st.value)
            if isinstance(st.target, Var):
                self.variables[st.target.name] = value
            else:
                self._assign(st.target, value)
        elif isinstance(st, Delete):
            for parent, tag in list(find(self.out, st.path)):
                del parent[tag]
        elif isinstance(st, Do):
            self._do(st.call)
        elif isinstance(st, Echo):
            self.echoes.append(self.value(st.value))
        elif isinstance(st, Describe):
            self.variables.setdefault(st.name, "")

    def _test(self, c: Condition) -> bool:
        left = self.value(c.left)
        if c.op is None:
            return bool(left) and left.lower() != "false"
        right = self.value(c.right) if c.right is not None else ""
        if c.op == "=":
            return left == right
        if c.op == "!=":
            return left != right
        matched = re.fullmatch(right, left) is not None
        return matched if c.op == "~" else not matched

    def value(self, e: Expr) -> str:
        """Evaluate an expression to its string value."""
        if isinstance(e, Str):
            return e.value
        if isinstance(e, Var):
            return self.variables.get(e.name, "")
        if isinstance(e, TagPath):
            if e.text in self.written:
                return self.written[e.text]
            return self.original.get(e.text) or ""
        if e.name == "isPresent":
            path = e.args[0]
            assert isinstance(path, TagPath)
            return "true" if self.original.get(path.text) is not None else ""
        return FUNCTIONS[e.name].impl(self, [self.value(a) for a in e.args])

    def _do(self, call: Call) -> None:
        if call.name == "removeAllPrivateTags":
            self.out.remove_private_tags()
        elif call.name == "mapReferencedUIDs":
            for path in call.args:
                assert isinstance(path, TagPath)
                for parent, tag in list(find(self.out, path)):
                    uids = [self.hash_uid(v) for v in text_of(parent, tag).split("\\") if v]
                    parent[tag] = DataElement(tag, "UI", uids if len(uids) > 1 else "".join(uids))
        elif call.name != "retainPrivateTags":  # applied before the profile, at settings build
            self.value(call)

    def _assign(self, path: TagPath, value: str) -> None:
        self.written[path.text] = value
        *inner, last = path.steps
        parents = [self.out]
        for step in inner:
            parents = [
                i for p in parents for t in _step_tags(p, step) for i in _items(p, t, step.item)
            ]
        for parent in parents:
            if last.creator is not None:
                block = parent.private_block(last.group, last.creator, create=True)
                tag = block.get_tag(last.element)
                vr = parent[tag].VR if tag in parent else "LO"
                parent[tag] = DataElement(tag, vr, value)
                continue
            public = (last.group << 16) | last.element
            vr = parent[public].VR if public in parent else str(dictionary_VR(public))
            parent[public] = DataElement(public, vr, value.split("\\") if "\\" in value else value)

    # ------------------------------------------------------------- function support

    def hash_uid(self, uid: str) -> str:
        """Keyed UID: the profile's own function, so a UID it already mapped stays as it is."""
        if not uid or uid in self.produced_uids:
            return uid
        return self.pseudo.uid(uid)

    def lookup(self, table: str, key: str) -> str:
        """The protocol's lookup table value for ``key`` ("" when absent)."""
        return self.lookups.get(table, {}).get(key, "")

    def session_label(self, template: str) -> str:
        """Fill ``##`` (as many digits as #) with the subject's visit number for this study."""
        m = re.search(r"#+", template)
        if not m:
            return template
        numbers = self.sessions or SessionNumbers()
        n = numbers.number(self.variables.get("subject", ""), template, self.study_key)
        return template[: m.start()] + str(n).zfill(len(m.group())) + template[m.end() :]

    def reject(self, message: str) -> str:
        """Withhold the instance, with the script's reason."""
        raise WithheldError(
            f"rejected by {self.script_name}: {message or 'no reason given'}", "script"
        )
