"""Every stage of the pipeline on one simulated screen, through the step functions of
:mod:`crl_pipe.pipeline` (what the Snakemake rules and the ``crl-pipe`` command call).

Paths are relative to the working directory, as in a Snakemake run, so that two runs in two
folders record the same provenance. Importable (``STAGES``, ``run_chain``) and runnable as a
script in a subprocess: ``python tests/_chain.py <folder> [<stage> ...]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A screen big enough that writing its artifacts takes a moment, small enough to run in seconds.
SIM_PARAMS: dict[str, Any] = {
    "n_programs": 3,
    "n_genes": 120,
    "anchors_per_program": 6,
    "n_control": 600,
    "cells_per_perturbation": 150,
    "n_doubles": 1,
    "seed": 3,
}
SIM = "resources/sim"
RES = "results/demo"
MODEL = f"{RES}/linear"


def _kwargs() -> dict[str, dict[str, Any]]:
    return {
        "simulate": {
            "out_h5ad": f"{SIM}/screen.h5ad",
            "out_gmt": f"{SIM}/programs.gmt",
            "out_truth_dir": f"{SIM}/truth",
            "params": SIM_PARAMS,
        },
        "ingest": {"path": f"{SIM}/screen.h5ad", "out_h5ad": f"{RES}/ingested.h5ad", "out_qc": f"{RES}/qc.parquet"},
        "label": {
            "ingested": f"{RES}/ingested.h5ad",
            "out": f"{RES}/interventions.parquet",
            "options": {"perturbation_key": "perturbation", "control_values": ["non-targeting"], "min_cells": 20},
        },
        "preprocess": {
            "ingested": f"{RES}/ingested.h5ad",
            "interventions": f"{RES}/interventions.parquet",
            "out": f"{RES}/preprocessed.h5ad",
            "gene_sets": f"{SIM}/programs.gmt",
            "options": {"n_top_genes": 60},
        },
        "anchors": {
            "preprocessed": f"{RES}/preprocessed.h5ad",
            "out": f"{RES}/anchors.parquet",
            "gene_sets": f"{SIM}/programs.gmt",
        },
        "train": {
            "preprocessed": f"{RES}/preprocessed.h5ad",
            "interventions": f"{RES}/interventions.parquet",
            "anchors": f"{RES}/anchors.parquet",
            "out_dir": MODEL,
            "model": "linear",
            "seed": 0,
        },
        "graph": {
            "preprocessed": f"{RES}/preprocessed.h5ad",
            "interventions": f"{RES}/interventions.parquet",
            "anchors": f"{RES}/anchors.parquet",
            "model_dir": MODEL,
            "out_parquet": f"{MODEL}/graph.parquet",
            "out_graphml": f"{MODEL}/graph.graphml",
            "n_refits": 3,
            "seed": 0,
        },
        "evaluate": {
            "graph": f"{MODEL}/graph.parquet",
            "targets": f"{MODEL}/targets.parquet",
            "latents": f"{MODEL}/latents.parquet",
            "out": f"{MODEL}/metrics.parquet",
            "truth": {k: f"{SIM}/truth/{k}.parquet" for k in ("graph", "targets", "latents")},
        },
        "report": {
            "dataset": "demo",
            "out_html": f"{RES}/report.html",
            "artifacts": {
                "interventions": f"{RES}/interventions.parquet",
                "qc": f"{RES}/qc.parquet",
                "anchors": f"{RES}/anchors.parquet",
                "models": {"linear": MODEL},
                "truth_graph": f"{SIM}/truth/graph.parquet",
            },
            "config": {"dataset": {"name": "demo", "perturbation_key": "perturbation"}, "seed": 0},
        },
    }


#: Stage -> keyword arguments of its step function (paths relative to the run folder).
STAGES: dict[str, dict[str, Any]] = _kwargs()

#: Stage -> the artifacts it writes (relative paths).
OUTPUTS: dict[str, list[str]] = {
    "simulate": [f"{SIM}/screen.h5ad", f"{SIM}/programs.gmt"]
    + [f"{SIM}/truth/{k}.parquet" for k in ("graph", "targets", "latents")],
    "ingest": [f"{RES}/qc.parquet", f"{RES}/ingested.h5ad"],
    "label": [f"{RES}/interventions.parquet"],
    "preprocess": [f"{RES}/preprocessed.h5ad"],
    "anchors": [f"{RES}/anchors.parquet"],
    "train": [
        f"{MODEL}/{name}"
        for name in (
            "model.pt",
            "model.json",
            "latents.parquet",
            "targets.parquet",
            "loadings.parquet",
            "training.parquet",
        )
    ],
    "graph": [f"{MODEL}/graph.parquet", f"{MODEL}/graph.graphml"],
    "evaluate": [f"{MODEL}/metrics.parquet"],
    "report": [f"{RES}/report.html"],
}

#: Stage -> the files it reads that an earlier stage wrote (or that are inputs).
INPUTS: dict[str, list[str]] = {
    "ingest": [f"{SIM}/screen.h5ad"],
    "label": [f"{RES}/ingested.h5ad"],
    "preprocess": [f"{RES}/ingested.h5ad", f"{RES}/interventions.parquet", f"{SIM}/programs.gmt"],
    "anchors": [f"{RES}/preprocessed.h5ad", f"{SIM}/programs.gmt"],
    "train": [f"{RES}/preprocessed.h5ad", f"{RES}/interventions.parquet", f"{RES}/anchors.parquet"],
    "graph": [f"{RES}/preprocessed.h5ad", f"{RES}/interventions.parquet", f"{RES}/anchors.parquet"]
    + [f"{MODEL}/model.pt", f"{MODEL}/model.json"],
    "evaluate": [f"{MODEL}/graph.parquet", f"{MODEL}/targets.parquet", f"{MODEL}/latents.parquet"]
    + [f"{SIM}/truth/{k}.parquet" for k in ("graph", "targets", "latents")],
    "report": [
        f"{RES}/interventions.parquet",
        f"{RES}/qc.parquet",
        f"{RES}/anchors.parquet",
        f"{SIM}/truth/graph.parquet",
    ]
    + [
        f"{MODEL}/{n}"
        for n in (
            "model.json",
            "latents.parquet",
            "targets.parquet",
            "loadings.parquet",
            "training.parquet",
            "graph.parquet",
            "metrics.parquet",
        )
    ],
}


def step(stage: str) -> Callable[..., None]:
    from crl_pipe import pipeline

    return getattr(pipeline, stage)


def run_chain(folder: str | os.PathLike, stages: list[str] | None = None) -> None:
    """Run ``stages`` (default: all, in order) with ``folder`` as the working directory."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for stage in stages or list(STAGES):
            step(stage)(**STAGES[stage])
    finally:
        os.chdir(previous)


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    run_chain(sys.argv[1], sys.argv[2:] or None)
