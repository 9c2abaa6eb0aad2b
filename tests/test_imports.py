"""No import circle between rnncli's modules, counting every import: at module level,
inside functions and under TYPE_CHECKING. A circle hides which module is the lower one,
and the floors the package is growing into need a direction."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rnncli"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The rnncli modules ``path`` imports (``from rnncli import x`` names module x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: _imports(path, known) - {name, "rnncli"} for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between rnncli's subpackages (its floors): rnncli.x.y counts as
    rnncli.x; a module at the top counts as itself."""
    def floor(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(floor(module), set()).update(floor(t) for t in targets)
    return {name: targets - {name} for name, targets in out.items()}


def test_no_import_circle_between_modules():
    assert circles(import_graph()) == []


def test_no_import_circle_between_subpackages():
    # lint-imports (in .ci/run) holds the floors' order; this holds the weaker promise
    # without it, and says which floors tie when it breaks.
    floors = package_graph(import_graph())
    assert {"rnncli.core", "rnncli.inference", "rnncli.training", "rnncli.cli"} <= set(floors)
    assert circles(floors) == []


def test_a_circle_is_found_through_an_import_inside_a_function():
    """The check itself: a two-module circle, one edge of it inside a function."""
    graph = {"a": {"b"}, "b": set(), "c": set()}
    assert circles(graph) == []
    graph["b"].add("a")
    assert circles(graph) == [["a", "b"]]
    # ... and one between floors, through modules that form no circle themselves
    modules = {"p.a.x": {"p.b.y"}, "p.b.y": set(), "p.b.z": {"p.a.w"}, "p.a.w": set()}
    assert circles(modules) == []
    assert circles(package_graph(modules)) == [["p.a", "p.b"]]
    real = import_graph()
    # imported inside Predictor.load
    assert "rnncli.inference.onnx_engine" in real["rnncli.inference.predict"]
