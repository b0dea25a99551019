"""Two Snakemake runs of the same config and seed, as a user runs them, on shared read-only inputs.

- Determinism: every artifact of the two runs is identical: Parquet tables compare equal
  (``pyarrow.Table.equals``) with equal metadata (provenance included), and every file is also
  byte-for-byte identical, h5ad included (h5py records no object timestamps, checked below),
  ``model.pt``, GraphML and the HTML report too. The runs use different ``PYTHONHASHSEED``s, so
  an order that leaks from a ``set`` of strings into an artifact would show up here.
  Not compared: ``logs/`` and ``benchmarks/out/`` (wall-clock times by design) and ``.snakemake/``.
- Inputs are never modified: the inputs (screen, gene sets, truth) are ``chmod 0444`` in a
  ``0555`` folder; their sha256 and mtime are unchanged after both runs, and an inotify watch
  shows that every input was opened and closed read-only (root ignores permissions; inotify does not).
- No network: every Python process of the runs (Snakemake and each job) starts with a guard that
  refuses and logs any connection; the runs succeed and the log holds no attempt.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pyarrow.parquet as pq
import pytest
import yaml
from _guards import IN_CLOSE_NOWRITE, IN_OPEN, WRITES, FolderWatch, network_guard_env, read_guard_log

REPO = Path(__file__).resolve().parents[1]
SIM_PARAMS = {
    "n_programs": 3,
    "n_genes": 80,
    "anchors_per_program": 6,
    "n_control": 300,
    "cells_per_perturbation": 80,
    "n_doubles": 1,
    "seed": 5,
}
EXCLUDED = ("logs", "benchmarks", ".snakemake", "config.yaml")
RULES = [
    "ingest",
    "label_interventions",
    "preprocess",
    "build_anchors",
    "train_model",
    "recover_graph",
    "evaluate",
    "collect_benchmark",
    "write_report",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_inputs(folder: Path) -> list[Path]:
    from crl_pipe.simulate import simulate_screen, write_simulation

    screen = simulate_screen(**SIM_PARAMS)
    write_simulation(
        screen,
        out_h5ad=folder / "screen.h5ad",
        out_gmt=folder / "programs.gmt",
        out_truth_dir=folder / "truth",
        params=SIM_PARAMS,
    )
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _config(inputs: Path) -> dict:
    return {
        "datasets": {
            "screen": {
                "format": "h5ad",
                "path": str(inputs / "screen.h5ad"),
                "perturbation_key": "perturbation",
                "control_values": ["non-targeting"],
                "gene_sets": str(inputs / "programs.gmt"),
                "truth": {k: str(inputs / "truth" / f"{k}.parquet") for k in ("graph", "targets", "latents")},
                "models": ["linear"],
            }
        },
        "preprocess": {"n_top_genes": 50},
        "graph": {"n_refits": 3},
        "seed": 0,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        pytest.skip("snakemake is not installed beside the test interpreter")
    root = tmp_path_factory.mktemp("repro")
    inputs = root / "inputs"
    (inputs / "truth").mkdir(parents=True)
    files = _write_inputs(inputs)
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in files}
    folders = [inputs, inputs / "truth"]
    for p in files:
        p.chmod(0o444)
    for d in folders:
        d.chmod(0o555)
    watch = FolderWatch(folders) if FolderWatch.available() else None
    procs = {}
    try:
        for name, hash_seed in (("a", "1"), ("b", "2")):
            folder = root / name
            folder.mkdir()
            (folder / "config.yaml").write_text(yaml.safe_dump(_config(inputs)))
            env, guard_log = network_guard_env(root / f"guard_{name}")
            env["PYTHONHASHSEED"] = hash_seed
            cmd = [
                str(exe),
                "-s",
                str(REPO / "Snakefile"),
                "--directory",
                str(folder),
                "--configfile",
                str(folder / "config.yaml"),
                "--cores",
                "1",
            ]
            procs[name] = (
                subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                folder,
                guard_log,
            )
        results = {}
        for name, (proc, folder, guard_log) in procs.items():
            output, _ = proc.communicate(timeout=540)
            if proc.returncode != 0:
                logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("logs/**/*.log")))
                pytest.fail(f"run {name} failed ({proc.returncode}):\n{output[-3000:]}\n{logs}", pytrace=False)
            results[name] = {"folder": folder, "guard_log": guard_log}
        events = watch.events() if watch else None
    finally:
        if watch:
            watch.close()
        for d in folders:
            d.chmod(0o755)
        for p in files:
            p.chmod(0o644)
    after = {p: (sha256(p), p.stat().st_mtime_ns) for p in files}
    return {"inputs": inputs, "files": files, "before": before, "after": after, "events": events, **results}


def _artifacts(folder: Path) -> list[Path]:
    return sorted(
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in EXCLUDED
    )


@pytest.mark.workflow
def test_two_runs_give_identical_artifacts(runs):
    a, b = runs["a"]["folder"], runs["b"]["folder"]
    names = _artifacts(a)
    assert names == _artifacts(b)
    assert {n.suffix for n in names} >= {".parquet", ".h5ad", ".pt", ".json", ".graphml", ".html"}
    assert not [n for n in names if ".tmp-" in n.name], "temporary files left behind"
    for rel in names:
        if rel.suffix == ".parquet":
            ta, tb = pq.read_table(a / rel), pq.read_table(b / rel)
            assert ta.equals(tb), f"{rel}: table contents differ"
            assert ta.schema.metadata == tb.schema.metadata, f"{rel}: metadata (provenance) differ"
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel}: bytes differ"


@pytest.mark.workflow
def test_h5ad_artifacts_carry_no_timestamps(runs):
    """Why h5ad files are byte-identical: h5py does not track object times (ctime = mtime = 0)."""
    for path in sorted(runs["a"]["folder"].glob("results/**/*.h5ad")):
        times = []

        def record(name, obj, times=times):
            if isinstance(obj, h5py.Dataset):
                times.append((name, *_times(obj)))

        with h5py.File(path, "r") as f:
            f.visititems(record)
        assert times and all(c == 0 and m == 0 for _, c, m in times), (path, times[:3])


def _times(obj) -> tuple[int, int]:
    info = h5py.h5o.get_info(obj.id)
    return info.ctime, info.mtime


@pytest.mark.workflow
def test_inputs_are_never_modified(runs):
    assert runs["after"] == runs["before"], "an input changed (sha256 or mtime)"


@pytest.mark.workflow
def test_inputs_are_opened_read_only(runs):
    if runs["events"] is None:
        pytest.skip("inotify is not available on this platform")
    written = [(p, name) for p, mask in runs["events"] for bit, name in WRITES.items() if mask & bit]
    assert not written, f"inputs written to: {written}"
    opened = {p for p, mask in runs["events"] if mask & IN_OPEN}
    closed = {p for p, mask in runs["events"] if mask & IN_CLOSE_NOWRITE}
    for path in runs["files"]:
        assert path in opened and path in closed, f"{path} was never opened (read-only) by the runs"


@pytest.mark.workflow
def test_no_process_of_the_runs_reached_for_the_network(runs):
    for name in ("a", "b"):
        installed, blocked = read_guard_log(runs[name]["guard_log"])
        assert not blocked, f"network access attempted: {blocked}"
        assert any(os.path.basename(argv.split(" ")[0]) == "snakemake" for argv in installed), installed
        for rule in RULES:  # every job ran guarded
            assert any(argv.endswith(f".{rule}.py") for argv in installed), (rule, installed)


def test_folder_watch_sees_a_write_even_as_root(tmp_path):
    """The watch is not blind: opening a file for writing (without changing it) is reported."""
    if not FolderWatch.available():
        pytest.skip("inotify is not available on this platform")
    (tmp_path / "input.txt").write_text("x")
    (tmp_path / "input.txt").chmod(0o444)
    watch = FolderWatch([tmp_path])
    try:
        (tmp_path / "input.txt").read_text()
        if os.geteuid() == 0:  # root may open a 0444 file for writing; the watch must say so
            with open(tmp_path / "input.txt", "r+"):
                pass
        events = watch.events()
    finally:
        watch.close()
    masks = [mask for path, mask in events if path.name == "input.txt"]
    assert any(m & IN_CLOSE_NOWRITE for m in masks)
    if os.geteuid() == 0:
        assert any(m & bit for m in masks for bit in WRITES)
