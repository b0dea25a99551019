"""Snakemake's between-workflow output cache: simulate_screen (``cache: "omit-software"``) runs
once per simulation setting, and every other workflow folder takes its outputs from the cache.

``snakemake --cache`` with ``$SNAKEMAKE_OUTPUT_CACHE`` set: the first folder (the session's
``cached_run``) moves the outputs into the cache and links them back; a second folder with the
same config finds them there and does not run the rule.
"""

from __future__ import annotations

import ast
import os

import _tiny_workflow as tiny
import pytest

from crl_pipe import _sources
from crl_pipe._provenance import source_digest
from crl_pipe._sources import code_digest, import_closure


@pytest.mark.workflow
def test_first_run_stores_the_simulation_in_the_cache(cached_run):
    output = cached_run.proc.stdout + cached_run.proc.stderr
    for path in tiny.SIMULATED:
        assert f"Moving output file {path} to cache." in output, tiny.failure(cached_run.proc, cached_run.folder)
        link = cached_run.folder / path
        assert link.is_symlink() and link.resolve().parent == cached_run.cache.resolve()


@pytest.mark.workflow
def test_second_workflow_takes_the_simulation_from_the_cache(cached_run, tmp_path):
    folder = tmp_path / "second"
    tiny.write_config(folder)
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(cached_run.cache)}
    entries = sorted(os.listdir(cached_run.cache))
    proc = tiny.run_snakemake(folder, *tiny.SIMULATED, "--cores", "1", "--cache", env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, tiny.failure(proc, folder)
    for path in tiny.SIMULATED:
        assert f"Symlinking output file {path} from cache." in output, output[-3000:]
        assert (folder / path).resolve() == (cached_run.folder / path).resolve(), path
    assert "to cache." not in output, "the second workflow stored instead of fetching"
    # The rule did not run: its script never started (no log) and the cache is unchanged.
    log = folder / "logs" / "simulate_screen" / f"{tiny.SIM}.log"
    assert not log.exists() or log.stat().st_size == 0, log.read_text()
    assert sorted(os.listdir(cached_run.cache)) == entries


@pytest.mark.workflow
def test_a_new_simulation_setting_misses_the_cache(cached_run, tmp_path):
    folder = tmp_path / "other_seed"
    config = {**tiny.CONFIG, "simulations": {tiny.SIM: {**tiny.CONFIG["simulations"][tiny.SIM], "seed": 2}}}
    tiny.write_config(folder, config)
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(cached_run.cache)}
    proc = tiny.run_snakemake(folder, *tiny.SIMULATED, "--cores", "1", "--cache", env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, tiny.failure(proc, folder)
    assert f"Moving output file {tiny.SCREEN} to cache." in output, "a new seed must run the simulation"
    assert (folder / tiny.SCREEN).resolve() != (cached_run.folder / tiny.SCREEN).resolve()


def test_source_digest_names_the_code_behind_a_rule():
    first = source_digest("simulate", "io", "_provenance.py")
    assert first == source_digest("simulate", "io", "_provenance.py")
    assert len(first) == 64 and first != source_digest("simulate")
    with pytest.raises(ValueError, match="no subpackage or module 'simulat'"):
        source_digest("simulat")


def test_simulator_code_is_the_simulators_and_what_they_import():
    """SIMULATOR_CODE (rules/common.smk) hashes crl_pipe.simulate and every module it imports, found
    from the import statements: the writers it calls are in, readers and models it never reaches are out."""
    files = import_closure("simulate")
    assert {"simulate/_write.py", "simulate/_robot.py", "_provenance.py", "_constants.py"} <= set(files)
    # writers reached through the io package (``from ..io import write_gmt, ...``), not the whole package
    assert {"io/_gmt.py", "io/_h5ad.py", "io/_artifacts.py", "io/_chunked.py", "io/_lerobot.py"} <= set(files)
    assert not {"io/__init__.py", "io/_variables.py", "pipeline.py", "models/linear.py"} & set(files)
    assert not [f for f in files if f.startswith(("pp/", "tl/", "kinds/", "report/"))]
    assert code_digest("simulate") == source_digest(*files)
    assert 'SIMULATOR_CODE = code_digest("simulate")' in (tiny.REPO / "rules" / "common.smk").read_text()


def test_import_scan_finds_every_relative_import():
    """The fast scan of import statements finds what a full parse of each module finds."""
    for path in sorted(_sources.ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        full = {_import_key(n) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
        assert full <= {_import_key(n) for n in _sources._relative_imports(path)}, path


def _import_key(node: ast.ImportFrom) -> tuple:
    return node.level, node.module, tuple(a.name for a in node.names)
