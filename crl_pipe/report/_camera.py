"""The report's block for models that learn latents from camera frames (``camera``): what each latent sees.

One function, :func:`camera_blocks`, builds the block's context from a model folder and the
interventions table; ``templates/camera.html.j2`` renders it (included in the latents section).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Values (latent SDs) a latent takes along its row of the decoder traversal.
TRAVERSAL_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def camera_blocks(dataset: str, models: Sequence[Any], labels: pd.DataFrame, figure) -> list[dict[str, Any]]:
    """For each ``camera`` model: per camera, its extreme frames beside one episode's trajectories, and
    a decoder traversal; which latents are identified (named after a command) and which are not.

    ``models``: the report's :class:`~crl_pipe.report._html.ModelArtifacts`; ``labels``: the
    ``interventions`` table (with ``episode`` and ``timestamp`` for robot logs); ``figure``: turns a
    matplotlib figure and its caption into the report's embedded figure.
    """
    from .. import pl
    from ..io import read_table
    from ..models import load_model

    blocks = []
    for artifacts in models:
        if artifacts.meta.get("model") != "camera" or "latents" not in artifacts.files:
            continue
        model = load_model(artifacts.directory)
        latents = read_table(artifacts.files["latents"], "latents")
        identified = model.identified()
        unnamed = [n for n in model.latent_names if n not in identified]
        trajectory, episode = _one_episode(latents, labels, model.latent_names)
        exemplars, values, _ = model.exemplar_frames()
        typical = latents[model.latent_names].median().to_numpy()
        figures = []
        for i, camera in enumerate(model.camera_names):
            title = f"{dataset}: {artifacts.name}, camera {camera}"
            frames = exemplars[..., 3 * i : 3 * i + 3]
            fig = pl.latent_frames(
                frames, values, trajectory, latents=model.latent_names, identified=identified, title=title
            )
            caption = (
                f"Camera {camera}: for each latent, the training frames where it is lowest (orange) and highest "
                f"(blue), its value under each frame, and its course over episode {episode}. A latent named after "
                "a joint should show that joint at its two extremes and nothing else changing in step."
            )
            figures.append(figure(fig, caption))
            grid = np.repeat(typical[None, None, :], len(TRAVERSAL_STEPS), axis=1).repeat(len(typical), axis=0)
            for j in range(len(typical)):
                grid[j, :, j] = TRAVERSAL_STEPS
            drawn = model.render(grid.reshape(-1, len(typical)))[camera]
            drawn = drawn.reshape(len(typical), len(TRAVERSAL_STEPS), *drawn.shape[1:])
            fig = pl.latent_traversal(
                drawn, TRAVERSAL_STEPS, latents=model.latent_names, identified=identified, title=title
            )
            caption = (
                f"Camera {camera}: what the decoder draws as one latent moves from -2 to +2 SD and the others "
                "stay at their median. The decoder is blurry; look for which part of the scene moves along a row."
            )
            figures.append(figure(fig, caption))
        blocks.append({"model": artifacts.name, "identified": identified, "unnamed": unnamed, "figures": figures})
    return blocks


def _one_episode(latents: pd.DataFrame, labels: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, str]:
    """The latents over the first episode (in log order), with its ``timestamp`` (s), and the episode's name."""
    frame = latents.merge(labels[["sample_id", "episode", "timestamp"]], on="sample_id", how="inner")
    if frame.empty:
        return pd.DataFrame({"timestamp": [], **{n: [] for n in names}}), "-"
    episode = str(frame["episode"].iloc[0])
    one = frame[frame["episode"].astype(str) == episode].sort_values("timestamp", kind="stable")
    return one[["timestamp", *names]].reset_index(drop=True), episode
