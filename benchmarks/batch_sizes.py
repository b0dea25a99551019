"""Throughput and recovery of one model over batch sizes, on one simulated screen; one row per size.

    python benchmarks/batch_sizes.py --model causal_vae --batch-sizes 512 2048 4096

On a GPU a minibatch step costs about the same for 512 cells as for 4,096 (the step is bound by
kernel launches, not arithmetic), so larger batches buy throughput there; on the CPU they mostly
add epochs. The screen is simulated once and shared by every fit (see ``train_throughput.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from train_throughput import _append, _scores, _screen

from crl_pipe import tl


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="causal_vae")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 2048, 4096])
    p.add_argument("--cells", type=int, default=20000)
    p.add_argument("--genes", type=int, default=400)
    p.add_argument("--programs", type=int, default=6)
    p.add_argument("--mixing", choices=["linear", "nonlinear"], default="linear")
    p.add_argument("--params", default="{}", help="other model parameters as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/batch_sizes.csv")
    args = p.parse_args(argv)
    screen, data = _screen(args)
    rows = []
    for size in args.batch_sizes:
        params = {**json.loads(args.params), "batch_size": size}
        start = time.perf_counter()
        model = tl.train(data, model=args.model, params=params, seed=args.seed)
        wall = time.perf_counter() - start
        epochs = int(model.history["epoch"].max())
        row = {
            "model": args.model,
            "batch_size": size,
            "device": "cuda" if torch.cuda.is_available() and params.get("device", "auto") != "cpu" else "cpu",
            "threads": torch.get_num_threads(),
            "cells": data.n_cells,
            "seed": args.seed,
            "epochs": epochs,
            "fit_wall_s": round(wall, 2),
            "cells_per_s": round(data.n_cells * epochs / wall),
            **_scores(model, screen, data),
        }
        _append(row, Path(args.out))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
