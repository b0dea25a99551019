"""Wall time and peak memory of each workflow stage on simulated screens of N cells x 8,000 genes.

    python benchmarks/scale.py --cells 100000 300000 1000000 --workdir /tmp/scale

For each N the screen (about 2,000 UMIs per cell) is simulated in blocks straight to disk, then
every stage runs as its own process through the ``crl-pipe`` command line under ``/usr/bin/time -v``
(GNU time; ``apt-get install time``), which reports the wall time and the peak resident memory of
that process. Stages: simulate, ingest, label, preprocess, anchors, train (``linear``; and
``sparse_vae`` for ``--vae-epochs`` epochs), graph (``linear``, no bootstrap refits) and evaluate, so
that the table also says whether the model still recovers the truth at that size.

Rows (stage, cells, wall s, peak RSS GB, load average, stored counts, ...) are added to ``--out``
(CSV) as each stage finishes, and printed as JSON lines, so a run cut short keeps what it measured;
``--markdown`` prints the table. Each N's folder is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

N_GENES = 8000
PROGRAMS, ANCHORS, GUIDES, DOUBLES = 10, 10, 2, 5
CONTROL_SHARE = 0.2


def screen_params(n_cells: int, seed: int) -> dict:
    """A screen of ``n_cells`` x 8,000 genes: 10 programs, 20 single + 5 double perturbations, 20% controls."""
    n_perturbations = PROGRAMS * GUIDES + DOUBLES
    n_control = int(n_cells * CONTROL_SHARE)
    per = (n_cells - n_control) // n_perturbations
    return {
        "n_programs": PROGRAMS,
        "n_genes": N_GENES,
        "anchors_per_program": ANCHORS,
        "guides_per_program": GUIDES,
        "n_doubles": DOUBLES,
        "n_control": n_cells - per * n_perturbations,
        "cells_per_perturbation": per,
        "mean_library_size": 2000.0,
        "seed": seed,
    }


def stages(n_cells: int, d: Path, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name, crl-pipe arguments) of every stage, in order."""
    sim, res = d / "sim", d / "res"
    pre, labels, anchors, gmt = (
        res / "preprocessed.h5ad",
        res / "interventions.parquet",
        res / "anchors.parquet",
        sim / "programs.gmt",
    )
    data = ["--preprocessed", pre, "--interventions", labels, "--anchors", anchors]
    vae = {"epochs": args.vae_epochs, "device": "cpu", "patience": 0}
    out = [
        (
            "simulate",
            [
                "simulate",
                "--out-h5ad",
                sim / "screen.h5ad",
                "--out-gmt",
                gmt,
                "--out-truth-dir",
                sim / "truth",
                "--params",
                json.dumps(screen_params(n_cells, args.seed)),
                "--chunk-cells",
                "5000",
            ],
        ),
        (
            "ingest",
            [
                "ingest",
                "--path",
                sim / "screen.h5ad",
                "--out-h5ad",
                res / "ingested.h5ad",
                "--out-qc",
                res / "qc.parquet",
            ],
        ),
        (
            "label",
            [
                "label",
                "--ingested",
                res / "ingested.h5ad",
                "--out",
                labels,
                "--options",
                "{perturbation_key: perturbation, control_values: [non-targeting]}",
            ],
        ),
        (
            "preprocess",
            [
                "preprocess",
                "--ingested",
                res / "ingested.h5ad",
                "--interventions",
                labels,
                "--out",
                pre,
                "--gene-sets",
                gmt,
                "--options",
                "{n_top_genes: 2000}",
            ],
        ),
        ("anchors", ["anchors", "--preprocessed", pre, "--out", anchors, "--gene-sets", gmt]),
        ("train linear", ["train", *data, "--out-dir", res / "linear", "--model", "linear"]),
        (
            "graph linear",
            [
                "graph",
                *data,
                "--model-dir",
                res / "linear",
                "--out-parquet",
                res / "linear/graph.parquet",
                "--out-graphml",
                res / "linear/graph.graphml",
                "--n-refits",
                "0",
            ],
        ),
        (
            "evaluate linear",
            [
                "evaluate",
                "--graph",
                res / "linear/graph.parquet",
                "--targets",
                res / "linear/targets.parquet",
                "--latents",
                res / "linear/latents.parquet",
                "--out",
                res / "linear/metrics.parquet",
                "--truth",
                json.dumps({k: str(sim / "truth" / f"{k}.parquet") for k in ("graph", "targets", "latents")}),
            ],
        ),
    ]
    if args.vae_epochs:
        out.append(
            (
                f"train sparse_vae ({args.vae_epochs} epoch{'s' if args.vae_epochs > 1 else ''})",
                [
                    "train",
                    *data,
                    "--out-dir",
                    res / "sparse_vae",
                    "--model",
                    "sparse_vae",
                    "--params",
                    json.dumps(vae),
                    "--threads",
                    "1",
                ],
            )
        )
    return [(name, [str(a) for a in argv]) for name, argv in out]


