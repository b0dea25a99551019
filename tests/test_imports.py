"""The import graph of crl_pipe: layered (import-linter contract in pyproject.toml), free of
cycles between any two modules, and with function-level imports only where a heavy dependency is
deferred, each saying why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest
from conftest import test_tool

REPO = Path(__file__).resolve().parents[1]


def import_cycles(package: str) -> list[list[str]]:
    """Every cycle of module imports in ``package`` (imports inside functions count too)."""
    graph = grimp.build_graph(package, cache_dir=None)
    edges = nx.DiGraph(
        (module, imported) for module in graph.modules for imported in graph.find_modules_directly_imported_by(module)
    )
    return [sorted(cycle) for cycle in nx.simple_cycles(edges)]


def function_level_imports(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of the import statements inside functions of a module's ``source``."""
    lines = source.splitlines()
    found = {
        node.lineno
        for fn in ast.walk(ast.parse(source))
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    return [(n, lines[n - 1]) for n in sorted(found)]


def test_the_layers_contract_is_kept():
    proc = subprocess.run(
        [str(test_tool("lint-imports")), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 1 kept, 0 broken." in proc.stdout


def test_no_module_imports_itself_round_a_cycle():
    assert import_cycles("crl_pipe") == []


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: a package whose two modules import each other inside functions."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b  # deferred\n")
    (pkg / "b.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic_pkg") == [["cyclic_pkg.a", "cyclic_pkg.b"]]
    sys.modules.pop("cyclic_pkg", None)


@pytest.mark.parametrize("path", sorted((REPO / "crl_pipe").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_function_level_imports_say_why(path):
    """A function-level import defers a heavy dependency (torch, scanpy, MuJoCo, ...), and its line
    says so; anything else belongs at the top of the module."""
    silent = [f"{n}: {text.strip()}" for n, text in function_level_imports(path.read_text()) if "#" not in text]
    assert silent == [], f"{path.relative_to(REPO)}: function-level imports without a reason: {silent}"


def test_the_import_check_reads_function_level_imports():
    source = "import os\n\ndef f():\n    import json\n    from x import y  # deferred: y is heavy\n"
    assert function_level_imports(source) == [
        (4, "    import json"),
        (5, "    from x import y  # deferred: y is heavy"),
    ]
