"""The core's packages depend one way: no cycle between `uploader.deid`, `uploader.protocols`
and the core's other packages, counting imports inside functions too (a lazy import is still
a dependency). The protocols use the de-identification's vocabulary (options, profiles,
pseudonym fields, the script language); the de-identification knows nothing of protocols.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import uploader

CORE = Path(uploader.__file__).parent


def _package(module: str) -> str | None:
    """The core package a module belongs to (``uploader.deid.engine`` -> ``deid``); None for
    modules outside the core or at its top level."""
    parts = module.split(".")
    if parts[0] != "uploader" or len(parts) < 2:
        return None
    return parts[1] if (CORE / parts[1]).is_dir() else None


@cache
def _edges() -> dict[str, set[str]]:
    """Package -> the other core packages its modules import (anywhere in the module)."""
    edges: dict[str, set[str]] = {}
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(CORE.parent).with_suffix("")
        source = _package(".".join(rel.parts))
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                target = _package(name)
                if target is not None and target != source:
                    edges.setdefault(source, set()).add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(edges.get(node, ())):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(edges):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_core_packages_have_no_import_cycle() -> None:
    edges = _edges()
    assert "deid" in edges["protocols"]  # the graph is read at all: protocols use deid
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def test_deid_imports_nothing_of_protocols() -> None:
    assert "protocols" not in _edges().get("deid", set())


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycle({"deid": {"protocols"}, "protocols": {"deid"}}) == ["deid", "protocols", "deid"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
