"""Section "What the latents see": for models that learn their latents from camera frames, the frames
where each latent is lowest and highest beside its course over an episode, and a decoder traversal.

Shown only when some model declares ``sees_frames`` (:class:`~crl_pipe.models.ModelCapabilities`);
the model folder's checkpoint carries the exemplar frames and the decoder, so nothing is decoded
from video here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ... import pl
from ...models.registry import model_capabilities, model_names
from .._blocks import figure
from .._inputs import ModelArtifacts, ReportInputs

#: Values (latent SDs) a latent takes along its row of the decoder traversal.
TRAVERSAL_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def sees_frames(m: ModelArtifacts) -> bool:
    """Whether ``m`` is a registered model that learns from camera frames and wrote its latents."""
    name = m.meta.get("model")
    registered = isinstance(name, str) and name in model_names()
    return registered and model_capabilities(name).sees_frames and "latents" in m.files


def any_sees_frames(inputs: ReportInputs) -> bool:
    """Whether the section has something to show (the page leaves it out otherwise)."""
    return any(sees_frames(m) for m in inputs.models)


def frames_section(inputs: ReportInputs) -> list[dict[str, Any]]:
    """One block per model that sees frames: per camera, its extreme frames beside one episode's
    trajectories and a decoder traversal; which latents are identified (named after a command) and which not."""
    return [_block(m, inputs) for m in inputs.models if sees_frames(m)]


def _block(m: ModelArtifacts, inputs: ReportInputs) -> dict[str, Any]:
    from ...io import read_table  # deferred: only a report with such a model reads its latents again
    from ...models import load_model  # deferred: torch loads only for a model that sees frames

    model = load_model(m.directory)
    latents = read_table(m.files["latents"], "latents")
    identified = model.identified()
    unnamed = [n for n in model.latent_names if n not in identified]
    trajectory, episode = _one_episode(latents, inputs.labels, model.latent_names)
    exemplars, values, _ = model.exemplar_frames()
    typical = latents[model.latent_names].median().to_numpy()
    figures = []
    for i, camera in enumerate(model.camera_names):
        title = f"{inputs.dataset}: {m.name}, camera {camera}"
        fig = pl.latent_frames(
            exemplars[..., 3 * i : 3 * i + 3],
            values,
            trajectory,
            latents=model.latent_names,
            identified=identified,
            title=title,
        )
        caption = (
            f"Camera {camera}: for each latent, the training frames where it is lowest (orange) and highest "
            f"(blue), its value under each frame, and its course over episode {episode}. A latent named after "
            "a joint should show that joint at its two extremes and nothing else changing in step."
        )
        figures.append(figure(fig, caption))
        drawn = model.render(_traversal_grid(typical))[camera]
        drawn = drawn.reshape(len(typical), len(TRAVERSAL_STEPS), *drawn.shape[1:])
        fig = pl.latent_traversal(
            drawn, TRAVERSAL_STEPS, latents=model.latent_names, identified=identified, title=title
        )
        caption = (
            f"Camera {camera}: what the decoder draws as one latent moves from -2 to +2 SD and the others "
            "stay at their median. The decoder is blurry; look for which part of the scene moves along a row."
        )
        figures.append(figure(fig, caption))
    return {"model": m.name, "identified": identified, "unnamed": unnamed, "figures": figures}


def _traversal_grid(typical: np.ndarray) -> np.ndarray:
    """(latents * steps) x latents: block j moves latent j through :data:`TRAVERSAL_STEPS`, the rest at ``typical``."""
    grid = np.repeat(typical[None, None, :], len(TRAVERSAL_STEPS), axis=1).repeat(len(typical), axis=0)
    for j in range(len(typical)):
        grid[j, :, j] = TRAVERSAL_STEPS
    return grid.reshape(-1, len(typical))


def _one_episode(latents: pd.DataFrame, labels: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, str]:
    """The latents over the first episode (in log order), with its ``timestamp`` (s), and the episode's name."""
    if not {"episode", "timestamp"} <= set(labels):
        return pd.DataFrame({"timestamp": [], **{n: [] for n in names}}), "-"
    frame = latents.merge(labels[["sample_id", "episode", "timestamp"]], on="sample_id", how="inner")
    if frame.empty:
        return pd.DataFrame({"timestamp": [], **{n: [] for n in names}}), "-"
    episode = str(frame["episode"].iloc[0])
    one = frame[frame["episode"].astype(str) == episode].sort_values("timestamp", kind="stable")
    return one[["timestamp", *names]].reset_index(drop=True), episode
