"""``camera``: causal variables learned from camera frames, with the commands as the interventions.

The robot's causal variables are not logged; a camera sees them. ``camera`` learns one latent per
variable the intervention labels target (each commanded joint, named after it) plus ``n_latents``
minus that many unnamed ones (``z1``, ``z2`` ...), from the frames in ``CRLData.frames``
(``obsm["frames.<camera>"]`` of the ingested log, decoded once at ingest), then fits the sparse
lagged transition of :class:`~crl_pipe.models.TemporalSEM` on them: the graph among latents, the
commands' targets and their lags, as ``temporal`` gives them for measured states.

Encoder. A convolutional autoencoder (:mod:`crl_pipe.models._camera_module`) trained on minibatches
of frames with the prior of ``temporal``'s sensor route (:mod:`crl_pipe.models._temporal_encoder`):
latent j is explained by the history of the commands labelled as intervening on j alone (iVAE's
auxiliary variable, with CITRIS's intervention targets); a variable that only events intervene on
(an event flag, no command) is to change on the frames just after its events and hold still
between them (a switched or shifted variable moves when intervened on, BISCUIT-style; its sign is
left as learned). The reconstruction trains the decoder and the unnamed latents. The identifiability argument is the
same: a named latent that mixed in another variable would keep variance its own commands cannot
explain (the other variable moves with other commands), so the prior's optimum is the commanded
variable, up to an affine map of itself (the sign is fixed to rise with its commands). The unnamed
latents hold what else the frames show (on the simulated arm: the gate and the light, which no
command moves): they are NOT identified (any invertible mix of them fits as well), keep neutral
names, and evaluation cannot map them to true variables.

Assumptions: every named variable is moved by its own, labelled commands; the frames determine the
variables (nothing that matters is hidden or out of view); other causes of a named variable are not
in the prior, so the encoder may trade a little of them away, which shows as weak spurious edges.

The model keeps, for the report, the training frames where each latent is lowest and highest
(``exemplars``) and the decoder (``render``: what it draws for chosen latent values). It trains on
the GPU when there is one (``device``), on ``threads`` CPU threads otherwise; deterministic on the
CPU for a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._errors import ModelError
from ..io._camera import stacked
from ._base import CRLModel
from ._camera_module import FrameAutoencoder, fit_frames, history_features
from ._data import CRLData
from ._temporal_encoder import HISTORY, _labels, _windows, action_mask, latent_names, orient
from ._training import cpu_threads, deterministic, resolve_device, seed_everything
from .registry import model_capabilities
from .temporal import TemporalSEM, _columns


class CameraSEM(TemporalSEM):
    """Latents learned from camera frames, and the sparse lagged transition among them and the commands.

    Parameters
    ----------
    actions, n_lags, max_lags, n_action_lags, alpha, edge_threshold, self_loops, intervention_shift,
    instantaneous, max_iter, tol, penalize_own_commands
        The transition model, as in :class:`~crl_pipe.models.TemporalSEM` (own commands exempt from
        the penalty); here ``n_lags`` is 1 by default, the order the camera route was measured with.
    cameras
        Cameras to learn from (names of ``CRLData.frames``); default every camera of the data. Several
        cameras are stacked as image channels (they must share one frame size).
    n_latents
        Latents: the variables the intervention labels target come first, named after them; the
        others are ``z1``, ``z2`` ... Default: the targeted variables plus 2.
    steps
        Optimisation steps (minibatches), whatever the number of frames: the fit's cost.
    batch_size
        Frames per step (the prior's R² is estimated on each batch: keep it >= 128).
    lr
        Adam learning rate.
    width
        Feature maps of the first convolution (deeper ones have up to twice as many).
    warm_up
        Fraction of the steps in which the prior alone trains the encoder, before the reconstruction joins.
    n_exemplars
        Frames kept per latent and end (lowest, highest) for the report.
    device
        ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.
    checkpoint_dir, checkpoint_every, threads
        Run settings, not model parameters: ``threads`` limits torch's CPU threads; a fit is
        minutes, so it keeps no resumable checkpoint (``checkpoint_dir`` is accepted and unused).
    """

    name = "camera"
    capabilities = model_capabilities(name)

    def __init__(
        self,
        actions: str | list[str] = "action.",
        n_lags: int | str = 1,
        max_lags: int = 5,
        n_action_lags: int = 12,
        alpha: float | str = "auto",
        edge_threshold: float = 0.1,
        self_loops: bool = False,
        intervention_shift: bool = True,
        instantaneous: bool = False,
        max_iter: int = 5000,
        tol: float = 1e-7,
        penalize_own_commands: bool = False,
        cameras: list[str] | None = None,
        n_latents: int | None = None,
        steps: int = 1000,
        batch_size: int = 128,
        lr: float = 2e-3,
        width: int = 16,
        warm_up: float = 0.3,
        n_exemplars: int = 3,
        device: str = "auto",
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        threads: int | None = None,
    ) -> None:
        CRLModel.__init__(
            self, actions=actions, n_lags=n_lags, max_lags=max_lags, n_action_lags=n_action_lags, alpha=alpha,
            edge_threshold=edge_threshold, self_loops=self_loops, intervention_shift=intervention_shift,
            instantaneous=instantaneous, max_iter=max_iter, tol=tol,
            penalize_own_commands=penalize_own_commands, cameras=cameras, n_latents=n_latents,
            steps=steps, batch_size=batch_size, lr=lr, width=width, warm_up=warm_up, n_exemplars=n_exemplars,
            device=device,
        )  # fmt: skip
        if not 0 <= warm_up < 0.8 or steps < 1 or batch_size < 16 or width < 1 or n_exemplars < 1:
            raise ModelError(
                f"model camera: warm_up={warm_up}, steps={steps}, batch_size={batch_size}, width={width}, "
                f"n_exemplars={n_exemplars}; expected 0 <= warm_up < 0.8, steps >= 1, batch_size >= 16, "
                "width >= 1, n_exemplars >= 1"
            )
        self.threads = threads
        self.encoder: FrameAutoencoder | None = None
        self.sensor_names: list[str] = []
        self.action_names: list[str] = []
        self.camera_names: list[str] = []
        self.n_named = 0
        self.exemplar_ids: list[str] = []
        self.alpha_ = float("nan")

    # -- latents from frames (TemporalSEM.fit calls this, then fits the transition on them) --------
    def _latents(self, data: CRLData, segments: list[tuple[int, int]], seed: int) -> np.ndarray:
        frames = self._frames(data)
        self.action_names = _action_names(data, self.params["actions"])
        a = _columns(data, self.action_names)
        n = self.params["n_latents"]
        named = {t for lab in data.perturbations for t in data.targets.get(lab, ())}
        self.latent_names, self.n_named = latent_names(data, n if n is not None else len(named) + 2)
        shift = _labels(data, self.latent_names)
        rows = _windows(segments, HISTORY + 1)
        if len(rows) < self.params["batch_size"]:
            raise ModelError(
                f"model camera: {len(rows)} frames with {HISTORY} frames of command history; expected at least "
                f"batch_size = {self.params['batch_size']} (longer or more episodes, or a smaller batch_size)"
            )
        mask = command_mask(_steps(a, segments), shift, self.n_named)
        # a latent that commands move: regressed on their history; one that only events move: still between them
        bases = [
            history_features(a[:, mask[:, j]], rows, HISTORY) if mask[:, j].any() else None for j in range(self.n_named)
        ]
        quiet = {j: _quiet(shift[:, j], rows, HISTORY) for j in range(self.n_named) if bases[j] is None}
        device = resolve_device(self.params["device"])
        p = self.params
        with deterministic(device), cpu_threads(self.threads), torch.random.fork_rng(devices=[]):
            seed_everything(seed)
            self.encoder = FrameAutoencoder(frames.shape[1], frames.shape[3], len(self.latent_names), p["width"])
            self.encoder.to(device)
            losses = fit_frames(
                self.encoder, frames, bases, rows, quiet=quiet, steps=p["steps"], batch_size=p["batch_size"],
                lr=p["lr"], warm_up=p["warm_up"], seed=seed, device=device,
            )  # fmt: skip
            z = self.encoder.transform(frames, device)
            self.encoder.to("cpu")
        self.encoder.z_mean.copy_(torch.as_tensor(z.mean(axis=0)))
        self.encoder.z_sd.copy_(torch.as_tensor(z.std(axis=0) + 1e-9))
        z = (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-9)
        orient(self.encoder, z, a, mask)  # named latents rise with their commands
        z = z * self.encoder.z_sign.numpy()
        self._keep_exemplars(data, frames, z)
        self._keep_loadings(z)
        self._losses = losses
        return z

    def fit(self, data: CRLData, *, seed: int = 0) -> CameraSEM:
        super().fit(data, seed=seed)
        losses = self._losses
        # one row per block of 10 steps ("epoch" = its last step)
        steps = np.minimum(np.arange(1, len(losses) + 1) * 10, self.params["steps"])
        self.history = pd.DataFrame({"epoch": steps, "split": "train", "loss": losses})
        return self

    def _frames(self, data: CRLData) -> np.ndarray:
        """The chosen cameras' frames, stacked as channels (rows x size x size x 3 k)."""
        if not data.frames:
            raise ModelError(
                "model camera: the data has no camera frames; expected a robot log read with "
                "datasets.<name>.cameras (obsm['frames.<camera>'])"
            )
        wanted = self.camera_names or self.params["cameras"] or sorted(data.frames)
        missing = [c for c in wanted if c not in data.frames]
        if missing:
            raise ModelError(
                f"model camera: camera(s) {missing} not in the data; expected some of {sorted(data.frames)}"
            )
        self.camera_names = list(wanted)
        return stacked({c: data.frames[c] for c in self.camera_names})

    def _keep_exemplars(self, data: CRLData, frames: np.ndarray, z: np.ndarray) -> None:
        """Per latent, the ``n_exemplars`` frames where it is lowest and highest (>= 30 frames apart in an episode)."""
        k = int(self.params["n_exemplars"])
        episodes = data.obs["episode"].to_numpy() if data.obs is not None else np.zeros(len(z))
        frame = data.obs["frame"].to_numpy() if data.obs is not None else np.arange(len(z))
        picks = np.empty((z.shape[1], 2, k), dtype=np.int64)
        for j in range(z.shape[1]):
            order = np.argsort(z[:, j], kind="stable")
            picks[j, 0] = _spread(order, episodes, frame, k)
            picks[j, 1] = _spread(order[::-1], episodes, frame, k)
        images = frames[picks.ravel()].reshape(*picks.shape, *frames.shape[1:])
        values = np.stack([z[picks[j], j] for j in range(z.shape[1])])
        self.register_buffer("exemplars", torch.from_numpy(np.ascontiguousarray(images)))
        self.register_buffer("exemplar_values", torch.from_numpy(values))
        self.exemplar_ids = [str(s) for s in data.sample_ids[picks.ravel()]]

    def _keep_loadings(self, z: np.ndarray) -> None:
        """latents x cameras: mean |change| of the decoded frame (0-255 units) as a latent moves -1 to +1 SD
        from the median of the others: how much of what each camera shows a latent draws."""
        base = np.median(z, axis=0)
        grid = np.repeat(base[None, None, :], 2, axis=1).repeat(len(base), axis=0)
        for j in range(len(base)):
            grid[j, :, j] = base[j] - 1.0, base[j] + 1.0
        drawn = self.encoder.render(grid.reshape(-1, len(base))).astype(np.float64)
        drawn = drawn.reshape(len(base), 2, *drawn.shape[1:])
        change = np.abs(drawn[:, 1] - drawn[:, 0])  # latents x size x size x 3k
        per_camera = [change[..., 3 * i : 3 * i + 3].mean(axis=(1, 2, 3)) for i in range(len(self.camera_names))]
        self.register_buffer("loadings", torch.as_tensor(np.stack(per_camera, axis=1)))

    # -- outputs -----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        z = self.encoder.transform(self._frames(data))
        frame = pd.DataFrame(z.astype(np.float64), columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_loadings(self) -> pd.DataFrame:
        """``latent, feature, loading``: per latent and camera, the mean |change| of the decoded frame
        (pixel values 0-255) as the latent moves from -1 to +1 SD, the others at their median."""
        table = pd.DataFrame(self.loadings.numpy(), index=self.latent_names, columns=self.camera_names)
        return table.rename_axis(index="latent", columns="feature").stack().reset_index(name="loading")

    def identified(self) -> list[str]:
        """The latents named after the command that moves them (the others are not identified)."""
        return self.latent_names[: self.n_named]

    def render(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Camera -> frames (n x size x size x 3 uint8) the decoder draws for latents ``z`` (n x latents,
        in the units of :meth:`get_latent_representation`)."""
        images = self.encoder.render(np.atleast_2d(z))
        return {c: images[..., 3 * i : 3 * i + 3] for i, c in enumerate(self.camera_names)}

    def exemplar_frames(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(frames: latents x 2 (lowest, highest) x n_exemplars x size x size x 3 k uint8, their latent values,
        their sample ids (flattened in the same order))."""
        return self.exemplars.numpy(), self.exemplar_values.numpy(), list(self.exemplar_ids)

    # -- checkpoints -------------------------------------------------------------------------------
    def _extra_state_json(self) -> dict[str, Any]:
        size, channels = (self.encoder.size, self.encoder.channels) if self.encoder else (0, 0)
        return {
            "action_names": self.action_names,
            "alpha": self.alpha_,
            "camera_names": self.camera_names,
            "n_named": self.n_named,
            "exemplar_ids": self.exemplar_ids,
            "frame_size": size,
            "channels": channels,
        }

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.action_names = list(extra["action_names"])
        self.alpha_ = float(extra["alpha"])
        self.camera_names = list(extra["camera_names"])
        self.n_named = int(extra["n_named"])
        self.exemplar_ids = list(extra["exemplar_ids"])
        sizes = (int(extra["frame_size"]), int(extra["channels"]), len(self.latent_names), int(self.params["width"]))
        self.encoder = FrameAutoencoder(*sizes)


def _action_names(data: CRLData, actions: str | list[str]) -> list[str]:
    """The command channels: those starting with the prefix ``actions``, or the names listed."""
    features = list(data.features)
    names = [f for f in features if f.startswith(actions)] if isinstance(actions, str) else list(actions)
    missing = [f for f in names if f not in features]
    if missing or not names:
        raise ModelError(
            f"model camera: actions={actions!r} matches no command channel (missing {missing[:5]}); "
            f"expected a prefix or names among {features[:5]} ..."
        )
    return names


def command_mask(da: np.ndarray, shift: np.ndarray, n_named: int, share: float = 0.5) -> np.ndarray:
    """actions x latents: the commands that drive each named latent.

    :func:`~crl_pipe.models._temporal_encoder.action_mask` (action k moves much more on frames
    labelled j than elsewhere), kept only where latent j is among the latents that explain k's moves
    best: k's excess mean |step| on j's frames is at least ``share`` of its largest excess. A command
    that changed once together with another joint's (a frame labelled ``pitch+wrist``) would else
    enter the prior of a latent with few labelled frames (seen on 6 x 200 frames of the arm: the wrist
    latent then learned the pitch).
    """
    mask = action_mask(da, shift, n_named)
    excess = np.zeros_like(mask, dtype=np.float64)
    for j in range(n_named):
        on = shift[:, j] > 0
        if on.any() and (~on).any():
            excess[:, j] = np.abs(da[on]).mean(axis=0) - np.abs(da[~on]).mean(axis=0)
    best = excess.max(axis=1, keepdims=True)
    return mask & (excess >= share * np.where(best > 0, best, np.inf))


def _quiet(events: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """Whether no event (indicator ``events``) fell on row i or the ``window`` frames before it, per row of
    ``rows`` (each has ``window`` frames of its own episode before it)."""
    touched = np.zeros(len(rows), dtype=bool)
    for lag in range(window + 1):
        touched |= events[rows - lag] > 0
    return ~touched


def _steps(x: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """Row i: x_i - x_{i-1} within a segment (0 on a segment's first row)."""
    out = np.zeros_like(x, dtype=np.float64)
    for s, e in segments:
        out[s + 1 : e] = np.diff(x[s:e], axis=0)
    return out


def _spread(order: np.ndarray, episodes: np.ndarray, frame: np.ndarray, k: int, gap: int = 30) -> np.ndarray:
    """The first ``k`` rows of ``order`` that lie at least ``gap`` frames from each other within an episode."""
    chosen: list[int] = []
    for i in order:
        if all(episodes[i] != episodes[c] or abs(int(frame[i]) - int(frame[c])) >= gap for c in chosen):
            chosen.append(int(i))
            if len(chosen) == k:
                break
    while len(chosen) < k:  # fewer far-apart frames than asked for: repeat the extreme
        chosen.append(int(order[0]))
    return np.asarray(chosen)
