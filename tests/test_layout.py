"""The layout's rules, checked on the source: no import cycle, dependencies one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "analysis")


def module_names() -> dict[str, Path]:
    """Every module of the packages: dotted name -> file (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its code (a function-level
    import makes a dependency too; an ``if TYPE_CHECKING:`` import does not).  Importing
    ``a.b.c`` also runs ``a.b``'s ``__init__``, so that is an edge as well, unless the
    importer lives inside ``a.b``."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                wanted = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            for target in wanted:
                if target.split(".")[0] not in PACKAGES or target not in modules:
                    continue
                targets.add(target)
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in modules and not name.startswith(parent + "."):
                        targets.add(parent)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_modules():
    graph = import_graph()
    assert "study.config" in graph and "study.store.store" in graph  # the walk saw the packages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_service_never_imports_the_analysis_package_except_its_cli():
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] == "analysis")
        for name, targets in import_graph().items()
        if name.startswith("study") and not name.startswith("study.cli")
    }
    assert {name: t for name, t in offenders.items() if t} == {}


def test_the_model_and_the_config_know_no_trainer_service_or_store_reader():
    graph = import_graph()
    assert not {t for t in graph["study.model"] if t.startswith(("study.train", "study.tune", "study.cli"))}
    assert not {
        t for t in graph["study.config"] if t.startswith(("study.train", "study.tune", "study.cli", "study.model"))
    }


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
    graph = import_graph()
    assert find_cycle(graph) is None  # else there is no dependency order
    order: list[str] = []

    def place(name: str) -> None:
        if name not in order:
            for dep in sorted(graph[name]):
                place(dep)
            order.append(name)

    for name in sorted(graph):
        if name != "study.cli.__main__":  # running it runs the CLI
            place(name)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
