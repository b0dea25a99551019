"""Which program each perturbation hits: a heatmap of intervention-target scores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._common import HEATMAP_MAX_ROWS, assigned_targets, clamp, ordered_unique, require_columns, short, styled


def heatmap_matrix(targets: pd.DataFrame, *, max_rows: int = HEATMAP_MAX_ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score matrix drawn by :func:`target_heatmap` and the boolean mask of assigned cells.

    Rows are interventions (at most ``max_rows``: those with the largest ``max |score|``), grouped
    by their assigned latent so that a clean model shows a block diagonal; columns keep the
    model's latent order.
    """
    require_columns(targets, ["intervention", "latent", "score"], "targets table")
    latents = ordered_unique(targets["latent"])
    interventions = ordered_unique(targets["intervention"])
    scores = targets.groupby(["intervention", "latent"], sort=False)["score"].mean().unstack("latent")
    scores = scores.reindex(index=interventions, columns=latents).astype(float)
    if len(scores) > max_rows:
        strength = scores.abs().max(axis=1).fillna(-np.inf)
        keep = strength.sort_values(ascending=False, kind="stable").index[:max_rows]
        scores = scores.loc[[i for i in interventions if i in set(keep)]]
    assigned = assigned_targets(targets)
    mask = pd.DataFrame(False, index=scores.index, columns=scores.columns)
    for row in assigned.itertuples(index=False):
        if row.intervention in mask.index and row.latent in mask.columns:
            mask.loc[row.intervention, row.latent] = True
    first = assigned.drop_duplicates("intervention").set_index("intervention")
    col_pos = {name: j for j, name in enumerate(latents)}
    key = pd.DataFrame(
        {
            "col": [col_pos.get(first["latent"].get(i), len(latents)) for i in scores.index],
            "strength": [-abs(first["score"].get(i, 0.0)) for i in scores.index],
        },
        index=scores.index,
    )
    order = key.sort_values(["col", "strength"], kind="stable").index
    return scores.loc[order], mask.loc[order]


@styled
def target_heatmap(targets: pd.DataFrame, *, title: str, max_rows: int = HEATMAP_MAX_ROWS) -> Figure:
    """Heatmap of ``targets.parquet``: rows interventions, columns latents, colour = score.

    The palette diverges around 0 (red raises, blue lowers the latent); the cells the model assigns
    as targets (``is_target``, or the largest ``|score|`` when the column is absent) are boxed.

    Parameters
    ----------
    targets
        Long table ``intervention, latent, score[, is_target]``.
    title
        Figure title (include the dataset and model).
    max_rows
        Above this many interventions only the ``max_rows`` with the largest ``max |score|`` are drawn.
    """
    scores, mask = heatmap_matrix(targets, max_rows=max_rows)
    n_rows, n_cols = scores.shape
    n_total = targets["intervention"].nunique()
    height = clamp(0.2 * n_rows + 1.8, 2.8, 16.0)
    width = clamp(0.42 * n_cols + 3.5, 5.0, 14.0)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    finite = np.abs(scores.to_numpy()[np.isfinite(scores.to_numpy())])
    # Symmetric limits centre the diverging palette on 0 (seaborn's `center=` goes through a deprecated API).
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    annotate = n_rows * n_cols <= 150
    sns.heatmap(
        scores,
        ax=ax,
        cmap="vlag",
        vmin=-vmax,
        vmax=vmax,
        annot=annotate,
        fmt=".2g",
        annot_kws={"fontsize": 7},
        linewidths=0.3,
        linecolor="white",
        cbar_kws={"label": "score (effect of the intervention on the latent)", "shrink": 0.8},
        xticklabels=[short(c, 20) for c in scores.columns],
        yticklabels=[short(i) for i in scores.index],
    )
    for i, j in zip(*np.nonzero(mask.to_numpy()), strict=True):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    ax.tick_params(axis="y", labelsize=clamp(10 - n_rows / 12, 5.0, 9.0), length=0)
    ax.tick_params(axis="x", labelsize=clamp(10 - n_cols / 6, 6.0, 9.0), length=0)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlabel("latent program")
    shown = f" (top {n_rows} of {n_total} by max |score|)" if n_rows < n_total else ""
    ax.set_ylabel(f"intervention{shown}")
    ax.set_title(f"{title}\nboxed = assigned target")
    return fig
