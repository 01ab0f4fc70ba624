"""The product's modules import one way: no import cycle among them (function-level imports included).

Every module of the product packages is parsed (AST, nothing imported): every ``import`` and
``from ... import`` anywhere in the file counts, inside functions and ``if TYPE_CHECKING:`` blocks too.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (its
``__init__``). A package ``__init__`` that re-exports its submodules is fine, as long as no submodule
imports its package ``__init__`` back. Importing ``a.b.c`` is an edge to ``a.b.c`` only (not to the
``__init__`` files Python runs on the way).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "workers", "db", "specs", "subsets")

Graph = dict[str, set[str]]


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under the given top-level packages."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The known modules one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in known else base)
    return targets


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """``{module: {product modules it imports}}``, from the source of every module."""
    files = module_files(root, packages)
    known = set(files)
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in _imported(node, name, is_package, known) if t in known)
        graph[name] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module, and modules that import themselves
    (Tarjan's algorithm, iterative), each sorted; sorted by their first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def describe(graph: Graph, component: list[str]) -> str:
    """One cycle of the component, as ``a -> b -> a`` (a shortest way back to its first module)."""
    members = set(component)
    first = component[0]
    paths = {first: [first]}
    queue = [first]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == first:
                return " -> ".join([*paths[node], first])
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return " -> ".join(component)


def test_no_import_cycles() -> None:
    started = time.perf_counter()
    graph = import_graph(ROOT)
    found = cycles(graph)
    elapsed = time.perf_counter() - started
    assert len(graph) > 100, "the product's modules were not found"
    assert not found, "import cycles among the product's modules:\n" + "\n".join(
        f"  {describe(graph, c)}   (component: {', '.join(c)})" for c in found)
    assert elapsed < 2.0, f"the import check took {elapsed:.2f} s"


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    """A tiny product package ``pkg`` without cycles (the cases below add one each)."""
    files = {
        "pkg/__init__.py": "from pkg.low import f\nfrom . import high\n",
        "pkg/low.py": "import json\n\ndef f():\n    return json\n",
        "pkg/high.py": "from pkg.low import f\nfrom pkg import low\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from ..low import f\nfrom . import other\n",
        "pkg/sub/other.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_sample_has_no_cycle(sample: Path) -> None:
    graph = import_graph(sample, ("pkg",))
    assert graph["pkg"] == {"pkg.low", "pkg.high"}
    assert graph["pkg.high"] == {"pkg.low"}
    assert graph["pkg.sub.leaf"] == {"pkg.low", "pkg.sub.other"}
    assert cycles(graph) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("def g():\n    from pkg.high import f\n", "pkg.high -> pkg.low -> pkg.high"),  # function-level
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.high\n", "pkg.high -> pkg.low -> pkg.high"),
    ("from pkg import f\n", "pkg -> pkg.low -> pkg"),  # a submodule importing its package __init__ back
    ("from . import low\n", "pkg.low -> pkg.low"),  # a self-import
])
def test_a_cycle_is_named(sample: Path, text: str, expected: str) -> None:
    low = sample / "pkg" / "low.py"
    low.write_text(low.read_text() + text)
    graph = import_graph(sample, ("pkg",))
    found = cycles(graph)
    assert len(found) == 1
    assert describe(graph, found[0]) == expected
