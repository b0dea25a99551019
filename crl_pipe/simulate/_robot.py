"""Robot logs with a known causal graph: commanded joints are the interventions.

Generative model (one episode, frames t = 0..T-1, joints j = 1..J):

    a_j(t)      piecewise-constant commands: at each frame a joint gets a new set-point with
                probability ``step_rate`` (a jump of ``N(0, step_size^2)``)
    v(t+1)    = (1 - gain) v(t) + gain * (a(t-delay) - a(t-delay-1)) + C^T v(t) + C0^T v(t+1) + noise * eps(t)
    z(t+1)    = z(t) + v(t+1)

Without coupling this is a joint position controller that tracks its command with a first-order
lag after ``delay`` frames (z(t+1) - z(t) = gain * (a(t-delay) - z(t))). ``C`` couples joint
velocities along a random DAG (a moving parent drags its child), so the true graph is
``action.j -> j`` for every joint plus the coupling edges ``k -> j``. ``C0`` holds the couplings
that act within the frame (``n_instantaneous`` of them, along the same DAG, e.g. a rigid link).
The truth's ``lag`` column gives the frames from a change of the source to the first change of the
target: ``delay + 1`` for commands, 1 for couplings, 0 for instantaneous couplings.

With ``n_limbs`` > 0 the joints form a second level: they are split into limbs of at least two, and
each limb gets a hidden command of its own (a posture the whole limb takes, not logged), piecewise
constant like the joints' commands, that enters the set-point of each of its joints with a
non-negative loading: ``target_j(t) = a_j(t) + W_jl h_l(t)``. Joints of one limb thus move together
beyond the graph; the limbs are the modules of the truth (``hierarchy``: limb -> joint, weight =
loading). They are drawn from a stream of their own: the logs of the same seed without limbs stay
draw for draw what they were.
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
from .._provenance import provenance
from ..io import write_lerobot, write_table
from ..io._camera import add_frames
from ..io._frames import frames_to_anndata
from ..io._lerobot import write_lerobot_v3
from ._camera import ARM_CAMERAS, arm_frames
from ._sensors import ARM_SENSORS, arm_sensors


@dataclass
class SimulatedRobot:
    """Simulated robot logs plus the causal structure a method should recover."""

    adata: ad.AnnData  # canonical robot layout: states ``joint_j``, actions ``action.joint_j``
    graph: pd.DataFrame  # true edges: source, target, weight
    fps: float
    latents: pd.DataFrame | None = None  # sample_id + the noise-free causal variables (for R²)
    frames: dict[str, np.ndarray] | None = None  # camera -> frames x size x size x 3 uint8 RGB (camera logs)
    hierarchy: pd.DataFrame | None = None  # limbs: level 2, parent (limb), child (joint), weight (loading)
    module_graph: pd.DataFrame | None = None  # source, target, weight among limbs (none: limbs are independent)


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
    n_instantaneous: int = 0,
    step_rate: float = 0.03,
    step_size: float = 0.5,
    noise: float = 0.005,
    coupling_lag: int = 1,
    noise_channels: int = 0,
    temperature_of: str | None = None,
    n_limbs: int = 0,
    limb_drive: float = 0.8,
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
    n_instantaneous
        How many of the couplings act within the frame (lag 0: the child moves with its parent's
        velocity of the same frame) instead of one frame later.
    step_rate
        Probability per frame and joint of a new set-point (an intervention on that joint).
    step_size
        Standard deviation of a set-point jump, in radians.
    noise
        Standard deviation of the velocity noise, in radians per frame.
    coupling_lag
        Frames after which a lagged coupling acts (the child's velocity at t+1 follows the parent's at
        t + 1 - ``coupling_lag``): 2 makes the velocity dynamics a second-order autoregression, whose
        order ``temporal`` must find (its ``n_lags``).
    noise_channels, temperature_of
        Extra state channels without commands (:func:`add_extra_channels`): ``noise_channels`` pure-noise
        channels (no parent, no child) and, with ``temperature_of`` (a joint name such as
        ``"joint_2"``), that joint's motor temperature (``temperature``, driven by the joint alone).
        Drawn from their own random stream, so the joints are those of the same seed without them.
    n_limbs
        Limbs (or tools) over the joints, a second level (0: none): joints split at random into
        ``n_limbs`` groups of at least two (needs ``n_joints >= 2 * n_limbs``), each limb driven by a
        hidden command of its own (:func:`limb_truth`); the result's ``hierarchy`` names them ``limb_1``...
    limb_drive
        Mean loading of a joint on its limb's hidden command (drawn within +-0.2): radians of set-point per
        radian of the limb command, whose jumps are as large as a joint command's.
    seed
        Seed of every random draw.
    """
    if (
        not 0 < gain <= 1
        or delay < 0
        or n_joints < 1
        or n_frames < delay + 3
        or n_instantaneous < 0
        or coupling_lag < 1
        or noise_channels < 0
    ):
        raise ConfigError(
            f"simulate_robot: gain={gain}, delay={delay}, n_joints={n_joints}, n_frames={n_frames}, "
            f"n_instantaneous={n_instantaneous}, coupling_lag={coupling_lag}, noise_channels={noise_channels}; "
            "expected 0 < gain <= 1, delay >= 0, n_joints >= 1, n_frames > delay + 2, n_instantaneous >= 0, "
            "coupling_lag >= 1, noise_channels >= 0"
        )
    rng = np.random.default_rng(seed)
    C, edges = _coupling(rng, n_joints, n_couplings, coupling)
    C0 = np.zeros_like(C)  # the first n_instantaneous couplings act within the frame
    for k, j, w in edges[:n_instantaneous]:
        C0[k, j], C[k, j] = w, 0.0
    joints = [f"joint_{j}" for j in range(n_joints)]
    limbs = limb_truth(joints, n_limbs, limb_drive, seed) if n_limbs else None
    limb_rng = np.random.default_rng([seed, 2])  # the hidden limb commands: a stream of their own
    W = _limb_loadings(limbs, joints) if limbs is not None else None
    states, actions, obs = [], [], []
    for e in range(n_episodes):
        a = _commands(rng, n_frames, n_joints, step_rate, step_size)
        target = a if W is None else a + _commands(limb_rng, n_frames, W.shape[1], step_rate, step_size) @ W.T
        states.append(_roll_out(rng, target, C, delay, gain, noise, C0, coupling_lag))
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
    truth = [(f"action.{j}", j, gain, delay + 1) for j in joints]
    truth += [
        (joints[k], joints[j], w, 0 if i < n_instantaneous else coupling_lag) for i, (k, j, w) in enumerate(edges)
    ]
    latents = pd.DataFrame(np.vstack(states), columns=joints)  # no sensor noise: the states are the variables
    latents.insert(0, "sample_id", adata.obs_names.to_numpy())
    graph = pd.DataFrame(truth, columns=["source", "target", "weight", "lag"])
    robot = SimulatedRobot(adata=adata, graph=graph, fps=fps, latents=latents)
    if limbs is not None:
        robot.hierarchy = limbs
        robot.module_graph = pd.DataFrame(
            {"source": pd.Series(dtype=str), "target": pd.Series(dtype=str), "weight": pd.Series(dtype=float)}
        )
    return add_extra_channels(robot, noise_channels=noise_channels, temperature_of=temperature_of, seed=seed)


