"""Robot logs with a known causal graph: commanded joints are the interventions.

Generative model (one episode, frames t = 0..T-1, joints j = 1..J):

    a_j(t)      piecewise-constant commands: at each frame a joint gets a new set-point with
                probability ``step_rate`` (a jump of ``N(0, step_size^2)``)
    v(t+1)    = (1 - gain) v(t) + gain * (a(t-delay) - a(t-delay-1)) + C^T v(t) + noise * eps(t)
    z(t+1)    = z(t) + v(t+1)

Without coupling this is a joint position controller that tracks its command with a first-order
lag after ``delay`` frames (z(t+1) - z(t) = gain * (a(t-delay) - z(t))). ``C`` couples joint
velocities along a random DAG (a moving parent drags its child), so the true graph is
``action.j -> j`` for every joint plus the coupling edges ``k -> j``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import ConfigError
from ..io._robot import frames_to_anndata


@dataclass
class SimulatedRobot:
    """Simulated robot logs plus the causal structure a method should recover."""

    adata: ad.AnnData  # canonical robot layout: states ``joint_j``, actions ``action.joint_j``
    graph: pd.DataFrame  # true edges: source, target, weight
    fps: float


def simulate_robot(
    *,
    n_joints: int = 6,
    n_episodes: int = 20,
    n_frames: int = 300,
    fps: float = 30.0,
    delay: int = 2,
    gain: float = 0.3,
    n_couplings: int = 3,
    coupling: float = 0.3,
    step_rate: float = 0.03,
    step_size: float = 0.5,
    noise: float = 0.005,
    seed: int = 0,
) -> SimulatedRobot:
    """Simulate position-controlled joints tracking random set-points, with velocity coupling.

    Parameters
    ----------
    n_joints
        Number of joints J (state channels ``joint_0``.. and commands ``action.joint_0``..).
    n_episodes, n_frames
        Episodes and frames per episode.
    fps
        Frame rate (Hz); sets the timestamps only.
    delay
        Actuator delay in frames between a command and the first response.
    gain
        Fraction of the remaining command step closed per frame (0 < gain <= 1).
    n_couplings
        Number of joint -> joint velocity couplings (edges of a random DAG).
    coupling
        Their weight: velocity of the child added per unit velocity of the parent, per frame.
    step_rate
        Probability per frame and joint of a new set-point (an intervention on that joint).
    step_size
        Standard deviation of a set-point jump, in radians.
    noise
        Standard deviation of the velocity noise, in radians per frame.
    seed
        Seed of every random draw.
    """
    if not 0 < gain <= 1 or delay < 0 or n_joints < 1 or n_frames < delay + 3:
        raise ConfigError(
            f"simulate_robot: gain={gain}, delay={delay}, n_joints={n_joints}, n_frames={n_frames}; "
            "expected 0 < gain <= 1, delay >= 0, n_joints >= 1, n_frames > delay + 2"
        )
    rng = np.random.default_rng(seed)
    C, edges = _coupling(rng, n_joints, n_couplings, coupling)
    joints = [f"joint_{j}" for j in range(n_joints)]
    states, actions, obs = [], [], []
    for e in range(n_episodes):
        a = _commands(rng, n_frames, n_joints, step_rate, step_size)
        states.append(_roll_out(rng, a, C, delay, gain, noise))
        actions.append(a)
        obs.append(
            pd.DataFrame({"episode": str(e), "frame": np.arange(n_frames), "timestamp": np.arange(n_frames) / fps})
        )
    var = pd.DataFrame(
        {
            "kind": ["state"] * n_joints + ["action"] * n_joints,
            "source": ["observation.state"] * n_joints + ["action"] * n_joints,
            "field": "",
            "channel": joints * 2,
        },
        index=joints + [f"action.{j}" for j in joints],
    )
    X = np.hstack([np.vstack(states), np.vstack(actions)])
    adata = frames_to_anndata(X, pd.concat(obs, ignore_index=True), var, path="<simulate_robot>")
    truth = [(f"action.{j}", j, gain) for j in joints] + [(joints[k], joints[j], w) for k, j, w in edges]
    return SimulatedRobot(adata=adata, graph=pd.DataFrame(truth, columns=["source", "target", "weight"]), fps=fps)


def _coupling(rng: np.random.Generator, n: int, n_edges: int, weight: float) -> tuple[np.ndarray, list]:
    """C[k, j] = weight on edges k -> j of a random DAG (k before j in a random order)."""
    order = rng.permutation(n)
    pairs = [(order[i], order[j]) for i in range(n) for j in range(i + 1, n)]
    chosen = rng.choice(len(pairs), size=min(n_edges, len(pairs)), replace=False) if pairs else []
    C = np.zeros((n, n))
    edges = []
    for idx in sorted(chosen):
        k, j = pairs[idx]
        C[k, j] = weight
        edges.append((int(k), int(j), weight))
    return C, edges


def _commands(rng: np.random.Generator, T: int, J: int, rate: float, size: float) -> np.ndarray:
    jumps = (rng.random((T, J)) < rate) * rng.normal(scale=size, size=(T, J))
    jumps[0] = rng.normal(scale=size, size=J)  # the episode's first set-point
    return np.cumsum(jumps, axis=0)


def _roll_out(rng, a: np.ndarray, C: np.ndarray, delay: int, gain: float, noise: float) -> np.ndarray:
    T, J = a.shape
    z = np.zeros((T, J))
    z[0] = a[0]  # start at rest on the first set-point
    v = np.zeros(J)
    da = np.diff(a, axis=0, prepend=a[:1])
    for t in range(T - 1):
        drive = da[t - delay] if t >= delay else np.zeros(J)
        v = (1 - gain) * v + gain * drive + C.T @ v + noise * rng.normal(size=J)
        z[t + 1] = z[t] + v
    return z


def write_robot_simulation(
    sim: SimulatedRobot,
    *,
    out_dir: str | os.PathLike,
    out_truth_dir: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write the logs as a LeRobot v2.1 dataset and the truth tables (``graph.parquet``, ``targets.parquet``).

    The true targets say that the label of a set-point change of joint j (``pp.robot_interventions``
    with the default action map) acts on latent j.
    """
    from .._provenance import provenance
    from ..io import write_lerobot, write_table

    prov = provenance("simulate_robot", {}, params)
    truth = Path(out_truth_dir)
    write_table(sim.graph.assign(stability=1.0), truth / "graph.parquet", "graph", prov)
    joints = list(sim.adata.var_names[sim.adata.var["kind"] == "state"])
    pd.DataFrame({"intervention": joints, "program": joints}).to_parquet(truth / "targets.parquet", index=False)
    write_lerobot(sim.adata, out_dir, fps=sim.fps, task="simulated set-point tracking")


