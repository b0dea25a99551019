"""Sensor channels of the MuJoCo arm that mix its causal variables (``simulate_arm(observation="sensors")``).

MuJoCo's own sensors read the arm by forward kinematics (``framepos`` of sites), so each channel is
a nonlinear mix of several joint angles; a photodiode mixes the light with the gate's shadow and a
drifting ambient light. Sites and sensors are added to the arm's model with ``MjSpec``, so the
dynamics of :func:`simulate_arm` stay exactly as they are; readings are replayed from the
noise-free causal variables (positions depend on ``qpos`` only).

Every variable moves some channel, and the channels together determine all six (a learned encoder
needs an injective mix): shoulder yaw and pitch move every site in the camera's frame; the elbow
moves the wrist and the tool tip; the wrist (a hinge about the hand's y axis) swings the tip of the
0.3 m tool, which no site on its axis would show. A supervised MLP from these channels recovers the
variables on held-out episodes with R² 0.99 (yaw, pitch), 0.98 (elbow), 0.90 (wrist), 0.93 (gate),
0.80 (light; seed 0, 7 episodes to train, 3 to test). The camera on the upper arm sees the tool tip
move with elbow and wrist only: without it the wrist shows only in the tip's camera channels, under
the motion of the three other joints. No channel is a copy of one variable: 14 of 16 have R² < 0.9
with every single variable (the two gate channels read 0.93-0.94 against yaw or pitch while the
gate is shut).
"""

from __future__ import annotations

import numpy as np

#: Sites read by ``framepos`` sensors: (body, site name, position in the body's frame).
_SITES = (
    ("fore", "elbow", (0.0, 0.0, 0.0)),  # the elbow joint: shoulder yaw and pitch
    ("hand", "wrist", (0.0, 0.0, 0.0)),  # the wrist joint: yaw, pitch, elbow
    ("hand", "tip", (0.3, 0.0, 0.0)),  # the tip of a 0.3 m tool in the hand: all four joints
)

#: Pose of the motion-capture camera (m; xyz Euler angles, rad): tilted, so each coordinate mixes x, y, z.
CAMERA_POS, CAMERA_EULER = (1.0, -0.8, 1.2), (0.6, -0.5, 0.4)

#: Pose of the camera on the upper arm, in the upper arm's frame (m; xyz Euler angles, rad).
ARM_CAMERA_POS, ARM_CAMERA_EULER = (0.15, 0.1, 0.05), (0.4, 0.7, -0.3)

#: Channel names, in the order of :func:`arm_sensors`' columns.
ARM_SENSORS = (
    *(f"sensor.{site}_{axis}" for _, site, _ in _SITES for axis in "xyz"),
    "sensor.gate_u",  # the gate's tip seen from the upper arm: gate, yaw and pitch
    "sensor.gate_v",
    "sensor.gate_w",
    "sensor.tool_u",  # the tool's tip seen by a camera on the upper arm: elbow and wrist
    "sensor.tool_v",
    "sensor.tool_w",
    "sensor.photodiode",  # light x the gate's shadow + ambient drift
)


def arm_sensor_model(mujoco, xml: str):
    """The arm's model plus sites and ``framepos`` sensors (dynamics unchanged: sites have no mass)."""
    spec = mujoco.MjSpec.from_string(xml)
    for body, name, pos in _SITES:
        spec.body(body).add_site(name=name, pos=list(pos))
    spec.body("gate_body").add_site(name="gate_tip", pos=[0.2, 0.0, 0.0])
    spec.worldbody.add_site(name="camera", pos=list(CAMERA_POS), euler=list(CAMERA_EULER))
    site, body = mujoco.mjtObj.mjOBJ_SITE, mujoco.mjtObj.mjOBJ_BODY
    framepos = dict(type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objtype=site)
    for _, name, _ in _SITES:  # in the frame of a tilted motion-capture camera
        spec.add_sensor(name=name, objname=name, reftype=site, refname="camera", **framepos)
    # a proximity sensor on the upper arm (turns with shoulder yaw and pitch)
    spec.add_sensor(name="gate_tip", objname="gate_tip", reftype=body, refname="upper", **framepos)
    # a camera strapped to the upper arm, tilted, watching the tool: the tip's position relative to
    # the upper arm turns with elbow and wrist only (the wrist is not buried under the shoulder's motion)
    spec.body("upper").add_site(name="arm_camera", pos=list(ARM_CAMERA_POS), euler=list(ARM_CAMERA_EULER))
    spec.add_sensor(name="tool", objname="tip", reftype=site, refname="arm_camera", **framepos)
    return spec.compile()


def arm_sensors(
    mujoco,
    xml: str,
    true: np.ndarray,
    joints: tuple[str, ...],
    episodes: list[int],
    rng: np.random.Generator,
    noise: float,
    fps: float,
) -> np.ndarray:
    """Frames x :data:`ARM_SENSORS` readings of the noise-free variables ``true`` (joints, gate, light).

    ``episodes``: frames per episode (the ambient light drifts within each). Gaussian noise of SD
    ``noise`` (m for positions, relative units for the photodiode) is added to every channel.
    """
    model = arm_sensor_model(mujoco, xml)
    data = mujoco.MjData(model)
    adr = [model.joint(name).qposadr[0] for name in (*joints, "gate")]
    out = np.empty((len(true), len(ARM_SENSORS)))
    for t, row in enumerate(true):
        data.qpos[adr] = row[:-1]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_sensorPos(model, data)
        out[t, :-1] = data.sensordata
    gate, light = true[:, -2], true[:, -1]
    shade = 1.0 / (1.0 + np.exp(-(gate - 1.6) / 0.25))  # the open gate swings between lamp and diode
    ambient = np.concatenate([_ambient(rng, n, fps) for n in episodes])
    out[:, -1] = ambient + light * (1.0 - 0.7 * shade)
    return out + noise * rng.normal(size=out.shape)


def _ambient(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Ambient light: a slow sine (period 5-15 s, amplitude 0.15) of random phase around 0.3."""
    period, phase = rng.uniform(5.0, 15.0) * fps, rng.uniform(0, 2 * np.pi)
    return 0.3 + 0.15 * np.sin(2 * np.pi * np.arange(n) / period + phase)
