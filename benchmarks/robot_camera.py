"""The MuJoCo arm seen through sensors and through a camera: the same truth, two ways to learn its variables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robot_camera.py --seeds 0 1 2 --episodes 10 --frames 200

For each simulation seed: the arm logged through its 16 sensors (``temporal`` with ``sensors``, as
config/robot_sensors.yaml) and through its camera (``camera`` on frames downscaled to
``--frame-size``, as config/robot_camera.yaml: rendered at 96 x 96, written as a LeRobot v3.0 video
and decoded back with PyAV, so the frames carry the codec's loss). Prints, per route and seed, the R²
of each joint's latent with its joint, ``r2_diag`` and ``r2_offdiag_max`` (as in metrics.parquet),
the largest R² of an unnamed latent with the gate and with the light, target accuracy, SHD and the
fit's seconds, then the medians per route. The graph is the full fit's (no bootstrap refits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from crl_pipe import pp, tl
from crl_pipe.io import read_lerobot
from crl_pipe.models import CameraSEM, CRLData, TemporalSEM
from crl_pipe.simulate import ARM_JOINTS, simulate_arm, write_robot_simulation
from crl_pipe.tl._evaluate import r2_matrix


def _score(model, data: CRLData, sim) -> dict[str, float]:
    latents = model.get_latent_representation(data)
    true_targets = pd.DataFrame({"intervention": list(ARM_JOINTS), "program": list(ARM_JOINTS)})
    m = tl.evaluate(
        graph=model.get_edges().assign(stability=1.0),
        targets=model.get_targets(),
        latents=latents,
        true_graph=sim.graph,
        true_targets=true_targets,
        true_latents=sim.latents,
    ).set_index("metric")["value"]
    r2 = r2_matrix(latents, sim.latents)
    unnamed = [c for c in latents.columns if c.startswith("z")]
    row = {f"r2_{j}": float(r2.at[j, j]) for j in ARM_JOINTS}
    row |= {
        f"best_unnamed_{v}": float(r2.loc[unnamed, v].max()) if unnamed else float("nan") for v in ("gate", "light")
    }
    return row | {k: float(m[k]) for k in ("r2_diag", "r2_offdiag_max", "target_accuracy", "shd")}


def sensors_route(seed: int, episodes: int, frames: int) -> dict[str, float]:
    sim = simulate_arm(n_episodes=episodes, n_frames=frames, observation="sensors", seed=seed)
    data = CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata, unmeasured=ARM_JOINTS))
    start = time.perf_counter()
    model = TemporalSEM(sensors="sensor.", n_latents=6, edge_threshold=0.1).fit(data, seed=0)
    return {"seconds": time.perf_counter() - start} | _score(model, data, sim)


def camera_route(seed: int, episodes: int, frames: int, frame_size: int, steps: int, width: int, scene: int):
    sim = simulate_arm(
        n_episodes=episodes, n_frames=frames, observation="camera", image_size=96, scene=scene, seed=seed
    )
    with tempfile.TemporaryDirectory() as tmp:  # through the video and back, as the workflow reads it
        write_robot_simulation(sim, out_dir=Path(tmp) / "lerobot", out_truth_dir=Path(tmp) / "truth")
        logs = read_lerobot(Path(tmp) / "lerobot", cameras=["front"], frame_size=frame_size)
    data = CRLData.from_artifacts(logs, pp.robot_interventions(logs, unmeasured=ARM_JOINTS))
    start = time.perf_counter()
    model = CameraSEM(n_latents=6, steps=steps, width=width).fit(data, seed=0)
    return {"seconds": time.perf_counter() - start} | _score(model, data, sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--scene", type=int, default=0)
    parser.add_argument("--routes", nargs="+", default=["sensors", "camera"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        for route in args.routes:
            if route == "sensors":
                row = sensors_route(seed, args.episodes, args.frames)
            else:
                row = camera_route(
                    seed, args.episodes, args.frames, args.frame_size, args.steps, args.width, args.scene
                )
            rows.append({"route": route, "seed": seed} | row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    print(table.drop(columns="seed").groupby("route").median().round(3).T.to_string())


if __name__ == "__main__":
    main()
