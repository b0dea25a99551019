"""Camera frames of the MuJoCo arm (``simulate_arm(observation="camera")``): offscreen RGB renders.

The frames are rendered from the noise-free causal variables (joint angles, gate angle, light),
replayed by forward kinematics on a copy of the arm's model that only adds what a camera sees:
thicker, coloured links, a tool in the hand (the wrist turns about its own axis, so only an
offset tool shows it), a panel on the gate, a lamp that lights up with the light, two lights and
a fixed camera. The dynamics of :func:`crl_pipe.simulate.simulate_arm` are untouched (the render
model never steps). Rendering is headless: MuJoCo's EGL backend (Mesa's software renderer where
there is no GPU), else OSMesa; ``MUJOCO_GL`` (``egl`` or ``osmesa``) picks one.

Scenes. ``scene=0`` is the documented default (camera, colours and lamp as below). Any other
``scene`` draws, from that seed, another camera pose (azimuth +-40 degrees, elevation 15-50
degrees, distance x0.85-1.2), another assignment of colours to the links, another lamp position
and another background: the same robot and truth seen through a camera the model was not tuned on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._errors import ConfigError

#: Camera names of the simulated arm (one camera; LeRobot feature ``observation.images.<name>``).
ARM_CAMERAS = ("front",)

#: Colours (RGBA) the links are drawn in, in the default scene: upper arm, forearm, hand + tool.
_PALETTE = ((0.9, 0.15, 0.15, 1.0), (0.15, 0.4, 0.95, 1.0), (0.1, 0.8, 0.25, 1.0), (0.85, 0.2, 0.85, 1.0))
_GATE_RGBA = (1.0, 0.6, 0.05, 1.0)
_LAMP_OFF, _LAMP_ON = (0.25, 0.25, 0.25, 1.0), (1.0, 0.95, 0.35, 1.0)
#: Where the lamp may stand (m): outside the gate's sweep (0.3 to 2.8 rad about the z axis).
_LAMP_SPOTS = ((-0.35, -0.3, 0.1), (0.3, -0.4, 0.1), (0.45, -0.1, 0.1), (-0.45, 0.05, 0.1))


@dataclass(frozen=True)
class Scene:
    """What the camera sees besides the robot: its pose, the link colours, the lamp, the background."""

    azimuth: float = -50.0  # degrees, about the vertical, from the +x axis
    elevation: float = 30.0  # degrees above the horizontal
    distance: float = 2.0  # m from the target point
    target: tuple[float, float, float] = (0.0, 0.0, 0.45)  # m, the point the camera looks at
    links: tuple[int, int, int] = (0, 1, 2)  # palette entries of upper arm, forearm, hand + tool
    lamp: int = 0  # entry of the lamp spots
    background: tuple[float, float, float] = (0.35, 0.35, 0.4)  # the floor's colour

    @classmethod
    def draw(cls, scene: int) -> Scene:
        """The default scene (0), or one drawn from the seed ``scene``."""
        if scene == 0:
            return cls()
        rng = np.random.default_rng([scene, 0x5CE1E])
        base = cls()
        links = tuple(int(i) for i in rng.permutation(len(_PALETTE))[:3])
        return cls(
            azimuth=base.azimuth + rng.uniform(-40.0, 40.0),
            elevation=rng.uniform(15.0, 50.0),
            distance=base.distance * rng.uniform(0.85, 1.2),
            links=links,  # type: ignore[arg-type]
            lamp=int(rng.integers(len(_LAMP_SPOTS))),
            background=tuple(float(c) for c in rng.uniform(0.1, 0.5, size=3)),  # type: ignore[arg-type]
        )


def arm_render_model(mujoco, xml: str, size: int, scene: Scene):
    """The arm's model plus what a camera sees (never stepped: the dynamics stay those of ``xml``)."""
    spec = mujoco.MjSpec.from_string(xml)
    spec.visual.quality.shadowsize = 0  # no shadow maps, no multisampling: ~1 ms a frame in software
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = size
    spec.visual.global_.offheight = size
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    capsule, box, sphere = (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_SPHERE)
    links = [_PALETTE[i] for i in scene.links]
    for geom in spec.geoms:  # the physical geoms are thin: hidden (group 3), drawn anew below; the pusher stays
        geom.group = 0 if geom.name == "pusher" else 3
        geom.rgba = [0.6, 0.6, 0.6, 1.0]
    visual = dict(contype=0, conaffinity=0, density=0.0)
    grey = [0.6, 0.6, 0.6, 1.0]
    spec.body("base").add_geom(type=capsule, fromto=[0, 0, -0.45, 0, 0, 0.1], size=[0.045, 0, 0], rgba=grey, **visual)
    for body, length, rgba in (("upper", 0.3, links[0]), ("fore", 0.25, links[1])):
        spec.body(body).add_geom(type=capsule, fromto=[0, 0, 0, length, 0, 0], size=[0.04, 0, 0], rgba=rgba, **visual)
    # the hand and a 0.2 m tool bent down by 90 degrees: a wrist turn swings it where the camera sees it
    hand = spec.body("hand")
    hand.add_geom(type=capsule, fromto=[0, 0, 0, 0.12, 0, 0], size=[0.035, 0, 0], rgba=links[2], **visual)
    hand.add_geom(type=capsule, fromto=[0.12, 0, 0, 0.12, 0, -0.2], size=[0.03, 0, 0], rgba=links[2], **visual)
    gate = spec.body("gate_body")
    gate.add_geom(type=box, pos=[0.13, 0, 0.04], size=[0.12, 0.015, 0.12], rgba=_GATE_RGBA, **visual)
    lamp = list(_LAMP_SPOTS[scene.lamp])
    spec.worldbody.add_geom(name="lamp", type=sphere, pos=lamp, size=[0.07, 0, 0])
    # the lamp's own light: on with the light, it brightens the floor around the lamp
    spec.worldbody.add_light(
        name="lamp", pos=[lamp[0], lamp[1], lamp[2] + 0.1], dir=[0, 0, -1], diffuse=[1.0, 0.9, 0.4],
        attenuation=[0.3, 0.0, 1.5], cutoff=80, exponent=1,
    )  # fmt: skip
    floor = list(scene.background) + [1.0]
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, pos=[0, 0, -0.35], size=[20, 20, 0.1], rgba=floor)
    spec.worldbody.add_light(pos=[0.5, -0.5, 2.0], dir=[-0.2, 0.2, -1.0], diffuse=[0.6, 0.6, 0.6])
    spec.worldbody.add_camera(name="front", pos=list(_camera_pos(scene)), xyaxes=list(_camera_axes(scene)))
    return spec.compile()


