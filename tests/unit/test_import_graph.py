"""The package layout holds: no import cycle between modules of mpmcore/ and mpmlab/, counting imports made
inside functions (an import moved into a function to dodge a cycle is still a cycle), and the server core
never imports the dashboard."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mpmcore", "mpmlab")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import name`` counts as importing
    ``pkg.name`` when that is a module, else ``pkg``)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # "mpmcore.traffic.engine.X" -> its module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_mpmcore_or_mpmlab() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the packages
    assert cycles(graph) == []


def test_the_server_core_never_imports_the_dashboard() -> None:
    graph = import_graph()
    core_to_dashboard = {(m, t) for m, ts in graph.items() if m.startswith("mpmcore") for t in ts if t.startswith("mpmlab")}
    # mpmcore.cli starts the dashboard for `mpmlab dashboard` / bare flags: the one allowed edge
    assert {m for m, _ in core_to_dashboard} <= {"mpmcore.cli"}


def test_test_file_names_are_unique_across_layers():
    """pytest imports test files by their base name (no __init__.py in tests/): two layers with the
    same file name stop the whole suite at collection, which a run of one layer never shows."""
    tests = Path(__file__).resolve().parent.parent
    seen: dict[str, list[str]] = {}
    for f in tests.rglob("test_*.py"):
        seen.setdefault(f.name, []).append(str(f.relative_to(tests)))
    assert {n: p for n, p in seen.items() if len(p) > 1} == {}
