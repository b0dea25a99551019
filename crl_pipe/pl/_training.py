"""Training curves: loss against epoch for each split."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ._common import BLUE, ORANGE, plain_log_ticks, require_columns, styled

_SPLIT_COLOURS = [BLUE, ORANGE, "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#F0E442", "#000000"]


@styled
def training_curves(history: pd.DataFrame, *, title: str) -> Figure:
    """Loss against epoch, one line per split (train, validation, ...); mean over rows of an epoch.

    Parameters
    ----------
    history
        The ``training.parquet`` table: ``epoch, split, loss``.
    title
        Figure title (include the dataset and model).
    """
    require_columns(history, ["epoch", "split", "loss"], "training table")
    data = (
        history.assign(split=history["split"].astype(str))
        .groupby(["split", "epoch"], sort=False, as_index=False)["loss"]
        .mean()
    )
    splits = list(pd.unique(data["split"]))
    palette = {s: _SPLIT_COLOURS[i % len(_SPLIT_COLOURS)] for i, s in enumerate(splits)}
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    sns.lineplot(data=data, x="epoch", y="loss", hue="split", hue_order=splits, palette=palette, ax=ax, errorbar=None)
    loss = data["loss"].to_numpy(dtype=float)
    loss = loss[np.isfinite(loss)]
    if loss.size and np.all(loss > 0) and loss.max() / loss.min() > 100:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_ylabel("loss (log scale; lower is better)")
    else:
        ax.set_ylabel("loss (lower is better)")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    if ax.get_legend() is not None:
        ax.get_legend().set_frame_on(False)
    return fig
