"""Held-out singles on a real screen: every single-target perturbation held out in turn, predicted by
steering from prior knowledge alone, beside the no-change, mean-change and gene-embedding baselines.

    .venv/bin/snakemake --cores 2 --configfile config/schraivogel.yaml --replace-workflow-config \\
        results/schraivogel/anchors.parquet
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/heldout_real.py results/schraivogel --config config/schraivogel.yaml

Reads the workflow's ``preprocessed.h5ad``, ``interventions.parquet`` and ``anchors.parquet`` of one
dataset, fits ``--model`` with the config's parameters without each single's
cells (:func:`crl_pipe.tl.hold_out`) and scores it with :func:`crl_pipe.tl.evaluate_singles`. A single
without a prior route to a program (e.g. an enhancer that no gene set lists and the panel does not
measure) is reported as skipped, with the reason. Prints per-single scores and the medians as
Markdown tables; ``--out`` writes the long table as CSV.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from crl_pipe import tl
from crl_pipe._errors import CrlPipeError
from crl_pipe.io import read_h5ad, read_table
from crl_pipe.models import CRLData, get_model

METRICS = ["pearson_delta_top20", "pearson_delta_all", "r2_delta_top20", "r2_delta_all", "mmd"]


def load(results: Path) -> CRLData:
    return CRLData.from_artifacts(
        read_h5ad(results / "preprocessed.h5ad"),
        read_table(results / "interventions.parquet", "interventions"),
        read_table(results / "anchors.parquet", "anchors"),
    )


def model_params(config: dict, model: str) -> dict:
    """The config's parameters of ``model`` (its programs, data-driven or not, are in anchors.parquet)."""
    return dict((config.get("models") or {}).get(model) or {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results/<dataset> folder of a workflow run")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", default="linear")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="CSV of every score")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text())
    data = load(args.results)
    params = model_params(config, args.model)
    singles = sorted({label for label in data.perturbations if "+" not in label})
    frames, skipped = [], {}
    for label in singles:
        start = time.perf_counter()
        try:
            model = get_model(args.model)(**params).fit(tl.hold_out(data, [label]), seed=args.seed)
            scores = tl.evaluate_singles(model, data, [label], seed=args.seed)
        except CrlPipeError as err:  # no prior route: say why, go on
            skipped[label] = str(err)
            continue
        frames.append(scores.assign(seconds=time.perf_counter() - start))
        print(label, f"{time.perf_counter() - start:.1f} s", flush=True)
    table = pd.concat(frames, ignore_index=True).astype({"intervention": str})
    if args.out:
        table.to_csv(args.out, index=False)
    wide = table.pivot_table(index=["intervention", "predictor"], columns="metric", values="value")
    print(wide[[m for m in METRICS if m in wide]].round(3).reset_index().to_markdown(index=False))
    medians = table.groupby(["predictor", "metric"])["value"].median().unstack()
    print(medians[[m for m in METRICS if m in medians]].round(3).to_markdown())
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")


if __name__ == "__main__":
    main()
