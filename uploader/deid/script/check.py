"""Load-time checks of a parsed script: names, arities, regexes, tags and variables.

Everything that could fail at run time because of how the script is written fails here, with
its line and column. Warnings point at statements the profile makes moot.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import dictionary_has_tag

from uploader.deid.profile import Op, Profile
from uploader.deid.script.functions import FUNCTIONS, PATH_ARGUMENTS
from uploader.deid.script.parser import parse
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
    ScriptError,
    Str,
    TagPath,
    TagStep,
    Var,
)

BUILTIN_VARIABLES = frozenset({"project", "subject", "session", "modalityLabel", "site"})


@dataclass(frozen=True)
class Finding:
    """A load-time error or warning at (line, col)."""

    line: int
    col: int
    message: str
    severity: str = "error"


def _walk_expr(e: Expr | None) -> Iterator[Expr]:
    if e is None:
        return
    yield e
    if isinstance(e, Call):
        for a in e.args:
            yield from _walk_expr(a)


def _exprs(st: object) -> Iterator[Expr]:
    if isinstance(st, If):
        yield from _walk_expr(st.condition.left)
        yield from _walk_expr(st.condition.right)
        yield from _exprs(st.then)
        if st.otherwise is not None:
            yield from _exprs(st.otherwise)
    elif isinstance(st, Assign):
        yield from _walk_expr(st.value)
    elif isinstance(st, Do):
        yield from _walk_expr(st.call)
    elif isinstance(st, Echo):
        yield from _walk_expr(st.value)


def _actions(st: object) -> Iterator[object]:
    if isinstance(st, If):
        yield from _actions(st.then)
        if st.otherwise is not None:
            yield from _actions(st.otherwise)
    else:
        yield st


def reads(script: Script) -> list[TagPath]:
    """Every tag path whose input value the script reads (snapshotted before the profile)."""
    found: dict[str, TagPath] = {}
    for st in script.statements:
        for e in _exprs(st):
            if isinstance(e, TagPath):
                found.setdefault(e.text, e)
    return list(found.values())


def retained_private(script: Script) -> list[TagStep]:
    """The private elements ``retainPrivateTags`` keeps (added to the allow-list)."""
    steps = []
    for st in script.statements:
        for e in _exprs(st):
            if isinstance(e, Call) and e.name == "retainPrivateTags":
                steps += [a.steps[-1] for a in e.args if isinstance(a, TagPath)]
    return steps


def uses(script: Script, name: str) -> bool:
    """True if the script calls function ``name`` or reads variable ``name``."""
    for st in script.statements:
        for e in _exprs(st):
            if isinstance(e, Call | Var) and e.name == name:
                return True
    return False


def check(
    script: Script,
    *,
    variables: frozenset[str] = frozenset(),
    lookups: frozenset[str] = frozenset(),
    profile: Profile | None = None,
) -> list[Finding]:
    """Return every error and warning of a parsed script, in order."""
    findings: list[Finding] = []
    known = set(BUILTIN_VARIABLES | variables)
    for st in script.statements:
        if isinstance(st, Describe):
            known.add(st.name)
            continue
        for e in _exprs(st):
            findings += _check_expr(e, known, lookups)
        if isinstance(st, If):
            findings += _check_condition(st.condition)
        for action in _actions(st):
            findings += _check_action(action, profile)
        if isinstance(st, Assign) and isinstance(st.target, Var):
            known.add(st.target.name)
    return findings


def _check_expr(e: Expr, known: set[str], lookups: frozenset[str]) -> list[Finding]:
    if isinstance(e, Var) and e.name not in known:
        return [
            Finding(e.line, e.col, f"unknown variable {e.name!r} (describe it, or assign it first)")
        ]
    if not isinstance(e, Call):
        return []
    f = FUNCTIONS.get(e.name)
    if f is None:
        close = difflib.get_close_matches(e.name, list(FUNCTIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [Finding(e.line, e.col, f"unknown function {e.name!r}{hint}")]
    n = len(e.args)
    if n < f.min_args or (f.max_args is not None and n > f.max_args):
        want = (
            str(f.min_args)
            if f.max_args == f.min_args
            else (
                f"{f.min_args} or more" if f.max_args is None else f"{f.min_args} to {f.max_args}"
            )
        )
        return [Finding(e.line, e.col, f"{e.name} takes {want} argument(s), not {n}")]
    out = []
    if e.name in PATH_ARGUMENTS:
        for a in e.args:
            if not isinstance(a, TagPath):
                out.append(Finding(a.line, a.col, f"{e.name} takes tags, not values"))
            elif e.name == "retainPrivateTags" and a.steps[-1].creator is None:
                out.append(
                    Finding(a.line, a.col, "retainPrivateTags needs (gggg,{creator}ee) tags")
                )
    pattern = e.args[f.regex_arg] if f.regex_arg is not None else None
    if isinstance(pattern, Str):
        out += _regex(pattern)
    if e.name == "lookup" and isinstance(e.args[0], Str) and e.args[0].value not in lookups:
        out.append(Finding(e.line, e.col, f"no lookup table {e.args[0].value!r} in the protocol"))
    if e.name == "newUID":
        out.append(
            Finding(
                e.line,
                e.col,
                "newUID gives a new UID every run: output is not reproducible",
                "warning",
            )
        )
    return out


def _regex(s: Str) -> list[Finding]:
    try:
        re.compile(s.value)
    except re.error as exc:
        return [Finding(s.line, s.col, f"regular expression does not compile: {exc}")]
    return []


def _check_condition(c: Condition) -> list[Finding]:
    if c.op in ("~", "!~") and isinstance(c.right, Str):
        return _regex(c.right)
    return []


def _check_action(action: object, profile: Profile | None) -> list[Finding]:
    if isinstance(action, Do) and action.call.name not in (
        "reject",
        "retainPrivateTags",
        "removeAllPrivateTags",
        "mapReferencedUIDs",
    ):
        return [
            Finding(action.line, action.col, f"{action.call.name}[...] on its own does nothing")
        ]
    if isinstance(action, Assign) and isinstance(action.target, TagPath):
        t = action.target
        if t.anywhere or any(s.mask != 0xFFFFFFFF for s in t.steps):
            return [
                Finding(t.line, t.col, "cannot assign to a wildcard or +/ path: name one attribute")
            ]
        last = t.steps[-1]
        if last.creator is None and not dictionary_has_tag((last.group << 16) | last.element):
            return [Finding(t.line, t.col, f"{t.text} is not a known attribute: its VR is unknown")]
    if isinstance(action, Delete) and profile is not None and len(action.path.steps) == 1:
        exact = action.path.steps[0].exact
        rule = profile.rule(exact) if exact is not None else None
        if rule is not None and profile.op(exact or 0, "LO") in (Op.REMOVE, Op.EMPTY):
            code = rule.code_for(profile.options)
            return [
                Finding(
                    action.line,
                    action.col,
                    f"{action.path.text} {rule.name}: the profile already removes it ({code})",
                    "warning",
                )
            ]
    return []


def load_script(
    source: str,
    name: str = "<script>",
    *,
    variables: frozenset[str] = frozenset(),
    lookups: frozenset[str] = frozenset(),
) -> Script:
    """Parse and check a script for use; raises ScriptError at the first error."""
    script = parse(source, name)
    for f in check(script, variables=variables, lookups=lookups):
        if f.severity == "error":
            raise ScriptError(f.line, f.col, f.message)
    return script
