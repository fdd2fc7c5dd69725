"""Dependencies point one way (docs/architecture.md): the core (``uploader``) imports neither
service, a service never imports the other, and the core's subpackages import each other without
a cycle. Every import counts, a function's own (the CLI imports per command) and a type checker's
too. The checker is tried on a small tree with each kind of wrong import, so it can fail."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

CORE, SERVICES = "uploader", ("identifiable_node", "anonymised_node")
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()  # none: protocols -> deid, never back


def _module(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Each module of ``packages`` under ``root`` -> the modules it imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = _module(root, path)
            here = name if path.name == "__init__.py" else name.rpartition(".")[0]
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: from the module's own package upwards
                        up = here.split(".")[: len(here.split(".")) - node.level + 1]
                        base = ".".join([*up, *([base] if base else [])])
                    names.add(base)
                    names |= {f"{base}.{alias.name}" for alias in node.names}
            found[name] = names
    return found


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go the wrong way: core -> a service, or a service -> the other."""
    problems = []
    for module, names in sorted(graph.items()):
        top = module.split(".")[0]
        banned = SERVICES if top == CORE else tuple(s for s in SERVICES if s != top)
        for name in sorted(names):
            if name.split(".")[0] in banned:
                problems.append(f"{module} imports {name}")
    return problems


def _unit(module: str) -> str:
    """The core's part a module belongs to: ``uploader.<subpackage>`` (or the module itself)."""
    return ".".join(module.split(".")[:2])


def package_cycles(graph: dict[str, set[str]], root: Path) -> list[list[str]]:
    """Cycles (strongly connected groups of more than one) among the core's subpackages
    (``uploader/deid/``, ``uploader/store/``, ...; the top-level modules are not parts)."""
    units = {_unit(m) for m in graph if (root / _unit(m).replace(".", "/")).is_dir()}
    units.discard(CORE)
    edges: dict[str, set[str]] = {u: set() for u in units}
    for module, names in graph.items():
        if _unit(module) not in units:
            continue
        for name in names:
            target = _unit(name)
            edge = (_unit(module), target)
            if target in units and target != edge[0] and edge not in KNOWN_CYCLE_EDGES:
                edges[edge[0]].add(target)
    return [group for group in _components(edges) if len(group) > 1]


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_core_imports_no_service_and_no_service_imports_the_other() -> None:
    graph = imports(ROOT, (CORE, *SERVICES))
    assert len(graph) > 100 and "uploader.node.commands" in graph
    assert "uploader.node.config" in graph["anonymised_node.config"]  # the walk sees imports
    assert wrong_way(graph) == []


def test_the_core_has_no_import_cycle_between_its_parts() -> None:
    graph = imports(ROOT, (CORE, *SERVICES))
    assert package_cycles(graph, ROOT) == []


def test_the_checks_catch_each_wrong_import(tmp_path: Path) -> None:
    files = {
        "uploader/__init__.py": "",
        "uploader/cli.py": "def main():\n    from identifiable_node.service import run\n",
        "uploader/a/__init__.py": "from uploader.b import x\n",
        "uploader/b/__init__.py": "x = 1\n",
        "uploader/b/late.py": "from ..a import y\n",  # relative, and closes a cycle a <-> b
        "identifiable_node/__init__.py": "import uploader.a\n",
        "anonymised_node/__init__.py": "",
        "anonymised_node/config.py": "from identifiable_node import config\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = imports(tmp_path, (CORE, *SERVICES))
    assert wrong_way(graph) == [
        "anonymised_node.config imports identifiable_node",
        "anonymised_node.config imports identifiable_node.config",
        "uploader.cli imports identifiable_node.service",
        "uploader.cli imports identifiable_node.service.run",
    ]
    assert package_cycles(graph, tmp_path) == [["uploader.a", "uploader.b"]]
