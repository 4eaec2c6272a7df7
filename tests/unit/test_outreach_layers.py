"""Outreach's floors: imports run only downward (api → shell → store → core), ``schemas`` and
``settings`` sit at the bottom beside core, nothing imports in a circle (TYPE_CHECKING imports
included), and outreach never imports another service."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "services.outreach"

# What each floor may import from outreach (besides itself).
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "core": set(),
    "schemas": {"core"},
    "store": {"core", "schemas", "settings"},
    "shell": {"core", "store", "schemas", "settings"},
    "api": {"core", "store", "shell", "schemas", "settings"},
    "app": {"core", "store", "shell", "api", "schemas", "settings"},
    "migrations": {"store"},
}


def _modules() -> dict[str, Path]:
    base = ROOT / "services" / "outreach"
    found = {}
    for path in base.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _floor(name: str) -> str:
    return name.removeprefix(PACKAGE + ".").split(".")[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {i for i in _imports(path, name) if i in modules and i != name}
        for name, path in modules.items()
    }


def test_imports_run_only_downward() -> None:
    wrong = []
    for name, imported in _graph().items():
        if name == PACKAGE:
            continue
        floor = _floor(name)
        for other in imported:
            if other == PACKAGE:
                continue
            target = _floor(other)
            if target != floor and target not in ALLOWED[floor]:
                wrong.append(f"{name} imports {other}")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_outreach_imports_no_other_service() -> None:
    others = [
        f"{name} imports {i}"
        for name, path in _modules().items()
        for i in _imports(path, name)
        if i.startswith(("services.scoring", "services.ingest"))
    ]
    assert others == []
