"""The model benchmark of issue 3: every model on simulated screens of several sizes, one table.

    python benchmarks/model_grid.py --models linear sparse_vae causal_vae \\
        --programs 6 10 20 --mixing linear nonlinear --cells 10000 50000 --genes 2000

Each (model, K, mixing, cells) runs in its own process through ``benchmarks/train_throughput.py``
(so that peak RSS is that fit's own) and appends a row to ``--out`` (CSV): cells per second per
epoch, peak RSS, fit wall time, target accuracy, SHD and MCC. ``--markdown`` prints the table
docs/benchmarks.md shows. A fit that fails or runs past ``--timeout`` seconds gets a row with its
error, so that one slow configuration does not hide the others.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "model", "mixing", "programs", "cells", "genes", "threads", "epochs", "fit_wall_s", "cells_per_s",
    "peak_rss_mib", "target_accuracy", "shd", "mcc",
]  # fmt: skip


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    for model, k, mixing, cells in itertools.product(args.models, args.programs, args.mixing, args.cells):
        cmd = [
            sys.executable, str(HERE / "train_throughput.py"), "--model", model, "--programs", str(k),
            "--mixing", mixing, "--cells", str(cells), "--genes", str(args.genes), "--seed", str(args.seed),
            "--threads", str(args.threads), "--params", json.dumps(args.params.get(model, {})), "--out", str(out),
        ]  # fmt: skip
        print(f"[model_grid] {model} K={k} {mixing} {cells} cells", flush=True)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
            error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]
        except subprocess.TimeoutExpired:
            error = f"timed out after {args.timeout} s"
        if error:
            row = {"model": model, "mixing": mixing, "programs": k, "cells": cells, "genes": args.genes, "error": error}
            pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
            print(f"[model_grid]   {error}", flush=True)
    table = pd.read_csv(out)
    if args.markdown:
        print(to_markdown(table))
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """The rows as a Markdown table (failed runs show their error in the last column)."""
    cols = [c for c in COLUMNS if c in table] + (["error"] if "error" in table else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for row in table[cols].itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["linear", "sparse_vae", "causal_vae"])
    p.add_argument("--programs", nargs="+", type=int, default=[6, 10, 20])
    p.add_argument("--mixing", nargs="+", choices=["linear", "nonlinear"], default=["linear", "nonlinear"])
    p.add_argument("--cells", nargs="+", type=int, default=[10000, 50000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per fit")
    p.add_argument("--params", type=json.loads, default={}, help='per-model params as JSON: {"causal_vae": {...}}')
    p.add_argument("--timeout", type=int, default=1800, help="seconds per fit")
    p.add_argument("--out", default="benchmarks/out/model_grid.csv")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown at the end")
    return p


if __name__ == "__main__":
    main()
