"""cxrlib's import graph has no cycle (module-level and function-level imports both count).

Function-level ("lazy") imports count because they only postpone a circle, they do not remove
it: the modules still cannot be understood, tested or moved one without the other. The graph
is read with ``ast`` from the source files, so nothing is imported (no TensorFlow start-up).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cxrlib

PACKAGE_DIR = Path(cxrlib.__file__).parent


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """{module: cxrlib modules it imports anywhere in its source}.

    ``from cxrlib.x import y`` counts as importing ``cxrlib.x.y`` when that is a module, else
    ``cxrlib.x``. A package's ``__init__`` is not counted as imported by its submodules
    (Python runs it, but it only holds docs and re-exports here; its own imports are edges).
    """
    paths = {module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            for t in targets:
                while t and t not in paths:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("cxrlib") and t != "cxrlib":
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_reads_function_level_imports(tmp_path):
    pkg = tmp_path / "cxrlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cxrlib import b\n")
    (pkg / "b.py").write_text("from cxrlib.a import f\n")
    graph = import_graph(pkg)
    assert graph["cxrlib.a"] == {"cxrlib.b"} and graph["cxrlib.b"] == {"cxrlib.a"}
    assert find_cycle(graph) is not None


def test_no_import_cycle_in_cxrlib():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_io_and_evaluation_stand_below_training():
    graph = import_graph()
    assert graph["cxrlib.io"] == set()
    assert "cxrlib.training" not in graph["cxrlib.evaluation"]
