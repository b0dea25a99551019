"""Modules on real data against known structure (issue 15): a humanoid's kinematic groups.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hierarchy_real.py g1 --resamples 5

``g1``: the Unitree G1 teleoperation logs (../shared/data/lerobot_g1_pick, 100 episodes, 26 joints).
The hierarchy reads the joints' states as the robot kind gives them to it
(:meth:`crl_pipe.kinds.DatasetKind.hierarchy_samples`: innovations of the frame-to-frame changes)
and its modules are compared with the robot's kinematic groups, coarse (left arm, right arm, left
hand, right hand) and fine (each arm split into shoulder + elbow and wrist). Prints the modules,
their stability over the resamples and the adjusted Rand index against both groupings (a joint in
no module is its own group).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from crl_pipe import pp, tl
from crl_pipe.kinds import get_kind

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def g1_groups(joint: str, fine: bool) -> str:
    """The kinematic group of a G1 joint name (``kLeftWristRoll`` -> ``left wrist`` / ``left arm``)."""
    side = "left" if "Left" in joint else "right"
    if "Hand" in joint:
        return f"{side} hand"
    if not fine:
        return f"{side} arm"
    return f"{side} wrist" if "Wrist" in joint else f"{side} shoulder+elbow"


def g1(resamples: int) -> None:
    kind = get_kind("robot")
    adata = kind.read(DATA / "lerobot_g1_pick", format="lerobot")
    labels = pp.robot_interventions(adata, change_threshold=3.0)
    states = list(adata.var_names[adata.var["kind"] == "state"])
    latents = pd.DataFrame(np.asarray(adata[:, states].X, dtype=float), columns=states)
    latents.insert(0, "sample_id", adata.obs_names.to_numpy())
    frames, frame_labels = kind.hierarchy_samples(latents, labels)
    start = time.perf_counter()
    result = tl.hierarchy(frames, frame_labels, n_resamples=resamples)
    print(f"{len(frames)} frames x {len(states)} joints; hierarchy in {time.perf_counter() - start:.0f} s")
    print(result.membership.to_string(index=False))
    for note in result.notes:
        print("note:", note)
    found = dict(zip(result.membership["child"], result.membership["parent"], strict=True))
    for fine in (False, True):
        truth = [g1_groups(s, fine) for s in states]
        ari = adjusted_rand_score(truth, [found.get(s, f"-{s}") for s in states])
        print(f"ARI vs {'fine' if fine else 'coarse'} kinematic groups ({len(set(truth))}): {ari:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", choices=["g1"])
    parser.add_argument("--resamples", type=int, default=5)
    args = parser.parse_args()
    {"g1": g1}[args.data](args.resamples)


if __name__ == "__main__":
    main()
