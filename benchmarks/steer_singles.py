"""Held-out single perturbations predicted by steering, beside the field's simple baselines.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/steer_singles.py --seeds 0 1 2 [--models linear causal_vae]

For each seed: a simulated screen whose perturbed genes belong to their program's gene set
(``regulators_in_programs``), every single held out in turn (with the combinations that include it);
the model is fit without its cells and predicts it from prior knowledge alone
(:func:`crl_pipe.tl.evaluate_singles`), beside ``no_change``, ``mean_change`` and ``linear_embedding``.
Prints the median over seeds and held-out singles of each metric per predictor, and how often
the model beats each baseline on Pearson delta top-20, as Markdown tables; ``--out`` writes the
long table (one row per seed, single, predictor and metric) as CSV.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from crl_pipe import tl
from crl_pipe.models import get_model
from crl_pipe.simulate import screen_to_crl_data, simulate_screen

METRICS = ["pearson_delta_top20", "pearson_delta_all", "r2_delta_top20", "r2_delta_all", "mmd"]


def run(seed: int, n_programs: int, models: list[str], mixing: str, epochs: int) -> pd.DataFrame:
    screen = simulate_screen(n_programs=n_programs, mixing=mixing, regulators_in_programs=True, seed=seed)
    data = screen_to_crl_data(screen, with_counts=False)
    singles = [label for label in data.perturbations if "+" not in label]
    frames = []
    for label in singles:
        train = tl.hold_out(data, [label])
        for name in models:
            start = time.perf_counter()
            torch_params = {"device": "cpu", "epochs": epochs}
            model = get_model(name)(**(torch_params if get_model(name).capabilities.uses_torch else {}))
            model.fit(train, seed=seed)
            scores = tl.evaluate_singles(model, data, [label])
            scores["predictor"] = scores["predictor"].replace({"model": name})
            if name != models[0]:  # the baselines once per single
                scores = scores[scores["predictor"] == name]
            frames.append(scores.assign(seed=seed, seconds=time.perf_counter() - start))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--programs", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=["linear"])
    parser.add_argument("--mixing", default="linear", choices=["linear", "nonlinear"])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the PyTorch models")
    parser.add_argument("--out", default=None, help="CSV of every score")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = pd.concat(
        [run(s, args.programs, args.models, args.mixing, args.epochs) for s in args.seeds], ignore_index=True
    )
    if args.out:
        table.to_csv(args.out, index=False)
    medians = table.pivot_table(index="predictor", columns="metric", values="value", aggfunc="median")[METRICS]
    order = [*args.models, "no_change", "mean_change", "linear_embedding"]
    print(
        f"median over {table[['seed', 'intervention']].drop_duplicates().shape[0]} held-out singles "
        f"({len(args.seeds)} seeds, {args.programs} programs, {args.mixing} mixing)\n"
    )
    print(medians.loc[order].round(3).to_markdown())
    wide = table.pivot_table(index=["seed", "intervention"], columns=["predictor", "metric"], values="value")
    print()
    for name in args.models:
        for baseline in ("mean_change", "linear_embedding"):
            wins = (wide[(name, "pearson_delta_top20")] > wide[(baseline, "pearson_delta_top20")]).mean()
            print(f"{name} beats {baseline} on Pearson delta top-20 in {100 * wins:.0f}% of singles")
        r2 = (wide[(name, "r2_delta_all")] > wide[("no_change", "r2_delta_all")]).mean()
        print(f"{name} beats no_change on R² delta (all genes) in {100 * r2:.0f}% of singles")
    print(f"\nfit + predict per single: median {np.median(table['seconds']):.1f} s")


if __name__ == "__main__":
    main()
