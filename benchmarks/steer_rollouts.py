"""Robot steering by rollouts against the simulator's truth, and held-out episodes against persistence and a VAR.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/steer_rollouts.py --seeds 0 1 2 3 4 [--g1]

For each seed: the MuJoCo arm (:func:`crl_pipe.simulate.simulate_arm`, 12 episodes x 300 frames), the
last 2 episodes held out, ``temporal`` fitted on the rest with config/robot_sim.yaml's settings.

1. Held-out rollouts (:func:`crl_pipe.tl.score_rollouts`): RMSE in channel SDs at 1/10/30 frames of
   the model, persistence and the VAR, median over seeds (each seed: mean over its 2 episodes).
2. Steering: ``command: {shoulder_yaw: 1.2, frames: 30}`` from the first frames of every training
   episode; the predicted effect (mean over starts, :class:`crl_pipe.tl.CommandSteerer`) against the
   true one (:func:`crl_pipe.simulate.arm_rollout` of the same commands, noise-free), per state at
   frames 10 and 30, and the share of true effects inside the [lower, upper] interval.

``--g1`` also scores held-out episode rollouts on the real Unitree G1 logs
(``/work/shared/data/lerobot_g1_pick``: every 10th episode held out, config/g1.yaml's labels).
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crl_pipe import io, pp, tl
from crl_pipe.models import CRLData, TemporalSEM
from crl_pipe.simulate import ARM_JOINTS, arm_rollout, simulate_arm

REQUEST = {"command": {"shoulder_yaw": 1.2, "frames": 30}}
ARM_PARAMS = {"edge_threshold": 0.02, "instantaneous": True}  # config/robot_sim.yaml
G1 = Path("/work/shared/data/lerobot_g1_pick")


def _data(adata, **labels) -> CRLData:
    return CRLData.from_artifacts(adata, pp.robot_interventions(adata, **labels))


def arm(seed: int, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(held-out rollout scores, steering predicted vs true) of one seed."""
    sim = simulate_arm(n_episodes=12, n_frames=300, seed=seed)
    data = _data(sim.adata)
    train, held = tl.split_episodes(data, {"episodes": [10, 11]})
    start = time.perf_counter()
    model = TemporalSEM(**ARM_PARAMS).fit(train)
    fit_s = time.perf_counter() - start
    scores = tl.score_rollouts(model, train, held).assign(seed=seed, fit_s=fit_s)
    steerer = tl.CommandSteerer(model, train, n_boot=n_boot, seed=seed)
    request = steerer.check(REQUEST)[0]
    table = steerer.table([request])
    r = model.rollout_start
    length = r + request.frames
    truths = []
    for _, commands, _ in steerer.starts(length):  # the same starts, in the same order
        observed = commands[:length][:, [model.action_names.index(f"action.{j}") for j in ARM_JOINTS]]
        held_cmd = observed.copy()
        held_cmd[r - 1 : r - 1 + request.frames, ARM_JOINTS.index("shoulder_yaw")] = REQUEST["command"]["shoulder_yaw"]
        truths.append(arm_rollout(held_cmd)[r:] - arm_rollout(observed)[r:])
    true = pd.DataFrame(np.mean(truths, axis=0), columns=[*ARM_JOINTS, "gate", "light"])
    true.index = np.arange(1, request.frames + 1)
    rows = []
    for frame in (10, 30):
        for latent in true.columns:
            row = table[(table["frame"] == frame) & (table["feature"] == latent)].iloc[0]
            value = float(true.loc[frame, latent])
            rows.append(
                (seed, frame, latent, float(row["predicted_change"]), value, row["lower"] <= value <= row["upper"])
            )
    steering = pd.DataFrame(rows, columns=["seed", "frame", "state", "predicted", "true", "covered"])
    return scores, steering


def g1() -> pd.DataFrame:
    """Held-out rollout scores on the real G1 logs: every 10th episode held out."""
    adata = io.read_lerobot(G1)
    data = _data(adata, change_threshold=3.0)
    episodes = sorted(pd.unique(data.obs["episode"].astype(str)), key=int)
    train, held = tl.split_episodes(data, {"episodes": episodes[5::10]})
    actions = [f for f in data.features if f.startswith("action.")]
    start = time.perf_counter()
    model = TemporalSEM(actions=actions).fit(train)
    return tl.score_rollouts(model, train, held).assign(seed="g1", fit_s=time.perf_counter() - start)


def _rollout_table(scores: pd.DataFrame) -> pd.DataFrame:
    per_seed = scores.groupby(["seed", "predictor", "metric"])["value"].mean().reset_index()
    wide = per_seed.pivot_table(index="predictor", columns="metric", values="value", aggfunc="median")
    wide = wide.reindex(list(tl.ROLLOUT_PREDICTORS))[[f"rollout_rmse_h{h}" for h in tl.ROLLOUT_HORIZONS]]
    wins = per_seed.pivot_table(index=["seed", "metric"], columns="predictor", values="value")
    n_seeds = wins.index.get_level_values(0).nunique()
    shown = wide.map(lambda v: f"{v:.3f}")
    for base in ("persistence", "var"):
        better = (wins["model"] < wins[base]).groupby(level="metric").sum()
        shown.loc[f"temporal beats {base} (seeds)"] = [f"{int(better[m])}/{n_seeds}" for m in wide.columns]
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-boot", type=int, default=5, help="bootstrap refits behind the steering intervals")
    parser.add_argument("--g1", action="store_true", help="also score held-out episodes of the real G1 logs")
    args = parser.parse_args()
    results = [arm(seed, args.n_boot) for seed in args.seeds]
    scores = pd.concat([s for s, _ in results], ignore_index=True)
    steering = pd.concat([s for _, s in results], ignore_index=True)
    print(f"## Held-out arm episodes (seeds {args.seeds}; median fit {scores['fit_s'].median():.1f} s)\n")
    print(_rollout_table(scores).to_markdown())
    summary = steering.groupby(["frame", "state"], sort=False).agg(
        predicted=("predicted", "median"),
        true=("true", "median"),
        abs_error=("predicted", lambda x: float(np.median(np.abs(x - steering.loc[x.index, "true"])))),
        covered=("covered", "mean"),
    )
    print(f"\n## Steering {REQUEST} (medians over seeds; covered: share of seeds with the truth in the interval)\n")
    print(summary.to_markdown(floatfmt=".3f"))
    if args.g1:
        real = g1()
        print(f"\n## Held-out G1 episodes (real logs; fit {real['fit_s'].iloc[0]:.0f} s)\n")
        print(_rollout_table(real).to_markdown())


if __name__ == "__main__":
    main()