def _camera_pos(scene: Scene) -> np.ndarray:
    az, el = np.deg2rad(scene.azimuth), np.deg2rad(scene.elevation)
    direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return np.asarray(scene.target) + scene.distance * direction


def _camera_axes(scene: Scene) -> np.ndarray:
    """MuJoCo ``xyaxes`` of a camera at :func:`_camera_pos` looking at the target (it looks along -z)."""
    forward = np.asarray(scene.target) - _camera_pos(scene)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.concatenate([right, np.cross(right, forward)])


def arm_frames(mujoco, xml: str, true: np.ndarray, joints: tuple[str, ...], *, size: int, scene: int) -> np.ndarray:
    """Frames x size x size x 3 uint8 RGB renders of the noise-free variables ``true`` (joints, gate, light)."""
    if size < 8 or size > 1024:
        raise ConfigError(f"simulate_arm: image_size={size}; expected 8 to 1024 pixels")
    model = arm_render_model(mujoco, xml, size, Scene.draw(scene))
    data = mujoco.MjData(model)
    adr = [model.joint(name).qposadr[0] for name in (*joints, "gate")]
    lamp, bulb = model.geom("lamp").id, model.light("lamp").id
    out = np.empty((len(true), size, size, 3), dtype=np.uint8)
    with _Offscreen(mujoco, model, size, Scene.draw(scene)) as render:
        for t, row in enumerate(true):
            data.qpos[adr] = row[:-1]
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)  # the camera's pose (kinematics leaves it out)
            on = bool(row[-1] > 0.5)
            model.geom_rgba[lamp] = _LAMP_ON if on else _LAMP_OFF
            model.light_active[bulb] = on
            out[t] = render(data)
    return out


class _Offscreen:
    """A headless OpenGL context (EGL, else OSMesa) and MuJoCo's offscreen buffer, used as a context manager."""

    def __init__(self, mujoco, model, size: int, scene: Scene) -> None:
        self.mujoco, self.model, self.size, self.scene = mujoco, model, size, scene

    def __enter__(self):
        mj = self.mujoco
        self.gl = _gl_context(self.size)
        self.gl.make_current()
        self.con = mj.MjrContext(self.model, mj.mjtFontScale.mjFONTSCALE_100)
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, self.con)
        self.vis = mj.MjvScene(self.model, maxgeom=200)
        self.opt = mj.MjvOption()
        self.cam = mj.MjvCamera()
        self.cam.type = mj.mjtCamera.mjCAMERA_FIXED
        self.cam.fixedcamid = self.model.camera("front").id
        self.rect = mj.MjrRect(0, 0, self.size, self.size)
        self.pixels = np.empty((self.size, self.size, 3), dtype=np.uint8)
        return self._render

    def _render(self, data) -> np.ndarray:
        mj = self.mujoco
        mj.mjv_updateScene(self.model, data, self.opt, None, self.cam, mj.mjtCatBit.mjCAT_ALL, self.vis)
        mj.mjr_render(self.rect, self.vis, self.con)
        mj.mjr_readPixels(self.pixels, None, self.rect, self.con)
        return self.pixels[::-1]  # OpenGL's rows run bottom-up

    def __exit__(self, *exc) -> None:
        self.con.free()
        self.gl.free()


def _gl_context(size: int):
    """A headless GL context: the backend ``MUJOCO_GL`` names (egl or osmesa), else EGL, else OSMesa."""
    wanted = os.environ.get("MUJOCO_GL", "").lower()
    backends = [wanted] if wanted in ("egl", "osmesa") else ["egl", "osmesa"]
    errors = []
    for backend in backends:
        try:
            if backend == "egl":
                from mujoco.egl import GLContext  # deferred: MuJoCo's GL backends load their C libraries
            else:
                from mujoco.osmesa import GLContext  # deferred: as above
            return GLContext(size, size)
        except Exception as err:  # a missing library shows as ImportError, OSError or a GL error
            errors.append(f"{backend}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
    raise ImportError(
        "simulate_arm(observation='camera') renders offscreen and found no headless OpenGL "
        f"({'; '.join(errors)}); expected EGL (apt-get install libegl1 libgl1-mesa-dri) or OSMesa (libosmesa6)"
    )


def gl_problem() -> str | None:
    """Why the arm cannot be rendered here (no mujoco, no headless OpenGL), or None when it can."""
    try:
        import mujoco  # noqa: F401

        _gl_context(8).free()
    except ImportError as err:
        return str(err)
    return None
