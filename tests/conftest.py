"""Shared fixtures: where the repository and the tools of this environment are."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout (where the Snakefile is)."""
    return REPO


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The ``snakemake`` executable of the environment running the tests."""
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        pytest.skip(f"snakemake is not installed beside {sys.executable} (pip install -e .[workflow])")
    return exe


def test_tool(name: str) -> Path:
    """The executable ``name`` beside this interpreter or on PATH (the test that needs it is
    skipped where it is missing)."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return exe
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e .[test])")
    return Path(found)


test_tool.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def snakefmt_bin() -> Path:
    return test_tool("snakefmt")


@pytest.fixture(scope="session")
def ruff_bin() -> Path:
    return test_tool("ruff")


@pytest.fixture(scope="session")
def cached_run(tmp_path_factory, venv_bin):
    """The demo workflow on a tiny config (tests/_tiny_workflow.py), run once per session with
    ``--cache`` and ``$SNAKEMAKE_OUTPUT_CACHE`` set to a folder of its own.

    Shared by the cache, rerun and SLURM tests: they read it, and copy it before changing it.
    """
    from types import SimpleNamespace

    import _tiny_workflow as tiny

    base = tmp_path_factory.mktemp("cached_run")
    folder, cache = base / "first", base / "cache"
    cache.mkdir()
    tiny.write_config(folder)
    proc = tiny.run_snakemake(folder, "--cores", "2", "--cache", env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
    if proc.returncode != 0:
        pytest.fail(f"snakemake --cache failed ({proc.returncode}):\n{tiny.failure(proc, folder)}", pytrace=False)
    return SimpleNamespace(folder=folder, cache=cache, proc=proc)
