"""Warm-started refits of the deep models: the graph step's cost and its stability, warm vs from scratch.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_refits.py --model sparse_vae --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_refits.py --model causal_vae --seeds 3

For each seed: a simulated screen (``--programs`` programs, ``--cells`` cells per perturbation),
one fit of the model at its defaults (timed), then :func:`crl_pipe.tl.recover_graph` with
``--refits`` half-sample refits twice from the same fit: warm (``refit_epochs: auto``, the
default) and from scratch (``refit_epochs: null``, every refit a full training run). Prints the
graph step's time over the fit's for both, each edge's stability both ways, and whether the
confident edges agree. Torch runs on one thread.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from crl_pipe import tl
from crl_pipe.simulate import screen_to_crl_data, simulate_screen


def run_seed(args: argparse.Namespace, seed: int) -> tuple[dict, pd.DataFrame]:
    screen = simulate_screen(
        n_programs=args.programs, n_control=args.controls, cells_per_perturbation=args.cells, seed=seed
    )
    data = screen_to_crl_data(screen, with_counts=False)
    start = time.perf_counter()
    model = tl.train(data, model=args.model, params={"threads": 1}, seed=seed)
    fit_s = time.perf_counter() - start
    graphs, times = {}, {}
    for mode, setting in (("warm", "auto"), ("cold", None)):
        model.params["refit_epochs"] = setting
        start = time.perf_counter()
        graphs[mode] = tl.recover_graph(model, data, n_refits=args.refits, seed=seed)
        times[mode] = time.perf_counter() - start
    keys = ["source", "target"]
    both = graphs["warm"][[*keys, "weight", "stability", "confidence"]].merge(
        graphs["cold"][[*keys, "stability", "confidence"]], on=keys, suffixes=("_warm", "_cold")
    )
    truth = set(zip(screen.graph["source"], screen.graph["target"], strict=True))
    both["true"] = [(s, t) in truth for s, t in zip(both["source"], both["target"], strict=True)]
    row = {
        "seed": seed,
        "cells": data.n_cells,
        "fit_epochs": int(model.trained_epochs),
        "fit_s": round(fit_s, 1),
        "graph_warm_s": round(times["warm"], 1),
        "graph_cold_s": round(times["cold"], 1),
        "warm_over_fit": round(times["warm"] / fit_s, 2),
        "cold_over_fit": round(times["cold"] / fit_s, 2),
        "max_stability_diff": round(float((both["stability_warm"] - both["stability_cold"]).abs().max()), 2),
        "same_confident": bool((both["confidence_warm"] == both["confidence_cold"]).all()),
        "true_confident_warm": int((both["true"] & (both["confidence_warm"] == "confident")).sum()),
        "true_confident_cold": int((both["true"] & (both["confidence_cold"] == "confident")).sum()),
        "true_edges": len(truth),
    }
    return row, both.assign(seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["sparse_vae", "causal_vae"], default="sparse_vae")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--refits", type=int, default=20)
    parser.add_argument("--programs", type=int, default=5)
    parser.add_argument("--controls", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=150, help="cells per perturbation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, edges = [], []
    for seed in range(args.seeds):
        row, both = run_seed(args, seed)
        rows.append(row)
        edges.append(both)
        print(row, flush=True)
    print(pd.concat(edges).round(3).to_string(index=False))
    table = pd.DataFrame(rows)
    print(
        f"{args.model}, {args.refits} refits: graph step / one fit, median warm {table['warm_over_fit'].median():.2f} "
        f"(cold {table['cold_over_fit'].median():.2f}); largest stability difference warm vs cold "
        f"{table['max_stability_diff'].max():.2f}; same confident edges in {int(table['same_confident'].sum())}/"
        f"{len(table)} seeds; true edges confident warm {table['true_confident_warm'].sum()}, cold "
        f"{table['true_confident_cold'].sum()} of {table['true_edges'].sum()}"
    )


if __name__ == "__main__":
    main()
