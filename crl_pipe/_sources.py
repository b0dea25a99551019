"""Which source files of ``crl_pipe`` make up a part of it, read from their import statements.

The code behind a cached rule (``simulate_screen``, ``simulate_robot``) is the rule's subpackage and
every ``crl_pipe`` module it imports, directly or not, at module level or inside a function. The
imports are read with :mod:`ast`, not executed, so that the Snakemake process stays free of the
scientific stack; a name imported from a package (``from ..io import write_gmt``) counts as the
module that package takes it from (``io/_gmt.py``), not as the whole package.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from ._provenance import source_digest

ROOT = Path(__file__).resolve().parent


def code_digest(*parts: str) -> str:
    """:func:`crl_pipe._provenance.source_digest` of ``parts`` and of every module they import.

    Parameters
    ----------
    parts
        Subpackages (``"simulate"``) or module files (``"_provenance.py"``), relative to the
        package folder.
    """
    return source_digest(*import_closure(*parts))


def import_closure(*parts: str) -> list[str]:
    """The module files (relative to the package folder, sorted) of ``parts`` and of every
    ``crl_pipe`` module they import, transitively."""
    todo: list[Path] = []
    for part in parts:
        path = ROOT / part
        if path.is_dir():
            todo += sorted(path.rglob("*.py"))
        elif path.is_file():
            todo.append(path)
        else:
            raise ValueError(f"crl_pipe has no subpackage or module {part!r} (looked for {path})")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imported(path)
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


@cache
def _imported(path: Path) -> tuple[Path, ...]:
    """The ``crl_pipe`` module files that the module at ``path`` imports (relative imports only:
    the package imports itself relatively throughout)."""
    package = _package_of(path)
    found: set[Path] = set()
    for node in _relative_imports(path):
        base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        for alias in node.names:
            found.add(_module_file([*base, alias.name]) or _defining_file(base, alias.name))
    return tuple(f for f in found if f is not None)


#: A relative import statement (``from .x import a, b`` or ``from .. import (a,\n b)``), anywhere in a line.
_RELATIVE_IMPORT = re.compile(r"^[ \t]*(from[ \t]+\.[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*))", re.MULTILINE)

_COMMENT = re.compile(r"#[^\n]*")


@cache
def _relative_imports(path: Path) -> tuple[ast.ImportFrom, ...]:
    """The relative import statements of a module, at module level or in functions.

    Found by a pattern and parsed one by one: parsing whole modules would cost the Snakemake process
    tenths of a second. A match inside a string only adds a file, which errs on the side of rerunning.
    """
    found = []
    for match in _RELATIVE_IMPORT.finditer(path.read_text(encoding="utf-8")):
        try:
            found += [n for n in ast.parse(_COMMENT.sub("", match.group(1))).body if isinstance(n, ast.ImportFrom)]
        except SyntaxError:  # a statement-like line of a docstring
            continue
    return tuple(found)


def _package_of(path: Path) -> list[str]:
    """The package a module file belongs to, as parts relative to the root (``[]`` for ``crl_pipe``)."""
    return list(path.parent.relative_to(ROOT).parts)


def _module_file(parts: list[str]) -> Path | None:
    """The file of module ``parts`` (a package's ``__init__.py``), or ``None`` where there is none."""
    path = ROOT.joinpath(*parts)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if parts and candidate.is_file():
            return candidate
    return ROOT / "__init__.py" if not parts else None


def _defining_file(module: list[str], name: str) -> Path | None:
    """The file that defines ``name`` of ``module``: for a package that re-exports it
    (``from ._gmt import write_gmt`` in its ``__init__``), the module it comes from."""
    file = _module_file(module)
    if file is None or file.name != "__init__.py":
        return file
    for node in _relative_imports(file):
        if node.level == 1 and any(a.name == name for a in node.names):
            return _module_file([*module, *(node.module.split(".") if node.module else [name])]) or file
    return file
