"""A robot's steering rollout: each state's predicted change against the frames since the command started."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ._common import require_columns, styled

#: States drawn per request (the most changed ones).
MAX_STATES = 6


@styled
def steering_rollout(steering: pd.DataFrame, *, request: str, title: str) -> Figure:
    """Predicted change of the most changed states against frames after the command starts, with intervals.

    Parameters
    ----------
    steering
        A robot's ``steering.parquet`` (``request, feature, frame, predicted_change, lower, upper``).
    request
        The request to draw.
    title
        Figure title (include the dataset, model and request).
    """
    require_columns(steering, ["request", "feature", "frame", "predicted_change", "lower", "upper"], "steering table")
    rows = steering[steering["request"] == request]
    peak = rows.groupby("feature", sort=False)["predicted_change"].apply(lambda x: float(np.abs(x).max()))
    shown = [f for f in peak.sort_values(ascending=False, kind="stable").index if peak[f] > 0][:MAX_STATES]
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    colours = sns.color_palette("colorblind", max(len(shown), 1))
    for colour, feature in zip(colours, shown, strict=False):
        part = rows[rows["feature"] == feature].sort_values("frame")
        ax.plot(part["frame"], part["predicted_change"], color=colour, label=str(feature))
        ax.fill_between(part["frame"], part["lower"], part["upper"], color=colour, alpha=0.2, linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("frames after the command starts")
    ax.set_ylabel("predicted change (state units)")
    ax.set_title(title)
    if shown:
        ax.legend(frameon=False, fontsize="small", loc="best")
    return fig
