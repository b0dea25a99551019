"""The demo workflow on a tiny config, shared by the cache, rerun and SLURM tests.

One simulated screen with ground truth, analysed end to end (the embedded demo, shrunk), in a
folder of its own: ``snakemake -s <repo>/Snakefile --directory <folder> --configfile
<folder>/config.yaml``. Every path in the config is relative to the folder, so that a copy of a
finished folder is a finished run too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SIM = "tiny"
DATASET = "sim"
MODEL = "linear"
SCREEN = f"resources/simulated/{SIM}/screen.h5ad"

CONFIG = {
    "simulations": {
        SIM: {
            "n_programs": 3,
            "n_genes": 80,
            "anchors_per_program": 6,
            "n_control": 300,
            "cells_per_perturbation": 80,
            "n_doubles": 1,
            "seed": 1,
        }
    },
    "datasets": {
        DATASET: {
            "format": "h5ad",
            "path": SCREEN,
            "perturbation_key": "perturbation",
            "control_values": ["non-targeting"],
            "gene_sets": f"resources/simulated/{SIM}/programs.gmt",
            "truth": {
                "graph": f"resources/simulated/{SIM}/truth/graph.parquet",
                "targets": f"resources/simulated/{SIM}/truth/targets.parquet",
                "latents": f"resources/simulated/{SIM}/truth/latents.parquet",
            },
            "models": [MODEL],
        }
    },
    "preprocess": {"n_top_genes": 50},
    "graph": {"n_refits": 3},
}

#: The outputs of rule simulate_screen (cached between workflows with --cache).
SIMULATED = [
    SCREEN,
    *(
        f"resources/simulated/{SIM}/{name}"
        for name in ("programs.gmt", "truth/graph.parquet", "truth/targets.parquet", "truth/latents.parquet")
    ),
]

#: Every Parquet artifact of the run.
PARQUET = [
    *(f"resources/simulated/{SIM}/truth/{name}.parquet" for name in ("graph", "targets", "latents")),
    *(f"results/{DATASET}/{name}.parquet" for name in ("qc", "interventions", "anchors")),
    *(
        f"results/{DATASET}/{MODEL}/{name}.parquet"
        for name in ("latents", "targets", "loadings", "training", "graph", "metrics")
    ),
    "results/benchmark.parquet",
]

#: The jobs a new raw input reruns: everything from ingest on, once each.
AFTER_INGEST = {
    "ingest": 1,
    "label_interventions": 1,
    "preprocess": 1,
    "build_anchors": 1,
    "train_model": 1,
    "recover_graph": 1,
    "evaluate": 1,
    "write_report": 1,
    "collect_benchmark": 1,
    "all": 1,
}


def write_config(folder: Path, config: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config or CONFIG, sort_keys=False))


def snakemake_args(folder: Path, *args: str) -> list[str]:
    """``snakemake <args> -s <repo>/Snakefile --directory <folder> --configfile <folder>/config.yaml``.

    ``args`` come first: targets must precede options that take several values (``--cache``).
    """
    folder = folder.resolve()
    return [
        str(SNAKEMAKE),
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
    ]


def run_snakemake(
    folder: Path, *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_args(folder, *args),
        cwd=folder.parent,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from the first 'Job stats' table of a (dry-)run; {} when nothing to do."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        assert "Nothing to be done" in output, output[-3000:]
        return {}
    counts: dict[str, int] = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def failure(proc: subprocess.CompletedProcess | None, folder: Path, output: str | None = None, n: int = 4000) -> str:
    """A failed run's output and the tails of its step logs, for an assertion message."""
    text = output if output is not None else (proc.stdout + proc.stderr if proc else "")
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("logs/**/*.log")))
    return f"{text[-n:]}\n{logs}"
