"""Training throughput and recovery of one model on a simulated screen; appends one row to a table.

    python benchmarks/train_throughput.py --cells 20000 --genes 400 --model sparse_vae
    python benchmarks/train_throughput.py --cells 20000 --genes 400 --model linear

Run one model per process: peak RSS (``resource.getrusage``) is per process, and includes the
simulation and normalisation of the screen (reported apart as ``rss_before_fit_mib``).
The row: model, screen size, device, threads, epochs run, fit wall time, cells/s (cells x
epochs / fit time), peak RSS, and target accuracy, SHD and MCC from :func:`crl_pipe.tl.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from crl_pipe import tl
from crl_pipe._provenance import atomic_path
from crl_pipe.simulate import screen_to_crl_data, simulate_screen

N_DOUBLES = 3


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    load = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    screen, data = _screen(args)
    rss_before = _peak_rss_mib()
    params = json.loads(args.params)
    start = time.perf_counter()
    model = tl.train(data, model=args.model, params=params, seed=args.seed)
    wall = time.perf_counter() - start
    epochs = int(model.history["epoch"].max()) if len(model.history) else 0
    row = {
        "model": args.model,
        "params": json.dumps(params, sort_keys=True),
        "cells": data.n_cells,
        "genes": len(data.features),
        "programs": args.programs,
        "mixing": args.mixing,
        "device": "cuda" if torch.cuda.is_available() and params.get("device", "auto") != "cpu" else "cpu",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(load, 2),  # other work on the machine skews the timings
        "epochs": epochs,
        "fit_wall_s": round(wall, 3),
        "cells_per_s": round(data.n_cells * max(epochs, 1) / wall, 1),
        "rss_before_fit_mib": round(rss_before, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        **_scores(model, screen, data),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    _append(row, Path(args.out))
    print(json.dumps(row, indent=1))
    return row


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=20000, help="total cells (half controls)")
    p.add_argument("--genes", type=int, default=400)
    p.add_argument("--programs", type=int, default=6)
    p.add_argument("--mixing", choices=["linear", "nonlinear"], default="linear")
    p.add_argument("--model", default="sparse_vae", help="a registered model name")
    p.add_argument("--params", default="{}", help="model parameters as JSON, e.g. '{\"epochs\": 50}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/out/train_throughput.csv", help=".csv or .parquet; rows are appended")
    return p


def _screen(args: argparse.Namespace):
    """Simulate a screen of about ``args.cells`` cells (half controls) and its log-normalised CRLData."""
    n_conditions = args.programs + N_DOUBLES  # one guide per program plus the doubles
    per = max(20, args.cells // (2 * n_conditions))
    screen = simulate_screen(
        n_programs=args.programs, n_genes=args.genes, n_control=args.cells - per * n_conditions,
        cells_per_perturbation=per, n_doubles=N_DOUBLES, mixing=args.mixing, seed=args.seed,
    )  # fmt: skip
    data = screen_to_crl_data(screen)
    return screen, data


def _scores(model, screen, data) -> dict[str, float]:
    edges = model.get_adjacency().stack()
    graph = edges[edges != 0].rename_axis(["source", "target"]).reset_index(name="weight")
    m = tl.evaluate(
        graph=graph,
        targets=model.get_targets(),
        latents=model.get_latent_representation(data),
        true_graph=screen.graph,
        true_targets=screen.targets,
        true_latents=screen.latents,
    ).set_index("metric")["value"]
    return {"target_accuracy": m["target_accuracy"], "shd": m["shd"], "mcc": round(m["mcc"], 4)}


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _append(row: dict, out: Path) -> None:
    new = pd.DataFrame([row])
    if out.suffix == ".parquet":
        table = pd.concat([pd.read_parquet(out), new], ignore_index=True) if out.exists() else new
        with atomic_path(out) as tmp:
            table.to_parquet(tmp, index=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
