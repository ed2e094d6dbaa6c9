"""The package's import graph (issue 20): no circles between modules, and the layers of
ARCHITECTURE.md hold (the engine imports no web, database or job code).

Every import counts, function-level ones included: an import hidden inside a function to
dodge a circle still couples the two modules, so it is a circle here. Imports under
``if TYPE_CHECKING:`` are left out (they never run). A package's ``__init__`` is a module
like the others; importing ``a.b.c`` is an edge to ``a.b.c`` only (not to its parents).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "backend"
PKG = "fvaudit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in (ROOT / PKG).rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes anywhere in the tree, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project modules it imports."""
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.add(sub if sub in mods else base)
        out[name] = {t for t in targets if t in mods and t != name}
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_circle_finder_finds_a_circle_and_nothing_else():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(g) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_function_level_and_relative_imports_are_edges(tmp_path, monkeypatch):
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .x import f\n")
    (pkg / "sub" / "x.py").write_text("def f():\n    from fvaudit.sub import y\n")
    (pkg / "sub" / "y.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fvaudit.sub import x\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    g = edges(modules())
    assert g["fvaudit.sub"] == {"fvaudit.sub.x"}
    assert g["fvaudit.sub.x"] == {"fvaudit.sub.y"}
    assert g["fvaudit.sub.y"] == set()          # TYPE_CHECKING only


def test_no_import_circles_between_modules():
    found = circles(edges(modules()))
    assert not found, "import circles (cut each at the right seam):\n" + "\n".join(" ↔ ".join(c) for c in found)


#: a kind's own endpoints (``jobs/kinds/<kind>/routes.py`` and its response models) sit on the API's
#: shared pieces (auth, serialisation): the one place the job layer may import the API
KIND_ENDPOINTS = (".routes", ".schemas")


@pytest.mark.parametrize("layer, forbidden", [
    ("fvaudit.engine", ("fvaudit.api", "fvaudit.db", "fvaudit.jobs", "fvaudit.worker", "fvaudit.cli",
                        "fvaudit.registration", "fvaudit.store", "fvaudit.config")),
    ("fvaudit.jobs", ("fvaudit.api", "fvaudit.cli")),
    ("fvaudit.db", ("fvaudit.api", "fvaudit.jobs", "fvaudit.engine")),
])
def test_layers_import_only_what_is_below_them(layer, forbidden):
    g = edges(modules())
    bad = sorted(f"{m} → {t}" for m, ts in g.items() if m == layer or m.startswith(layer + ".")
                 if not (m.startswith("fvaudit.jobs.kinds.") and m.endswith(KIND_ENDPOINTS))
                 for t in ts if any(t == f or t.startswith(f + ".") for f in forbidden))
    assert not bad, "\n".join(bad)