#: A 4-joint arm (shoulder yaw/pitch, elbow, wrist) with position servos; gravity compensated.
_ARM_XML = """
<mujoco model="crl_pipe_arm">
  <compiler angle="radian"/>
  <option timestep="0.002" gravity="0 0 0"/>
  <default>
    <joint damping="4" armature="0.01" range="-2.5 2.5" limited="true"/>
    <geom type="capsule" size="0.03" density="1000"/>
    <position kp="20" ctrlrange="-2.5 2.5" ctrllimited="true"/>
  </default>
  <worldbody>
    <body name="base" pos="0 0 0.5">
      <joint name="shoulder_yaw" axis="0 0 1"/>
      <geom fromto="0 0 0 0 0 0.1"/>
      <body name="upper" pos="0 0 0.1">
        <joint name="shoulder_pitch" axis="0 1 0"/>
        <geom fromto="0 0 0 0.3 0 0"/>
        <body name="fore" pos="0.3 0 0">
          <joint name="elbow" axis="0 1 0"/>
          <geom fromto="0 0 0 0.25 0 0"/>
          <body name="hand" pos="0.25 0 0">
            <joint name="wrist" axis="0 1 0" damping="1"/>
            <geom fromto="0 0 0 0.1 0 0" size="0.02"/>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position joint="shoulder_yaw"/>
    <position joint="shoulder_pitch"/>
    <position joint="elbow"/>
    <position joint="wrist" kp="5"/>
  </actuator>
</mujoco>
"""


def simulate_arm(
    *,
    n_episodes: int = 20,
    n_frames: int = 300,
    fps: float = 30.0,
    step_rate: float = 0.03,
    step_size: float = 0.4,
    noise: float = 0.001,
    seed: int = 0,
) -> SimulatedRobot:
    """Simulate a MuJoCo arm whose commanded joint set-points are the interventions.

    Four hinge joints (shoulder yaw and pitch, elbow, wrist) in a serial chain, each driven by a
    position servo (MuJoCo ``<position>`` actuator, damped joints, no gravity as on a
    gravity-compensated arm). Commands are random piecewise-constant set-points as in
    :func:`simulate_robot`; states are the joint angles sampled at ``fps`` plus Gaussian sensor
    noise (``noise``, radians). The true graph is ``action.j -> j`` for every joint; the arm's
    inertial coupling (a swinging shoulder jolts the elbow) is physics the servos mostly reject,
    so it is not part of the truth: state -> state edges found count against the method.

    Needs the ``mujoco`` package (``pip install mujoco``).
    """
    try:
        import mujoco
    except ImportError:
        raise ImportError("simulate_arm needs the 'mujoco' package: pip install mujoco") from None
    model = mujoco.MjModel.from_xml_string(_ARM_XML)
    joints = [model.joint(i).name for i in range(model.njnt)]
    substeps = max(1, round(1.0 / (fps * model.opt.timestep)))
    rng = np.random.default_rng(seed)
    states, actions, obs = [], [], []
    for e in range(n_episodes):
        a = np.clip(_commands(rng, n_frames, len(joints), step_rate, step_size), -2.4, 2.4)
        states.append(_servo_roll_out(mujoco, model, a, substeps) + noise * rng.normal(size=a.shape))
        actions.append(a)
        obs.append(
            pd.DataFrame({"episode": str(e), "frame": np.arange(n_frames), "timestamp": np.arange(n_frames) / fps})
        )
    n = len(joints)
    var = pd.DataFrame(
        {
            "kind": ["state"] * n + ["action"] * n,
            "source": ["observation.state"] * n + ["action"] * n,
            "field": "",
            "channel": joints * 2,
        },
        index=joints + [f"action.{j}" for j in joints],
    )
    X = np.hstack([np.vstack(states), np.vstack(actions)])
    adata = frames_to_anndata(X, pd.concat(obs, ignore_index=True), var, path="<simulate_arm>")
    truth = pd.DataFrame({"source": [f"action.{j}" for j in joints], "target": joints, "weight": 1.0})
    return SimulatedRobot(adata=adata, graph=truth, fps=fps)


def _servo_roll_out(mujoco, model, a: np.ndarray, substeps: int) -> np.ndarray:
    """Joint angles at each frame; the command of frame t acts until frame t+1."""
    data = mujoco.MjData(model)
    data.qpos[:] = a[0]  # start at rest on the first set-point
    out = np.empty_like(a)
    for t in range(len(a)):
        out[t] = data.qpos
        data.ctrl[:] = a[t]
        mujoco.mj_step(model, data, nstep=substeps)
    return out
