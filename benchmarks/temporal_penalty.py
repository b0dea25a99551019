"""``temporal``'s automatic penalty against held-out likelihood, and own commands kept or shrunk.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/temporal_penalty.py --seeds 5

For each seed of the MuJoCo arm (20 episodes x 300 frames, plus two pure-noise channels): fit
``temporal`` on half of the episodes at penalties ``scale * sqrt(2 log(inputs) / windows)``
(the universal threshold; the default ``alpha: auto`` is ``AUTO_ALPHA_SCALE`` = 0.75 of it) and
score the mean squared standardised one-step residual of the velocities on the other half (the
Gaussian held-out log-likelihood up to constants; each half standardised by its own SDs). Also
counts the commands whose edge into their own joint is zero, with own commands exempt (the
default) and penalised like any other group (``penalize_own_commands: true``, the old default).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from crl_pipe import pp, tl
from crl_pipe.models import CRLData, TemporalSEM
from crl_pipe.models.temporal import (
    AUTO_ALPHA_SCALE,
    _columns,
    _Design,
    _intervention_matrix,
    _max_lag,
    _segments,
)
from crl_pipe.simulate import simulate_arm

SCALES = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def held_out_loss(model: TemporalSEM, data: CRLData) -> float:
    """Mean squared standardised residual of the model's transition on ``data`` (its own design)."""
    z, a = _columns(data, model.latent_names), _columns(data, model.action_names)
    shift = _intervention_matrix(data, model.latent_names) if model.params["intervention_shift"] else None
    design = _Design(z, a, shift, _segments(data), _max_lag(model.params), int(model.params["n_action_lags"]))
    return design.loss(model.coef.numpy()[: design.n_inputs])


def own_commands_lost(model: TemporalSEM) -> int:
    adjacency = model.get_adjacency()
    own = [(a, a.removeprefix("action.")) for a in model.action_names]
    return sum(adjacency.loc[a, j] == 0 for a, j in own if j in adjacency.columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        sim = simulate_arm(noise_channels=2, seed=seed)
        data = CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))
        train_rows, test_rows = tl.complementary_halves(data, np.random.default_rng(seed))
        train, test = data.subset(train_rows), data.subset(test_rows)
        universal = TemporalSEM().fit(train).alpha_ / AUTO_ALPHA_SCALE
        for scale in SCALES:
            for penalise in (False, True):
                model = TemporalSEM(alpha=scale * universal, penalize_own_commands=penalise).fit(train)
                rows.append(
                    {
                        "seed": seed,
                        "scale": scale,
                        "penalize_own_commands": penalise,
                        "held_out_loss": held_out_loss(model, test),
                        "own_commands_lost": own_commands_lost(model),
                        "n_edges": len(model.get_edges()),
                    }
                )
        print(pd.DataFrame(rows[-2 * len(SCALES) :]).round(5).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    best = table.groupby(["seed", "penalize_own_commands"])["held_out_loss"].transform("min")
    table["excess_over_best_pct"] = 100 * (table["held_out_loss"] / best - 1)
    summary = table.groupby(["penalize_own_commands", "scale"]).agg(
        median_excess_pct=("excess_over_best_pct", "median"),
        max_excess_pct=("excess_over_best_pct", "max"),
        own_commands_lost=("own_commands_lost", "sum"),
        median_edges=("n_edges", "median"),
    )
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
