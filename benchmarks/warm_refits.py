"""Warm-started refits of the deep models: the graph step's cost and its stability, warm vs from scratch.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_refits.py --model sparse_vae --seeds 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_refits.py --model causal_vae --seeds 2

For each seed: a simulated screen (``--programs`` programs, ``--cells`` cells per perturbation),
one fit of the model at its defaults (timed), then :func:`crl_pipe.tl.recover_graph` with
``--refits`` half-sample refits from the same fit, once per refit start:

- ``warm``: from the fitted weights as they are (``REFIT_SHRINK = 1``);
- ``shrink``: from ``--shrink`` x the fitted weights + the rest of a fresh initialisation
  (shrink and perturb; the default refit start when ``REFIT_SHRINK`` is set to it);
- ``cold``: every refit a full training from scratch (``refit_epochs: null``), the reference;
- ``cold2``: from scratch again with other halves and model seeds: how far two honest stability
  estimates differ by chance (the noise floor the others are judged against).

Prints each start's cost over the fit's, its stabilities against ``cold`` (largest and mean
signed difference: above 0 = more stable than fresh trainings, i.e. optimistic) and whether the
confident edges agree. Torch runs on one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from crl_pipe import tl
from crl_pipe.models import _vae
from crl_pipe.simulate import screen_to_crl_data, simulate_screen

KEYS = ["source", "target"]


def graph_with(model, data, start: str, args: argparse.Namespace, seed: int) -> tuple[pd.DataFrame, float]:
    """The graph step with refits started as ``start``, and its time in seconds."""
    model.params["refit_epochs"] = None if start.startswith("cold") else "auto"
    _vae.REFIT_SHRINK = args.shrink if start == "shrink" else 1.0
    begin = time.perf_counter()
    graph = tl.recover_graph(model, data, n_refits=args.refits, seed=seed + (7919 if start == "cold2" else 0))
    return graph, time.perf_counter() - begin


def run_seed(args: argparse.Namespace, seed: int) -> tuple[list[dict], pd.DataFrame]:
    screen = simulate_screen(
        n_programs=args.programs, n_control=args.controls, cells_per_perturbation=args.cells, seed=seed
    )
    data = screen_to_crl_data(screen, with_counts=False)
    begin = time.perf_counter()
    model = tl.train(data, model=args.model, params={"threads": 1}, seed=seed)
    fit_s = time.perf_counter() - begin
    truth = set(zip(screen.graph["source"], screen.graph["target"], strict=True))
    graphs, seconds, rows = {}, {}, []
    for start in ["cold", *[s for s in args.starts if s != "cold"]]:
        graphs[start], seconds[start] = graph_with(model, data, start, args, seed)
    cold = graphs["cold"][[*KEYS, "stability", "confidence"]]
    edges = []
    for start, graph in graphs.items():
        both = graph[[*KEYS, "stability", "confidence"]].merge(cold, on=KEYS, how="outer", suffixes=("", "_cold"))
        both = both.fillna({"stability": 0.0, "stability_cold": 0.0, "confidence": "-", "confidence_cold": "-"})
        diff = both["stability"] - both["stability_cold"]
        true = np.array([(s, t) in truth for s, t in zip(both["source"], both["target"], strict=True)])
        confident = both["confidence"] == "confident"
        rows.append(
            {
                "seed": seed,
                "start": start,
                "over_fit": round(seconds[start] / fit_s, 2),
                "max_abs_diff": round(float(diff.abs().max()), 2),
                "mean_diff": round(float(diff.mean()), 3),
                "same_confident": bool((confident == (both["confidence_cold"] == "confident")).all()),
                "true_confident": int((true & confident).sum()),
                "false_confident": int((~true & confident).sum()),
                "true_edges": len(truth),
            }
        )
        edges.append(both.assign(seed=seed, start=start))
    return rows, pd.concat(edges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["sparse_vae", "causal_vae"], default="sparse_vae")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--refits", type=int, default=20)
    parser.add_argument("--programs", type=int, default=5)
    parser.add_argument("--controls", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=150, help="cells per perturbation")
    parser.add_argument("--starts", nargs="+", default=["warm", "shrink", "cold", "cold2"])
    parser.add_argument("--shrink", type=float, default=0.5, help="share of the fitted weights in a shrink start")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, edges = [], []
    for seed in args.seeds:
        seed_rows, both = run_seed(args, seed)
        rows += seed_rows
        edges.append(both)
        print(pd.DataFrame(seed_rows).to_string(index=False), flush=True)
    print(pd.concat(edges).round(3).to_string(index=False))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    print(table.groupby("start")[["max_abs_diff", "mean_diff", "true_confident", "false_confident"]].median())


if __name__ == "__main__":
    main()
