"""The report's pictures of what camera latents see (crl_pipe.pl.latent_frames, latent_traversal)."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from crl_pipe import pl
from crl_pipe.pl._common import BLUE, ORANGE

LATENTS = ["elbow", "wrist", "z1"]


def test_latent_frames_show_each_latents_extremes_beside_its_course():
    rng = np.random.default_rng(0)
    k = 2
    exemplars = rng.integers(0, 255, size=(3, 2, k, 8, 8, 3), dtype=np.uint8)
    values = np.sort(rng.normal(size=(3, 2, k)), axis=1)
    trajectory = pd.DataFrame({"timestamp": np.arange(20) / 10, **{n: rng.normal(size=20) for n in LATENTS}})
    fig = pl.latent_frames(exemplars, values, trajectory, latents=LATENTS, identified=["elbow", "wrist"], title="t")
    axes = np.asarray(fig.axes).reshape(3, 2 * k + 1)
    # every frame is the exemplar itself, framed orange (lowest) or blue (highest) on all four sides
    np.testing.assert_array_equal(axes[1, k].images[0].get_array(), exemplars[1, 1, 0])
    for end, colour in ((0, ORANGE), (1, BLUE)):
        spines = axes[0, end * k].spines.values()
        assert all(s.get_visible() and mcolors.same_color(s.get_edgecolor(), colour) for s in spines)
    assert axes[0, 0].get_xlabel() == f"{values[0, 0, 0]:+.1f}"
    # the latent's course over the episode, and the unidentified latent said so
    np.testing.assert_allclose(axes[2, -1].lines[0].get_ydata(), trajectory["z1"])
    assert axes[2, 0].get_ylabel() == "z1\n(not identified)" and axes[0, 0].get_ylabel() == "elbow"
    plt.close(fig)


def test_latent_traversal_one_row_per_latent():
    frames = np.zeros((3, 5, 8, 8, 3), dtype=np.uint8)
    frames[:, :, :4] = np.arange(5, dtype=np.uint8)[None, :, None, None, None] * 50  # brighter along a row
    fig = pl.latent_traversal(frames, (-2, -1, 0, 1, 2), latents=LATENTS, identified=["elbow"])
    axes = np.asarray(fig.axes).reshape(3, 5)
    assert [ax.get_xlabel() for ax in axes[-1]] == ["-2 SD", "-1 SD", "+0 SD", "+1 SD", "+2 SD"]
    np.testing.assert_array_equal(axes[0, 4].images[0].get_array(), frames[0, 4])
    assert axes[1, 0].get_ylabel() == "wrist\n(not identified)"
    plt.close(fig)