def timed(argv: list[str], log: Path) -> dict:
    """Run ``python -m crl_pipe.cli argv`` under GNU time; wall seconds and peak RSS (GB) of the process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "crl_pipe.cli", "-v", *argv]
    load = os.getloadavg()[0]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, text=True)
        fh.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}); see {log}:\n{proc.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    return {"wall_s": round(seconds, 1), "peak_rss_gb": round(rss_kb / 2**20, 2), "load_avg_1min": round(load, 2)}


def facts(n_cells: int, d: Path) -> dict:
    """Size of the simulated screen and of the preprocessed data, once they exist."""
    from crl_pipe.io import H5adRows

    out = {}
    for key, path in (("screen", d / "sim/screen.h5ad"), ("preprocessed", d / "res/preprocessed.h5ad")):
        if path.exists():
            with H5adRows(path) as f:
                out[f"{key}_nnz"] = f.nnz()
                out[f"{key}_genes"] = f.var.shape[0]
            out[f"{key}_file_gb"] = round(path.stat().st_size / 2**30, 2)
    qc = d / "res/qc.parquet"
    if qc.exists():
        out["umis_per_cell"] = round(float(pd.read_parquet(qc, columns=["total_counts"])["total_counts"].mean()), 1)
    return out


def metrics(d: Path) -> dict:
    path = d / "res/linear/metrics.parquet"
    if not path.exists():
        return {}
    table = pd.read_parquet(path).set_index("metric")["value"]
    return {k: round(float(table[k]), 3) for k in ("target_accuracy", "shd", "mcc") if k in table}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/scale.csv"))
    p.add_argument("--vae-epochs", type=int, default=1, help="epochs of sparse_vae (0: leave it out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep each N's folder (several GB at 1M cells)")
    p.add_argument("--markdown", action="store_true", help="print the table of --out as markdown and stop")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(pd.read_csv(args.out)))
        return
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time (GNU time) not found: apt-get install time")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.cells:
        d = args.workdir / str(n)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for name, stage_argv in stages(n, d, args):
            start = time.strftime("%Y-%m-%d %H:%M:%S")
            row = {"stage": name, "cells": n, "started": start, **timed(stage_argv, d / "log.txt")}
            row.update(facts(n, d))
            if name.startswith("evaluate"):
                row.update(metrics(d))
            _append(row, args.out)
            print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(d)


def _append(row: dict, path: Path) -> None:
    """Add a row to the CSV, rewritten whole: rows of later stages have more columns."""
    table = pd.DataFrame([row])
    if path.exists():
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    table.to_csv(path, index=False)


def markdown(table: pd.DataFrame) -> str:
    """Stages as rows, one wall-time and one peak-memory column per screen size (the latest run of each)."""
    table = table.drop_duplicates(["stage", "cells"], keep="last")
    order = list(dict.fromkeys(table["stage"]))
    cells = sorted(table["cells"].unique())
    lines = [
        "| stage | " + " | ".join(f"{n:,} cells: wall s / peak RSS GB" for n in cells) + " |",
        "| --- |" + " --- |" * len(cells),
    ]
    for stage in order:
        cols = []
        for n in cells:
            hit = table[(table["stage"] == stage) & (table["cells"] == n)]
            cols.append(f"{hit['wall_s'].iloc[0]:,.0f} / {hit['peak_rss_gb'].iloc[0]:.2f}" if len(hit) else "-")
        lines.append(f"| {stage} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
