"""Level 3 of the concept graph learned over simulator seeds: where the data hold it, and where not (issue 15).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hierarchy_levels.py --seeds 10

Each seed simulates a three-level screen (8 programs in 4 hidden modules of 2, the modules in 2
hidden supermodules of 2, no perturbation of a supermodule; 2,000 controls, 300 cells per
perturbation, module loading 1.2, edge density 0.3) and the same screen without supermodules, and
runs :func:`crl_pipe.tl.hierarchy` (default ``max_level`` 3, no resamples) on the true program latents.
Prints per seed: module ARI (level 2), whether a level 3 was kept and its ARI (true modules' supermodule
labels against the learned level 3, learned modules matched to true ones by their programs).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from hierarchy_recovery import interventions  # this folder: a script's own folder is on sys.path
from sklearn.metrics import adjusted_rand_score

from crl_pipe import tl
from crl_pipe.simulate import simulate_screen

SCREEN = dict(
    n_programs=8, n_genes=200, n_modules=4, n_control=2000, cells_per_perturbation=300, module_loading=1.2,
    edge_density=0.3,
)  # fmt: skip


def _aris(truth: pd.DataFrame, est: pd.DataFrame) -> tuple[float, float]:
    """Module ARI over programs, and level-3 ARI over true modules (NaN without a true or learned level 3)."""
    t2, e2 = truth[truth["level"] == 2], est[est["level"] == 2]
    module_of = dict(zip(t2["child"], t2["parent"], strict=True))
    est_of = dict(zip(e2["child"], e2["parent"], strict=True))
    programs = sorted(module_of)
    ari2 = adjusted_rand_score([module_of[p] for p in programs], [est_of.get(p, f"-{p}") for p in programs])
    t3, e3 = truth[truth["level"] == 3], est[est["level"] == 3]
    if t3.empty or e3.empty:
        return ari2, np.nan
    to_true = {m: pd.Series([module_of[p] for p in g["child"]]).mode()[0] for m, g in e2.groupby("parent")}
    super_of = dict(zip(t3["child"], t3["parent"], strict=True))
    learned = {to_true[c]: p for c, p in zip(e3["child"], e3["parent"], strict=True)}
    modules = sorted(super_of)
    return ari2, adjusted_rand_score([super_of[m] for m in modules], [learned.get(m, f"-{m}") for m in modules])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for n_super in (2, 0):
        for seed in range(args.seeds):
            screen = simulate_screen(**SCREEN, n_supermodules=n_super, seed=seed)
            result = tl.hierarchy(screen.latents, interventions(screen), n_resamples=0)
            ari2, ari3 = _aris(screen.hierarchy, result.membership)
            rows.append((n_super, seed, ari2, bool((result.membership["level"] == 3).any()), ari3))
    table = pd.DataFrame(rows, columns=["n_supermodules", "seed", "module_ari", "level3_kept", "level3_ari"])
    print(table.to_string(index=False, float_format="%.2f"))
    for n_super, group in table.groupby("n_supermodules", sort=False):
        exact = group["module_ari"] > 0.999
        print(
            f"n_supermodules={n_super}: level 2 exact on {exact.sum()}/{len(group)} seeds; level 3 kept on"
            f" {group['level3_kept'].sum()}/{len(group)}; level-3 ARI 1 on {(group['level3_ari'] > 0.999).sum()}"
            f" ({(group.loc[exact, 'level3_ari'] > 0.999).sum()} of the {exact.sum()} with level 2 exact)"
        )


if __name__ == "__main__":
    main()
