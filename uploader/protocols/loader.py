"""Loading a protocol: YAML, then the schema, then the checks a schema cannot express.

Every problem is reported as ``FILE:LINE: message`` (the line of the offending key, found in
the YAML node tree); nothing here ever shows a traceback.

A protocol file is bounded before it is parsed into objects: at most ``MAX_PROTOCOL_BYTES``,
nested at most ``MAX_NESTING`` levels, and without YAML aliases (a few nested aliases stand for
billions of nodes). The limits are checked on the parser's event stream, which needs no
recursion, so a 5000-deep file is one clear error instead of a ``RecursionError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from uploader.deid.profile import load_profile
from uploader.deid.script.check import check
from uploader.deid.script.parser import parse
from uploader.deid.script.syntax import ScriptError
from uploader.errors import ConfigError
from uploader.protocols.model import Protocol, Structure

Loc = tuple[str | int, ...]
MAX_PROTOCOL_BYTES = 1 << 20  # a real protocol is a few kB
MAX_NESTING = 32  # mappings and lists inside each other (a real protocol needs 5)


@dataclass(frozen=True)
class Problem:
    """One finding of ``check``: where it is and what is wrong."""

    path: Path
    line: int
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.path}:{self.line}: {tag}{self.message}"


def _line(root: yaml.Node | None, loc: Loc) -> int:
    """Return the 1-based line of the node at ``loc`` (or of the deepest ancestor found)."""
    node, line = root, 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == part:
                    line, nxt = key.start_mark.line + 1, value
                    break
            node = nxt
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    return line


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROTOCOL_BYTES + 1)
        if len(raw) > MAX_PROTOCOL_BYTES:
            raise ConfigError(
                f"{path}: too large for a protocol (at most {MAX_PROTOCOL_BYTES >> 10} kB)"
            )
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the protocol: {exc}") from exc


def check_shape(path: Path, text: str) -> None:
    """Refuse YAML nested deeper than ``MAX_NESTING`` or holding aliases, before any object
    is built (the parser's events need no recursion).

    Raises:
        ConfigError: the first such place, as FILE:LINE: message.
        yaml.YAMLError: not valid YAML (the caller reports it).
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise ConfigError(
                    f"{path}:{line}: nested more than {MAX_NESTING} levels "
                    "deep: a protocol is a few levels of keys and lists"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                f"{path}:{line}: YAML aliases (*{event.anchor}) are not "
                "accepted in a protocol: write the value out"
            )


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    text = _read(path)
    try:
        check_shape(path, text)
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc


def _schema_problems(
    path: Path, data: Any, root: yaml.Node | None
) -> tuple[Protocol | None, list[Problem]]:
    if not isinstance(data, dict):
        return None, [Problem(path, 1, "a protocol is a YAML mapping (id: ..., name: ...)")]
    try:
        return Protocol.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "(top level)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (see docs/protocols.md for the keys a protocol has)"
            problems.append(Problem(path, _line(root, loc), f"{where}: {msg}"))
        return None, problems


def _structures(p: Protocol) -> Iterator[tuple[Loc, Structure]]:
    if p.structures is None:
        return
    for section in ("required", "optional"):
        for i, s in enumerate(getattr(p.structures, section)):
            yield ("structures", section, i), s


def semantic_problems(p: Protocol) -> Iterator[tuple[Loc, str, str]]:
    """Yield (location, message, severity) for what the schema alone cannot catch."""
    yield from _structure_problems(p)
    yield from _other_problems(p)


def _structure_problems(p: Protocol) -> Iterator[tuple[Loc, str, str]]:
    from uploader.protocols.nomenclature import check_name

    tg263 = p.structures is not None and p.structures.naming == "tg263"
    names: dict[str, Loc] = {}
    for loc, s in _structures(p):
        if s.name is None:
            continue
        if s.name in names:
            yield (*loc, "name"), f"structure {s.name!r} is listed twice", "error"
        names[s.name] = loc
        reason = check_name(s.name) if tg263 else None
        if reason:
            yield (*loc, "name"), f"{s.name!r} is not a TG-263 name: {reason}", "warning"
    claimed: dict[str, str] = {}
    for loc, s in _structures(p):
        for j, syn in enumerate(s.synonyms):
            if syn in names and syn != s.name:
                msg = f"synonym {syn!r} is itself the name of another structure"
                yield (*loc, "synonyms", j), msg, "error"
            elif claimed.get(syn, s.name) != s.name:
                msg = f"synonym {syn!r} is claimed by {claimed[syn]!r} too"
                yield (*loc, "synonyms", j), msg, "error"
            claimed[syn] = s.name or ""
    forbidden = p.structures.forbidden if p.structures else []
    for i, f in enumerate(forbidden):
        if f in names or f in claimed:
            yield ("structures", "forbidden", i), f"{f!r} is both wanted and forbidden", "error"


def _other_problems(p: Protocol) -> Iterator[tuple[Loc, str, str]]:
    mods = p.modalities
    for i, m in enumerate(mods.forbidden):
        if m in mods.required or m in mods.optional:
            yield ("modalities", "forbidden", i), f"{m} is both expected and forbidden", "error"
    for key, count in p.series.items():
        if count.max is not None and count.min > count.max:
            yield ("series", key), f"{key}: min {count.min} is above max {count.max}", "error"
    for i, rule in enumerate(p.rules):
        if rule.min is not None and rule.max is not None and rule.min > rule.max:
            yield ("rules", i), f"{rule.attribute}: min is above max", "error"
    if p.structures and "RTSTRUCT" not in (*mods.required, *mods.optional):
        msg = "structures are listed but RTSTRUCT is not an expected modality"
        yield ("structures",), msg, "warning"


def _script_problems(path: Path, p: Protocol, root: yaml.Node | None) -> list[Problem]:
    """The project script's errors, at their line in the protocol file."""
    deid = p.deidentify
    if not deid.script:
        return []
    first = _line(root, ("deidentify", "script"))  # the `script: |` line; the text starts below
    try:
        script = parse(deid.script)
    except ScriptError as exc:
        return [
            Problem(
                path, first + exc.line, f"deidentify.script:{exc.line}:{exc.col}: {exc.message}"
            )
        ]
    findings = check(
        script,
        variables=frozenset(deid.variables),
        lookups=frozenset(deid.lookups),
        profile=load_profile(frozenset(deid.options)),
    )
    return [
        Problem(
            path, first + f.line, f"deidentify.script:{f.line}:{f.col}: {f.message}", f.severity
        )
        for f in findings
    ]


def check_protocol(path: Path) -> tuple[Protocol | None, list[Problem]]:
    """Validate a protocol file completely; return it (None if invalid) and every problem.

    Raises:
        ConfigError: unreadable or not YAML (one line, with the YAML error's line).
    """
    data, root = _parse(path)
    protocol, problems = _schema_problems(path, data, root)
    if protocol is None:
        return None, problems
    for loc, message, severity in semantic_problems(protocol):
        problems.append(Problem(path, _line(root, loc), message, severity))
    problems += _script_problems(path, protocol, root)
    if any(p.severity == "error" for p in problems):
        return None, problems
    return protocol, problems


def load_protocol(path: Path) -> Protocol:
    """Load a protocol for use; warnings are ignored here (``uploader protocol check`` shows them).

    Raises:
        ConfigError: not a valid protocol; the message is the first problem, as FILE:LINE: message.
    """
    protocol, problems = check_protocol(path)
    if protocol is None:
        errors = [p for p in problems if p.severity == "error"]
        more = (
            f" (and {len(errors) - 1} more: run `uploader protocol check`)"
            if len(errors) > 1
            else ""
        )
        raise ConfigError(f"{errors[0]}{more}")
    return protocol