def limb_truth(joints: list[str], n_limbs: int, limb_drive: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """The limbs of :func:`simulate_robot` (``n_limbs`` > 0), from the settings alone: which joints form
    each limb and their loadings on its hidden command, as a ``hierarchy`` table (level 2, parent
    ``limb_<l>``, child joint, weight loading, stability 1). Drawn from the stream ``[seed, 1]``."""
    if n_limbs < 1 or len(joints) < 2 * n_limbs:
        raise ConfigError(
            f"simulate_robot: n_limbs={n_limbs} needs n_joints >= 2 * n_limbs, got n_joints={len(joints)}"
        )
    if limb_drive <= 0:
        raise ConfigError(f"simulate_robot: limb_drive={limb_drive}; expected a number > 0")
    rng = np.random.default_rng([seed, 1])
    groups = [np.sort(g) for g in np.array_split(rng.permutation(len(joints)), n_limbs)]
    rows = []
    for m, g in enumerate(groups):
        weights = rng.uniform(max(limb_drive - 0.2, 0.05), limb_drive + 0.2, len(g))
        rows += [(2, f"limb_{m + 1}", joints[j], float(w), 1.0) for j, w in zip(g, weights, strict=True)]
    return pd.DataFrame(rows, columns=["level", "parent", "child", "weight", "stability"])


def _limb_loadings(limbs: pd.DataFrame, joints: list[str]) -> np.ndarray:
    """Joints x limbs: each joint's loading on its limb's hidden command."""
    names = list(pd.unique(limbs["parent"]))
    W = np.zeros((len(joints), len(names)))
    for row in limbs.itertuples(index=False):
        W[joints.index(row.child), names.index(row.parent)] = row.weight
    return W


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


def _roll_out(
    rng, a: np.ndarray, C: np.ndarray, delay: int, gain: float, noise: float, C0=None, coupling_lag: int = 1
) -> np.ndarray:
    T, J = a.shape
    # within-frame couplings: v = rest + C0^T v, solved once (C0 is a DAG, so I - C0^T is invertible)
    within = np.linalg.inv(np.eye(J) - C0.T) if C0 is not None and C0.any() else np.eye(J)
    z = np.zeros((T, J))
    z[0] = a[0]  # start at rest on the first set-point
    v = np.zeros(J)
    past = [np.zeros(J)] * coupling_lag  # velocities of the last coupling_lag frames, newest last
    da = np.diff(a, axis=0, prepend=a[:1])
    for t in range(T - 1):
        drive = da[t - delay] if t >= delay else np.zeros(J)
        v = within @ ((1 - gain) * v + gain * drive + C.T @ past[0] + noise * rng.normal(size=J))
        past = [*past[1:], v]
        z[t + 1] = z[t] + v
    return z


#: Motor temperature of :func:`add_extra_channels` (deg C): it relaxes by ``_TEMP_RATE`` per frame
#: towards ``_TEMP_AMBIENT + _TEMP_GAIN * angle`` (the holding torque of a loaded joint grows with its
#: angle, and its copper losses with the torque) and is read with ``_TEMP_NOISE`` sensor noise.
_TEMP_AMBIENT, _TEMP_GAIN, _TEMP_RATE, _TEMP_NOISE = 35.0, 2.0, 0.1, 0.02


def add_extra_channels(
    robot: SimulatedRobot, *, noise_channels: int = 0, temperature_of: str | None = None, seed: int = 0
) -> SimulatedRobot:
    """Add uncommanded state channels to simulated logs: pure noise, and a joint's motor temperature.

    Parameters
    ----------
    robot
        Logs of :func:`simulate_robot` or :func:`simulate_arm` (unchanged when nothing is added).
    noise_channels
        Channels ``noise_0``, ``noise_1`` ... that nothing drives and that drive nothing: even ones
        read white noise (an unconnected sensor), odd ones a random walk (a drifting offset).
    temperature_of
        A joint (state channel) whose motor temperature is logged as ``temperature``: it relaxes
        towards ambient plus a term proportional to the joint's angle (holding torque), 10 % per
        frame, read with 0.02 deg C noise. True edge: ``<joint> -> temperature``, lag 1; nothing
        depends on the temperature.
    seed
        Seed of the extra channels' own random stream (independent of the logs' draws).
    """
    if not noise_channels and temperature_of is None:
        return robot
    adata = robot.adata
    states = list(adata.var_names[adata.var["kind"] == "state"])
    if temperature_of is not None and temperature_of not in states:
        raise ConfigError(f"simulate: temperature_of={temperature_of!r}; expected one of the joints {states}")
    rng = np.random.default_rng([seed, 16])  # a stream of its own: the logs' draws stay as they are
    episodes = adata.obs["episode"].to_numpy()
    measured: dict[str, np.ndarray] = {}
    true: dict[str, np.ndarray] = {}
    if temperature_of is not None:
        source = robot.latents[temperature_of] if robot.latents is not None else adata[:, temperature_of].X
        angle = np.asarray(source, dtype=np.float64).ravel()
        temp = np.empty(len(angle))
        for e in pd.unique(episodes):
            rows = np.flatnonzero(episodes == e)
            goal = _TEMP_AMBIENT + _TEMP_GAIN * angle[rows]
            temp[rows[0]] = goal[0]  # the episode starts in equilibrium
            for t in range(len(rows) - 1):
                temp[rows[t + 1]] = temp[rows[t]] + _TEMP_RATE * (goal[t] - temp[rows[t]])
        true["temperature"] = temp
        measured["temperature"] = temp + _TEMP_NOISE * rng.normal(size=len(temp))
    for k in range(noise_channels):
        white = rng.normal(size=len(episodes))
        if k % 2:  # a random walk within each episode
            white = pd.Series(0.05 * white).groupby(episodes).cumsum().to_numpy()
        true[f"noise_{k}"] = measured[f"noise_{k}"] = white
    return _with_channels(robot, measured, true, temperature_of)


def _with_channels(
    robot: SimulatedRobot, measured: dict[str, np.ndarray], true: dict[str, np.ndarray], temperature_of: str | None
) -> SimulatedRobot:
    """The logs with extra state channels (after the other states), the truth with the temperature's edge."""
    adata, names = robot.adata, list(measured)
    n_states = int((adata.var["kind"] == "state").sum())
    extra = pd.DataFrame({"kind": "state", "source": "observation.state", "field": "", "channel": names}, index=names)
    var = pd.concat([adata.var.iloc[:n_states], extra[adata.var.columns], adata.var.iloc[n_states:]])
    X = np.asarray(adata.X, dtype=np.float64)
    X = np.hstack([X[:, :n_states], np.column_stack([measured[n] for n in names]), X[:, n_states:]])
    obs = adata.obs[["episode", "frame", "timestamp"]]
    new = frames_to_anndata(X, obs, var, path="<simulate: extra channels>")
    graph = robot.graph
    if temperature_of is not None:
        edge = pd.DataFrame([(temperature_of, "temperature", 1.0, 1)], columns=["source", "target", "weight", "lag"])
        graph = pd.concat([graph, edge.astype(graph.dtypes.to_dict())], ignore_index=True)
    latents = robot.latents.assign(**true) if robot.latents is not None else None
    return SimulatedRobot(
        adata=new, graph=graph, fps=robot.fps, latents=latents, frames=robot.frames,
        hierarchy=robot.hierarchy, module_graph=robot.module_graph,
    )  # fmt: skip


def write_robot_simulation(
    sim: SimulatedRobot,
    *,
    out_dir: str | os.PathLike,
    out_truth_dir: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write the logs as a LeRobot v2.1 dataset (v3.0 with one MP4 video per camera when the logs have
    camera frames) and the truth tables (``graph.parquet``, ``targets.parquet`` and, when the
    simulator gives them, ``latents.parquet``).

    The true targets say that the label of a set-point change of joint j (``pp.robot_interventions``
    with the default action map) acts on latent j; uncommanded variables (a gate, a light) are
    targeted by no label.
    """
    prov = provenance("simulate_robot", {}, params)
    truth = Path(out_truth_dir)
    write_table(sim.graph.assign(stability=1.0), truth / "graph.parquet", "graph", prov)
    var = sim.adata.var
    commanded = [str(c) for c in var.index[var["kind"] == "action"].str.removeprefix("action.")]
    targets = pd.DataFrame({"intervention": commanded, "program": commanded})
    write_table(targets, truth / "targets.parquet", "truth_targets", prov)
    if sim.latents is not None:
        write_table(sim.latents, truth / "latents.parquet", "latents", prov)
    if sim.hierarchy is not None:  # limbs: the second level's truth
        write_limb_truth(sim.hierarchy, truth, prov)
    task = "simulated set-point tracking"
    if sim.frames:
        videos = {f"observation.images.{camera}": frames for camera, frames in sim.frames.items()}
        write_lerobot_v3(sim.adata, out_dir, fps=sim.fps, task=task, videos=videos)
    else:
        write_lerobot(sim.adata, out_dir, fps=sim.fps, task=task)


def write_limb_truth(limbs: pd.DataFrame, out_truth_dir: str | os.PathLike, prov: Mapping[str, Any]) -> None:
    """The truth of a robot's limbs: ``hierarchy.parquet`` (limb -> joint) and ``module_graph.parquet`` (no edge)."""
    truth = Path(out_truth_dir)
    write_table(limbs, truth / "hierarchy.parquet", "hierarchy", prov)
    empty = pd.DataFrame({"source": pd.Series(dtype=str), "target": pd.Series(dtype=str)})
    write_table(empty.assign(weight=0.0, stability=1.0), truth / "module_graph.parquet", "graph", prov)


#: A 4-joint arm (shoulder yaw/pitch, elbow, wrist) with position servos, gravity compensated, and a
#: spring-loaded gate hinged on the base's axis. A compliant pusher on the base (it turns with
#: shoulder_yaw only) pushes the gate open once yaw passes the gate's angle: a one-sided spring, the
#: fixed tendon ``yaw - gate`` with a dead band below 0. The gate's own spring closes it against its
#: stop (0.3 rad) when the pusher backs away. Nothing collides (contype 0): the links never touch.
_ARM_XML = """
<mujoco model="crl_pipe_arm">
  <compiler angle="radian"/>
  <option timestep="0.002" gravity="0 0 0"/>
  <default>
    <joint damping="4" armature="0.01" range="-2.5 2.5" limited="true"/>
    <geom type="capsule" size="0.03" density="1000" contype="0" conaffinity="0"/>
    <position kp="20" ctrlrange="-2.5 2.5" ctrllimited="true"/>
  </default>
  <worldbody>
    <body name="gate_body" pos="0 0 0.1">
      <joint name="gate" axis="0 0 1" range="0.3 2.8" stiffness="0.3" springref="-1" damping="0.4" armature="0.001"/>
      <geom name="gate_pin" fromto="0.2 0 -0.05 0.2 0 0.05" size="0.015" density="300"/>
      <geom fromto="0 0 -0.05 0.2 0 -0.05" size="0.005" density="300"/>
    </body>
    <body name="base" pos="0 0 0.5">
      <joint name="shoulder_yaw" axis="0 0 1"/>
      <geom fromto="0 0 0 0 0 0.1"/>
      <geom name="pusher" type="box" pos="0.2 0 -0.4" size="0.1 0.01 0.03"/>
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
  <tendon>
    <fixed name="pusher" stiffness="4" springlength="-10 0">
      <joint joint="shoulder_yaw" coef="1"/>
      <joint joint="gate" coef="-1"/>
    </fixed>
  </tendon>
  <actuator>
    <position joint="shoulder_yaw"/>
    <position joint="shoulder_pitch"/>
    <position joint="elbow"/>
    <position joint="wrist" kp="5"/>
  </actuator>
</mujoco>
"""

#: The arm's commanded joints, in actuator order.
ARM_JOINTS = ("shoulder_yaw", "shoulder_pitch", "elbow", "wrist")

#: True graph of :func:`simulate_arm` among its causal variables (besides ``action.j -> j``).
ARM_EDGES = (("shoulder_yaw", "gate"), ("gate", "light"))


def simulate_arm(
    *,
    n_episodes: int = 20,
    n_frames: int = 300,
    fps: float = 30.0,
    step_rate: float = 0.03,
    setpoint_range: float = 1.5,
    light_threshold: float = 0.6,
    light_delay: int = 1,
    noise: float = 0.001,
    observation: str = "state",
    sensor_noise: float = 0.002,
    image_size: int = 96,
    scene: int = 0,
    noise_channels: int = 0,
    temperature_of: str | None = None,
    limbs: bool = False,
    limb_drive: float = 0.8,
    seed: int = 0,
) -> SimulatedRobot:
    """Simulate a MuJoCo arm that pushes a spring-loaded gate, which switches a light.

    Four hinge joints (shoulder yaw and pitch, elbow, wrist) in a serial chain, each driven by a
    position servo (MuJoCo ``<position>`` actuator, damped joints, no gravity as on a
    gravity-compensated arm). Each joint's commanded set-point (``action.<joint>``) jumps, with
    probability ``step_rate`` per frame, to a uniform draw in ``[-setpoint_range, setpoint_range]``
    rad: these commands are the interventions. A compliant pusher on the arm's base turns with
    ``shoulder_yaw`` and, once yaw passes the angle of a ``gate`` hinged on the base's axis, pushes
    the gate open (a one-sided spring; the damped gate follows with a lag of ~0.1 s); the gate's
    own spring closes it again, against its stop at 0.3 rad, when the pusher backs away. A ``light``
    is switched by a limit switch on the gate: its controller reads the switch once per frame and
    turns the light on (1) ``light_delay`` frames later (default 1; 0: in the same frame, a light
    wired straight to the switch) while the gate is open past ``light_threshold`` rad, else off
    (0). Everything is sampled at ``fps``; joint and gate angles carry Gaussian sensor noise
    (``noise``, rad).

    Causal variables and true graph (:attr:`SimulatedRobot.graph`, ``ARM_EDGES``)::

        action.j -> j          for j in shoulder_yaw, shoulder_pitch, elbow, wrist
        shoulder_yaw -> gate   (the pusher on the base opens the gate)
        gate -> light          (the switch reads the gate only)

    The truth's ``lag`` column gives the frames between a change of the source and the first change
    of the target: 1 for a command (the servo acts from the next frame on); 0 for the pusher (a
    continuous contact: a yaw step moves the gate within the same 1/fps interval, though the damped
    gate goes on following for ~0.1 s); ``light_delay`` for the light (default 1; 0 makes
    ``gate -> light`` instantaneous too). ``temporal`` recovers lag-0 edges with
    ``instantaneous: true``; without it, its lagged edges stand in for them. The load of the pusher
    on the yaw servo and the inertial coupling of the links (a swinging shoulder jolts the elbow) are
    physics too, but small: they are not in the truth, so a method that reports them pays for it.
    :attr:`SimulatedRobot.latents` holds the noise-free causal variables.

    Observations. ``observation="state"`` logs the causal variables themselves (``noise`` added).
    ``observation="sensors"`` logs, instead, 16 sensor channels that mix them (a model must learn
    the variables back: ``temporal`` with ``sensors``), each with Gaussian noise ``sensor_noise``
    (details and the physics in :mod:`crl_pipe.simulate._sensors`):

    * ``sensor.{elbow,wrist,tip}_{x,y,z}``: MuJoCo ``framepos`` sensors on sites at the elbow, the
      wrist and the tip of a 0.3 m tool in the hand, in the frame of a tilted motion-capture camera
      (m): forward kinematics, so each mixes 2, 3 or all 4 joint angles through sines and cosines;
    * ``sensor.tool_{u,v,w}``: the tool's tip seen by a tilted camera on the upper arm: elbow and
      wrist only (the wrist turns about its own axis, so only an offset point such as the tip shows it);
    * ``sensor.gate_{u,v,w}``: the gate's tip in the frame of the upper arm: gate, yaw and pitch;
    * ``sensor.photodiode``: lamp light through the gate's shadow plus ambient light,
      ``0.3 + 0.15 sin(slow drift) + light * (1 - 0.7 sigmoid((gate - 1.6) / 0.25))``.

    ``observation="camera"`` logs no state channel at all: the arm is seen only through a camera
    (:attr:`SimulatedRobot.frames`, ``{"front": frames x image_size x image_size x 3}`` uint8 RGB,
    rendered offscreen by MuJoCo; :mod:`crl_pipe.simulate._camera`): coloured links, a tool in the hand
    that shows the wrist's turn, an orange panel on the gate and a lamp that lights up yellow with the
    light. ``scene`` 0 is the default view; another value draws another camera pose, link colours,
    lamp position and floor colour from that seed (the same robot and truth, a scene a model was not
    tuned on). :func:`write_robot_simulation` writes such logs as a LeRobot v3.0 dataset with an MP4
    video per camera.

    The truth (graph, targets, latents) is the same in every mode; the actions are logged as they are.

    Extra channels (``observation="state"`` only): ``noise_channels`` pure-noise channels and, with
    ``temperature_of`` (one of ``ARM_JOINTS``), that joint's motor temperature, as in
    :func:`add_extra_channels` (their own random stream: the arm's logs are those of the same seed).

    Limbs (``limbs=True``): the arm's two kinematic groups, ``shoulder`` (yaw, pitch) and ``forearm``
    (elbow, wrist), each get a hidden command of their own (a posture of the whole group, piecewise
    constant like the joints' set-points, not logged) that enters their joints' set-points with a
    non-negative loading (mean ``limb_drive``, drawn within +-0.2; the servo clips the sum to its
    range). The result's ``hierarchy`` holds them (level 2: limb -> joint). They come from streams of
    their own: the logged commands are those of the same seed without limbs.

    Needs the ``mujoco`` package (``pip install 'crl-pipe[robot]'``); ``"camera"`` also a headless
    OpenGL (EGL or OSMesa) and, to write the videos, PyAV.
    """
    try:
        import mujoco  # deferred: MuJoCo only for the arm simulator
    except ImportError:
        raise ImportError("simulate_arm needs the 'mujoco' package: pip install mujoco") from None
    if observation not in ("state", "sensors", "camera"):
        raise ConfigError(f"simulate_arm: observation={observation!r}; expected 'state', 'sensors' or 'camera'")
    if observation == "camera" and (image_size % 2 or not 8 <= image_size <= 1024):
        raise ConfigError(f"simulate_arm: image_size={image_size}; expected an even number of pixels from 8 to 1024")
    if light_delay < 0:
        raise ConfigError(f"simulate_arm: light_delay={light_delay}; expected an integer >= 0 (frames)")
    if observation == "sensors" and (noise_channels or temperature_of is not None):
        raise ConfigError("simulate_arm: noise_channels and temperature_of need observation='state'")
    if not 0 < step_rate <= 1 or setpoint_range <= 0 or n_frames < 2 or n_episodes < 1:
        raise ConfigError(
            f"simulate_arm: step_rate={step_rate}, setpoint_range={setpoint_range}, n_frames={n_frames}, "
            f"n_episodes={n_episodes}; expected 0 < step_rate <= 1, setpoint_range > 0, n_frames >= 2, n_episodes >= 1"
        )
    model = mujoco.MjModel.from_xml_string(_ARM_XML)
    substeps = max(1, round(1.0 / (fps * model.opt.timestep)))
    rng = np.random.default_rng(seed)
    hierarchy = arm_limb_truth(limb_drive, seed) if limbs else None
    W = _limb_loadings(hierarchy, list(ARM_JOINTS)) if limbs else None
    limb_rng = np.random.default_rng([seed, 2])  # the hidden limb commands: a stream of their own
    states, actions, obs = [], [], []
    for e in range(n_episodes):
        a = _setpoints(rng, n_frames, len(ARM_JOINTS), step_rate, setpoint_range)
        target = a if W is None else a + _setpoints(limb_rng, n_frames, W.shape[1], step_rate, setpoint_range) @ W.T
        states.append(_arm_roll_out(mujoco, model, target, substeps, light_threshold, light_delay))
        actions.append(a)
        obs.append(
            pd.DataFrame({"episode": str(e), "frame": np.arange(n_frames), "timestamp": np.arange(n_frames) / fps})
        )
    variables = [*ARM_JOINTS, "gate", "light"]
    true = np.vstack(states)
    measured = true.copy()
    measured[:, :-1] += noise * rng.normal(size=(len(true), len(variables) - 1))  # the light is read exactly
    if observation == "sensors":
        measured = arm_sensors(mujoco, _ARM_XML, true, ARM_JOINTS, [n_frames] * n_episodes, rng, sensor_noise, fps)
        variables = list(ARM_SENSORS)
    frames = None
    if observation == "camera":  # no state channel: the camera is the only view of the arm
        frames = {ARM_CAMERAS[0]: arm_frames(mujoco, _ARM_XML, true, ARM_JOINTS, size=image_size, scene=scene)}
        measured, variables = np.zeros((len(true), 0)), []
    n, joints = len(variables), list(ARM_JOINTS)
    var = pd.DataFrame(
        {
            "kind": ["state"] * n + ["action"] * len(joints),
            "source": ["observation.state"] * n + ["action"] * len(joints),
            "field": "",
            "channel": variables + joints,
        },
        index=variables + [f"action.{j}" for j in joints],
    )
    X = np.hstack([measured, np.vstack(actions)])
    adata = frames_to_anndata(X, pd.concat(obs, ignore_index=True), var, path="<simulate_arm>")
    for camera, images in (frames or {}).items():  # in obsm, as crl_pipe.io.read_lerobot gives them
        add_frames(adata, camera, images, source=f"observation.images.{camera}")
    latents = pd.DataFrame(true, columns=[*ARM_JOINTS, "gate", "light"])
    latents.insert(0, "sample_id", adata.obs_names.to_numpy())
    edges = [(f"action.{j}", j) for j in joints] + list(ARM_EDGES)
    lags = [1] * len(joints) + [0, light_delay]  # commands; the pusher (within the frame); the light
    truth = pd.DataFrame(edges, columns=["source", "target"]).assign(weight=1.0, lag=lags)
    robot = SimulatedRobot(adata=adata, graph=truth, fps=fps, latents=latents, frames=frames)
    if hierarchy is not None:
        robot.hierarchy = hierarchy
        robot.module_graph = pd.DataFrame(
            {"source": pd.Series(dtype=str), "target": pd.Series(dtype=str), "weight": pd.Series(dtype=float)}
        )
    return add_extra_channels(robot, noise_channels=noise_channels, temperature_of=temperature_of, seed=seed)


#: The arm's kinematic groups (``simulate_arm(limbs=True)``): limb -> its joints.
ARM_LIMBS = {"shoulder": ("shoulder_yaw", "shoulder_pitch"), "forearm": ("elbow", "wrist")}


def arm_limb_truth(limb_drive: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """The limbs of :func:`simulate_arm` with ``limbs=True`` (:data:`ARM_LIMBS`), from the settings alone:
    a ``hierarchy`` table (level 2, parent limb, child joint, weight loading, stability 1), loadings drawn
    from the stream ``[seed, 1]``."""
    if limb_drive <= 0:
        raise ConfigError(f"simulate_arm: limb_drive={limb_drive}; expected a number > 0")
    rng = np.random.default_rng([seed, 1])
    rows = []
    for limb, joints in ARM_LIMBS.items():
        weights = rng.uniform(max(limb_drive - 0.2, 0.05), limb_drive + 0.2, len(joints))
        rows += [(2, limb, joint, float(w), 1.0) for joint, w in zip(joints, weights, strict=True)]
    return pd.DataFrame(rows, columns=["level", "parent", "child", "weight", "stability"])


def arm_rollout(
    commands: np.ndarray, *, fps: float = 30.0, light_threshold: float = 0.6, light_delay: int = 1
) -> np.ndarray:
    """The arm of :func:`simulate_arm` driven by a given command sequence: the true trajectory.

    Parameters
    ----------
    commands
        Frames x 4: the set-points of ``ARM_JOINTS`` (rad) at every frame; the arm starts at rest on
        the first frame's set-points with the gate closed, as every simulated episode does.
    fps, light_threshold, light_delay
        As in :func:`simulate_arm`.

    Returns
    -------
    Frames x 6: the noise-free ``shoulder_yaw, shoulder_pitch, elbow, wrist, gate, light``, the causal
    variables of an episode simulated with these commands (:attr:`SimulatedRobot.latents`). A steering
    request's true effect is the difference of two such rollouts.
    """
    try:
        import mujoco  # deferred: MuJoCo only for the arm simulator
    except ImportError:
        raise ImportError("arm_rollout needs the 'mujoco' package: pip install mujoco") from None
    commands = np.asarray(commands, dtype=np.float64)
    if commands.ndim != 2 or commands.shape[1] != len(ARM_JOINTS) or len(commands) < 1:
        raise ConfigError(f"arm_rollout: commands of shape {commands.shape}; expected frames x {len(ARM_JOINTS)}")
    model = mujoco.MjModel.from_xml_string(_ARM_XML)
    substeps = max(1, round(1.0 / (fps * model.opt.timestep)))
    return _arm_roll_out(mujoco, model, commands, substeps, light_threshold, light_delay)


def _setpoints(rng: np.random.Generator, T: int, J: int, rate: float, size: float) -> np.ndarray:
    """Piecewise-constant set-points: on a change (probability ``rate``) a fresh uniform draw in [-size, size]."""
    change = rng.random((T, J)) < rate
    change[0] = True
    draws = rng.uniform(-size, size, size=(T, J))
    last = np.maximum.accumulate(np.where(change, np.arange(T)[:, None], 0), axis=0)
    return np.take_along_axis(draws, last, axis=0)


def _arm_roll_out(
    mujoco, model, a: np.ndarray, substeps: int, light_threshold: float, light_delay: int = 1
) -> np.ndarray:
    """Frames x (joint angles, gate angle, light); the command of frame t acts until frame t+1."""
    data = mujoco.MjData(model)
    arm = [model.joint(name).qposadr[0] for name in ARM_JOINTS]
    gate = model.joint("gate").qposadr[0]
    data.qpos[arm] = a[0]  # start at rest on the first set-point, gate closed
    data.qpos[gate] = model.jnt_range[model.joint("gate").id][0]
    out = np.empty((len(a), len(arm) + 2))
    for t in range(len(a)):
        out[t, :-1] = data.qpos[[*arm, gate]]
        data.ctrl[:] = a[t]
        mujoco.mj_step(model, data, nstep=substeps)
    switch = out[:, -2] > light_threshold
    out[:, -1] = np.r_[np.repeat(switch[:1], light_delay), switch][: len(switch)]  # light_delay frames later
    return out
