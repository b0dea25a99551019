"""Which observed cause (e.g. a robot's command) drives each latent variable."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._common import require_columns, short, styled


def strongest_observed_causes(edges: pd.DataFrame, latents: list[str]) -> pd.DataFrame:
    """Weights of edges from observed (non-latent) sources into latents: latents x sources.

    Sources are ordered to match the rows where their name ends with the latent's name
    (``action.left_elbow`` -> ``left_elbow``), so a one-to-one drive shows as a diagonal.
    """
    require_columns(edges, ["source", "target", "weight"], "graph table")
    latent_set = set(latents)
    observed = edges[~edges["source"].isin(latent_set) & edges["target"].isin(latent_set)]
    matrix = observed.pivot_table(index="target", columns="source", values="weight", aggfunc="sum", fill_value=0.0)
    rows = [lat for lat in latents if lat in matrix.index]
    matched = [c for lat in rows for c in matrix.columns if c.endswith(lat) and c != lat]
    cols = list(dict.fromkeys(matched + sorted(matrix.columns)))
    return matrix.reindex(index=rows, columns=cols, fill_value=0.0)


def n_self_driven(matrix: pd.DataFrame) -> int:
    """Rows whose strongest observed cause is the same-named source (``action.X`` -> ``X``)."""
    best = matrix.abs().idxmax(axis=1)
    return int(sum(str(src).endswith(row) for row, src in best.items()))


@styled
def observed_causes(edges: pd.DataFrame, latents: list[str], *, title: str) -> Figure:
    """Heatmap of observed causes (columns) of each latent (rows), the strongest boxed per row."""
    matrix = strongest_observed_causes(edges, latents)
    # at least 6 x 4 inches, so that a handful of variables still leaves room for the two-line title
    width, height = max(6.0, 2 + 0.28 * matrix.shape[1]), max(4.0, 1.5 + 0.28 * matrix.shape[0])
    fig, ax = plt.subplots(figsize=(width, height))
    limit = float(matrix.abs().to_numpy().max()) or 1.0
    sns.heatmap(
        matrix,
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        ax=ax,
        cbar_kws={"label": "edge weight"},
        xticklabels=[short(c, 20) for c in matrix.columns],
        yticklabels=[short(r, 20) for r in matrix.index],
    )
    for i, col in enumerate(matrix.abs().to_numpy().argmax(axis=1)):
        ax.add_patch(Rectangle((col, i), 1, 1, fill=False, edgecolor="black", lw=1.5))
    ax.set_xlabel("observed cause (e.g. commanded action)")
    ax.set_ylabel("latent (causal variable)")
    ax.set_title(
        f"{title}\n{n_self_driven(matrix)} of {len(matrix)} driven most by their own command (boxed = strongest)"
    )
    fig.tight_layout()
    return fig
