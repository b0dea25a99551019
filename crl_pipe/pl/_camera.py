"""What latents learned from camera frames see: extreme frames beside trajectories, and decoder traversals."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._common import BLUE, ORANGE, styled

#: Grey of a latent the report calls not identified (its curve and its name).
_UNIDENTIFIED = "0.45"
#: Frames of a latent's lowest values are framed orange, of its highest blue (Okabe-Ito).
_LOW, _HIGH = ORANGE, BLUE


@styled
def latent_frames(
    exemplars: np.ndarray,
    values: np.ndarray,
    trajectory: pd.DataFrame,
    *,
    latents: Sequence[str],
    identified: Sequence[str] = (),
    time_key: str = "timestamp",
    title: str = "",
) -> Figure:
    """One row per latent: the frames where it is lowest, those where it is highest, and its course over an episode.

    Parameters
    ----------
    exemplars
        Latents x 2 (lowest, highest) x k x height x width x 3 uint8 RGB frames (one camera).
    values
        Latents x 2 x k: the latent's value (SD units) at those frames.
    trajectory
        One episode: a column ``time_key`` (s) and one column per latent (SD units), in time order.
    latents
        Latent names, in the order of ``exemplars``.
    identified
        The latents named after the command that moves them; the others are drawn grey and marked
        "not identified".
    time_key
        Column of ``trajectory`` with the time axis (s).
    title
        Figure title (dataset and model).
    """
    m, _, k = values.shape
    fig, axes = plt.subplots(
        m, 2 * k + 1, figsize=(1.15 * 2 * k + 4.2, 1.25 * m + 0.6), squeeze=False,
        gridspec_kw={"width_ratios": [1] * (2 * k) + [3.2]},
    )  # fmt: skip
    time = trajectory[time_key].to_numpy(dtype=float)
    for j, name in enumerate(latents):
        known = name in identified
        colour = "black" if known else _UNIDENTIFIED
        for end in (0, 1):
            for i in range(k):
                ax = axes[j, end * k + i]
                ax.imshow(exemplars[j, end, i], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(f"{values[j, end, i]:+.1f}", fontsize=7, labelpad=1)
                for side in ax.spines.values():  # a frame on all four sides (the style hides top and right)
                    side.set_visible(True)
                    side.set_edgecolor(_HIGH if end else _LOW)
                    side.set_linewidth(1.5)
        axes[j, 0].set_ylabel(name if known else f"{name}\n(not identified)", fontsize=8, color=colour, rotation=0,
                              ha="right", va="center")  # fmt: skip
        ax = axes[j, -1]
        ax.plot(time, trajectory[name].to_numpy(dtype=float), color=colour, lw=1.1)
        ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
        ax.tick_params(labelsize=7)
        ax.set_ylabel("SD", fontsize=7)
        if j < m - 1:
            ax.set_xticklabels([])
    axes[0, 0].set_title("lowest", fontsize=8, color=_LOW, loc="left")
    axes[0, k].set_title("highest", fontsize=8, color=_HIGH, loc="left")
    axes[0, -1].set_title("over one episode", fontsize=8, loc="left")
    axes[-1, -1].set_xlabel("time (s)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.4, w_pad=0.2, h_pad=0.3, rect=(0, 0, 1, 0.97))
    return fig


@styled
def latent_traversal(
    frames: np.ndarray,
    steps: Sequence[float],
    *,
    latents: Sequence[str],
    identified: Sequence[str] = (),
    title: str = "",
) -> Figure:
    """What the decoder draws as one latent moves and the others stay at a typical frame's values.

    Parameters
    ----------
    frames
        Latents x len(steps) x height x width x 3 uint8 RGB (one camera).
    steps
        The values (SD units) latent j takes along its row.
    latents, identified, title
        As in :func:`latent_frames`.
    """
    m, n = frames.shape[:2]
    fig, axes = plt.subplots(m, n, figsize=(1.1 * n + 1.2, 1.15 * m + 0.5), squeeze=False)
    for j, name in enumerate(latents):
        for i in range(n):
            ax = axes[j, i]
            ax.imshow(frames[j, i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == m - 1:
                ax.set_xlabel(f"{steps[i]:+.0f} SD", fontsize=7)
        known = name in identified
        axes[j, 0].set_ylabel(name if known else f"{name}\n(not identified)", fontsize=8, rotation=0, ha="right",
                              va="center", color="black" if known else _UNIDENTIFIED)  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.4, w_pad=0.1, h_pad=0.2, rect=(0, 0, 1, 0.96))
    return fig
