"""Crash safety: a stage killed (SIGKILL) in the middle of writing leaves each artifact either
absent or complete, and rerunning it gives exactly the artifacts of an uninterrupted run.

Every stage runs through ``crl-pipe`` in a subprocess with a small hook (``RUNNER`` below) that
lets the write of one chosen artifact get half-way, then holds the process still: Parquet with
half of its rows written and no footer, h5ad with its data flushed but the HDF5 file not closed,
``model.pt`` and the report with half of their bytes, GraphML complete but not yet renamed.
The test waits for that moment, checks that the ``.tmp-`` file is on disk, kills the process
with SIGKILL (no cleanup runs), inspects what is left, reruns the stage and compares.

``test_unhooked_kill_during_a_large_write`` does the same without any hook: it kills ``ingest``
as soon as its temporary file appears while writing a larger screen.

A killed run leaves its hidden ``.<artifact>.tmp-<pid>`` file behind; nothing reads it, and the
rerun removes it once its own write of the artifact has succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _chain
import anndata as ad
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

RUNNER = r'''
"""Run one crl-pipe step, holding still half-way through writing the artifact $CRASH_TARGET."""
import io, os, sys, time
from pathlib import Path

TARGET = os.environ["CRASH_TARGET"]
MARKER = Path(os.environ["CRASH_MARKER"])


def is_target(path):
    return Path(os.fspath(path)).name.startswith(f".{TARGET}.tmp-")


def hold(what):
    # written beside, then renamed: the test must never see the marker before its text
    _write_text(MARKER.with_suffix(".part"), what)
    os.replace(MARKER.with_suffix(".part"), MARKER)
    time.sleep(600)  # the test kills us here


import pyarrow.parquet as pq
_write_table = pq.write_table
def write_table(table, where, *args, **kwargs):
    if isinstance(where, (str, os.PathLike)) and is_target(where):
        writer = pq.ParquetWriter(where, table.schema)
        writer.write_table(table.slice(0, max(1, table.num_rows // 2)))
        hold("parquet: half of the rows written, no footer")
    return _write_table(table, where, *args, **kwargs)
pq.write_table = write_table

import h5py
_close = h5py.File.close
def close(self):
    if self.id and self.mode == "r+" and is_target(self.filename):
        self.flush()
        hold("h5ad: data flushed, HDF5 file not closed")
    return _close(self)
h5py.File.close = close

_write_text = Path.write_text
def write_text(self, data, *args, **kwargs):
    if is_target(self):
        with open(self, "w", encoding="utf-8") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
        hold("text: half of the characters written")
    return _write_text(self, data, *args, **kwargs)
Path.write_text = write_text

if TARGET == "model.pt":
    import torch
    _save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and is_target(f):
            buffer = io.BytesIO()
            _save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as fh:
                fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                fh.flush()
            hold("torch: half of the bytes written")
        return _save(obj, f, *args, **kwargs)
    torch.save = save

_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if is_target(src):
        hold("complete, not yet renamed")
    return _replace(src, dst, *args, **kwargs)
os.replace = replace

import matplotlib
matplotlib.use("Agg")
from crl_pipe.cli import main
sys.exit(main(sys.argv[1:]))
'''

#: Stage -> the artifact whose write is interrupted (chosen so that each kind of writer is hit).
KILL_AT = {
    "ingest": "ingested.h5ad",  # after qc.parquet is complete
    "label": "interventions.parquet",
    "preprocess": "preprocessed.h5ad",
    "anchors": "anchors.parquet",
    "train": "model.pt",  # the first of six files
    "graph": "graph.graphml",  # after graph.parquet is complete
    "evaluate": "metrics.parquet",
    "report": "report.html",
}


def cli_args(stage: str) -> list[str]:
    """The ``crl-pipe`` arguments of a stage of :mod:`_chain` (mappings and lists as YAML/JSON)."""
    args = [stage]
    for key, value in _chain.STAGES[stage].items():
        args += ["--" + key.replace("_", "-"), json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return args


# ---- comparing artifacts ----------------------------------------------------------------------------
def same_artifact(a: Path, b: Path) -> None:
    """Assert that ``a`` holds what ``b`` holds (Parquet contents and metadata, AnnData, or bytes)."""
    if a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.equals(tb), f"{a}: contents differ"
        assert ta.schema.metadata == tb.schema.metadata, f"{a}: metadata differ"
    elif a.suffix == ".h5ad":
        x, y = ad.read_h5ad(a), ad.read_h5ad(b)
        assert x.shape == y.shape and x.X.dtype == y.X.dtype
        assert (sp.csr_matrix(x.X) != sp.csr_matrix(y.X)).nnz == 0, f"{a}: X differs"
        assert x.obs.equals(y.obs) and x.var.equals(y.var), f"{a}: obs/var differ"
        assert _plain(x.uns["crl_pipe"]) == _plain(y.uns["crl_pipe"]), f"{a}: provenance differs"
        assert set(x.layers) == set(y.layers)
    else:
        assert a.read_bytes() == b.read_bytes(), f"{a}: bytes differ"


def _plain(obj):
    """Nested uns content as plain Python (arrays become lists) so that it compares with ``==``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray | list | tuple):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def absent_or_complete(folder: Path, reference: Path, stage: str) -> dict[str, str]:
    """Each output of ``stage`` in ``folder`` is missing or equal to the reference; returns what is there."""
    state = {}
    for rel in _chain.OUTPUTS[stage]:
        path = folder / rel
        if path.exists():
            same_artifact(path, reference / rel)
            state[rel] = "complete"
        else:
            state[rel] = "absent"
    return state


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of every stage."""
    folder = tmp_path_factory.mktemp("reference")
    _chain.run_chain(folder)
    return folder


@pytest.fixture(scope="module")
def killed(reference, tmp_path_factory) -> dict[str, dict]:
    """Every stage started at once in a subprocess, each killed (SIGKILL) half-way through a write."""
    runner = tmp_path_factory.mktemp("runner") / "crash_runner.py"
    runner.write_text(RUNNER)
    started = {}
    for stage, target in KILL_AT.items():
        folder = tmp_path_factory.mktemp(f"killed_{stage}")
        for rel in _chain.INPUTS[stage]:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(reference / rel, folder / rel)
        marker = folder / "held.txt"
        env = {**os.environ, "CRASH_TARGET": target, "CRASH_MARKER": str(marker)}
        proc = subprocess.Popen(
            [sys.executable, str(runner), *cli_args(stage)],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[stage] = {"proc": proc, "folder": folder, "marker": marker, "target": target}
    deadline = time.monotonic() + 240
    for stage, run in started.items():
        proc, marker = run["proc"], run["marker"]
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        run["held"] = marker.read_text() if marker.exists() else None
        out_dir = (run["folder"] / _chain.OUTPUTS[stage][0]).parent
        target_dir = next((run["folder"] / r).parent for r in _chain.OUTPUTS[stage] if r.endswith(run["target"]))
        run["tmp_files_at_kill"] = sorted(p.name for p in target_dir.glob(f".{run['target']}.tmp-*"))
        alive = proc.poll() is None
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        run.update(killed=alive, returncode=proc.returncode, stderr=err, out_dir=out_dir)
    return started


# ---- the tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", list(KILL_AT))
def test_kill_mid_write_leaves_no_partial_artifact_and_rerun_matches(stage, killed, reference):
    run = killed[stage]
    folder = run["folder"]
    assert run["killed"] and run["held"], f"{stage} was not held mid-write (exit {run['returncode']}):\n{run['stderr']}"
    assert run["returncode"] == -signal.SIGKILL
    assert run["tmp_files_at_kill"], f"no .{run['target']}.tmp-* file on disk when {stage} was killed"

    # What the kill left: the interrupted artifact is absent, every other one absent or complete.
    state = absent_or_complete(folder, reference, stage)
    interrupted = next(rel for rel in _chain.OUTPUTS[stage] if rel.endswith(run["target"]))
    assert state[interrupted] == "absent", f"{interrupted} published although its write was interrupted"

    # The rerun of the same step completes and equals the uninterrupted run, artifact by artifact.
    _chain.run_chain(folder, [stage])
    for rel in _chain.OUTPUTS[stage]:
        assert (folder / rel).exists(), f"{rel} missing after the rerun"
        same_artifact(folder / rel, reference / rel)
    # The rerun cleaned up the killed run's temporary file: only the artifacts are left.
    leftovers = [p.name for p in run["out_dir"].rglob(".*.tmp-*")]
    assert not leftovers, leftovers


def test_every_stage_is_covered():
    assert set(KILL_AT) == set(_chain.STAGES) - {"simulate"}


def test_unhooked_kill_during_a_large_write(tmp_path):
    """No hook: kill ``ingest`` as soon as its temporary h5ad appears while it writes a larger screen."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 20_000, 800
    counts = sp.random(n_cells, n_genes, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    counts.data = rng.poisson(3.0, size=counts.nnz).astype(np.float32) + 1
    obs = {"perturbation": np.where(np.arange(n_cells) % 4 == 0, "non-targeting", "GENE1")}
    import pandas as pd

    screen = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]),
    )
    for name in ("killed", "clean"):
        (tmp_path / name).mkdir()
        screen.write_h5ad(tmp_path / name / "screen.h5ad")
    args = ["ingest", "--path", "screen.h5ad", "--out-h5ad", "out/ingested.h5ad", "--out-qc", "out/qc.parquet"]
    exe = str(Path(sys.executable).parent / "crl-pipe")
    proc = subprocess.Popen([exe, *args], cwd=tmp_path / "killed", stderr=subprocess.PIPE, text=True)
    out = tmp_path / "killed" / "out"
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(".ingested.h5ad.tmp-*")):
        time.sleep(0.005)
    caught = proc.poll() is None
    if caught:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    subprocess.run([exe, *args], cwd=tmp_path / "clean", check=True, capture_output=True)

    final = out / "ingested.h5ad"
    if final.exists():  # the write finished before the kill landed: it must then be complete
        same_artifact(final, tmp_path / "clean" / "out" / "ingested.h5ad")
    else:
        assert caught
    subprocess.run([exe, *args], cwd=tmp_path / "killed", check=True, capture_output=True)
    for name in ("ingested.h5ad", "qc.parquet"):
        same_artifact(out / name, tmp_path / "clean" / "out" / name)
