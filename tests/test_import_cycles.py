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
import functools
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
        for node in _import_statements(tree):
            edges.update(t for t in _imported(node, name, is_package, known) if t in known)
        graph[name] = edges
    return graph


def _import_statements(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth (functions, classes, if/try/with/match blocks);
    only statements are descended into, as an import is always one."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        for child in ast.iter_child_nodes(stack.pop()):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                stack.append(child)
    return found


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


# the stages of the packages whose modules form one way (DESIGN.md "Layout"): a module imports only stages
# of a lower number; a new module of these packages gets its number here
GRID_STAGES = {"read": 0, "spec": 0, "combos": 1, "validate_values": 2, "validate_init": 3, "validate_lottery": 3,
               "validate_ticket": 3, "validate": 4, "expand_lottery": 5, "expand": 6, "graph": 7, "ticket": 8}
REPORT_STAGES = {"bootstrap": 0, "cost": 0, "lottery": 0, "stamp": 0, "statistics": 1, "fmt": 2, "decision": 3,
                 "ranking": 4, "external": 5, "protocol": 5, "sections": 5, "plots": 5, "code_section": 6,
                 "efficiency_section": 6, "adaptive_section": 6, "ticket_section": 6, "render": 7}
STAGES = {"orchestrator.grid": GRID_STAGES, "orchestrator.report": REPORT_STAGES}


def stage_violations(graph: Graph, package: str, stages: dict[str, int]) -> list[str]:
    """Imports of ``package``'s submodules that go to a stage not lower than their own (or unknown modules)."""
    problems = []
    members = {m for m in graph if m.startswith(package + ".")}
    for module in sorted(members):
        name = module[len(package) + 1:]
        if name not in stages:
            problems.append(f"{module}: not in the stages of {package} (tests/test_import_cycles.py)")
            continue
        for target in sorted(graph[module] & members):
            other = target[len(package) + 1:]
            if other in stages and stages[other] >= stages[name]:
                problems.append(f"{module} (stage {stages[name]}) imports {target} (stage {stages[other]})")
    return problems


def ancestor_imports(graph: Graph) -> list[str]:
    """Modules that import the ``__init__`` of their own package or of a package above it."""
    found = []
    for module, targets in sorted(graph.items()):
        parts = module.split(".")
        for target in sorted(targets & {".".join(parts[:i]) for i in range(1, len(parts))}):
            found.append(f"{module} -> {target}")
    return found


@functools.cache
def product_graph() -> tuple[Graph, float]:
    """The product's import graph (parsed once per test session) and the CPU seconds it took."""
    started = time.process_time()  # CPU time: the budget holds on a loaded machine too
    graph = import_graph(ROOT)
    return graph, time.process_time() - started


def test_no_import_cycles() -> None:
    graph, parsed = product_graph()
    started = time.process_time()
    found = cycles(graph)
    elapsed = parsed + time.process_time() - started
    assert len(graph) > 100, "the product's modules were not found"
    assert not found, "import cycles among the product's modules:\n" + "\n".join(
        f"  {describe(graph, c)}   (component: {', '.join(c)})" for c in found)
    assert elapsed < 2.0, f"the import check took {elapsed:.2f} s of CPU time"


def test_packages_import_one_way() -> None:
    """The grid and the report flow one way through their stages; no submodule imports a package
    ``__init__`` above it (they import their siblings' submodules; callers outside use the re-exports)."""
    graph, _ = product_graph()
    problems = [p for package, stages in STAGES.items() for p in stage_violations(graph, package, stages)]
    assert graph["orchestrator.grid.expand"] >= {"orchestrator.grid.combos", "orchestrator.grid.expand_lottery"}
    assert not problems, "imports against the stages:\n  " + "\n  ".join(problems)
    assert not ancestor_imports(graph), "imports of a package __init__ from inside: " + ", ".join(
        ancestor_imports(graph))


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


def test_stage_and_ancestor_checks_fail(sample: Path) -> None:
    (sample / "pkg" / "sub" / "other.py").write_text("def g():\n    from pkg.sub import leaf\n    import pkg\n")
    graph = import_graph(sample, ("pkg",))
    assert stage_violations(graph, "pkg.sub", {"leaf": 1, "other": 0}) == [
        "pkg.sub.other (stage 0) imports pkg.sub.leaf (stage 1)"]
    assert stage_violations(graph, "pkg.sub", {"leaf": 1}) == [
        "pkg.sub.other: not in the stages of pkg.sub (tests/test_import_cycles.py)"]
    assert ancestor_imports(graph) == ["pkg.sub.other -> pkg"]


@pytest.mark.parametrize(("text", "expected"), [
    ("def g():\n    from pkg.high import f\n", "pkg.high -> pkg.low -> pkg.high"),  # function-level
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.high\n", "pkg.high -> pkg.low -> pkg.high"),
    ("class C:\n    def m(self):\n        try:\n            import pkg.high\n        except ImportError:\n"
     "            pass\n", "pkg.high -> pkg.low -> pkg.high"),  # in a method's try block
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
