"""Cells per perturbation: a sorted bar plot with the controls highlighted."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._common import CONTROL, NEUTRAL, clamp, plain_log_ticks, require_columns, short, styled


def cell_counts(interventions: pd.DataFrame) -> pd.DataFrame:
    """Cells per intervention label: ``intervention, n_cells, is_control``, most cells first."""
    require_columns(interventions, ["intervention", "is_control"], "interventions table")
    counts = (
        interventions.groupby("intervention", sort=False)
        .agg(n_cells=("is_control", "size"), is_control=("is_control", "any"))
        .reset_index()
    )
    counts["intervention"] = counts["intervention"].astype(str)
    return counts.sort_values(["n_cells", "intervention"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


@styled
def cells_per_perturbation(interventions: pd.DataFrame, *, dataset: str, max_labels: int = 150) -> Figure:
    """Bar plot of the number of cells per perturbation label, sorted, controls in orange.

    Parameters
    ----------
    interventions
        The ``interventions.parquet`` table (one row per cell).
    dataset
        Dataset name, shown in the title.
    max_labels
        Above this many perturbations the bars keep no tick labels (the report lists them in a table).
    """
    counts = cell_counts(interventions)
    n = len(counts)
    width = clamp(0.14 * n + 2.5, 5.0, 16.0)
    fig, ax = plt.subplots(figsize=(width, 3.6), layout="constrained")
    colours = [CONTROL if c else NEUTRAL for c in counts["is_control"]]
    ax.bar(range(n), counts["n_cells"], color=colours, width=0.85, linewidth=0)
    if n and counts["n_cells"].max() / max(counts["n_cells"].min(), 1) > 30:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_ylabel("cells (log scale)")
    else:
        ax.set_ylabel("cells")
    perturbed = counts.loc[~counts["is_control"], "n_cells"]
    if len(perturbed):
        median = float(perturbed.median())
        ax.axhline(median, color="0.3", linestyle="--", linewidth=0.8)
    ax.set_xlim(-0.6, n - 0.4)
    if n <= max_labels:
        ax.set_xticks(range(n))
        ax.set_xticklabels(
            [short(x) for x in counts["intervention"]], rotation=90, fontsize=clamp(10 - n / 20, 4.0, 8.0)
        )
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"perturbation ({n} labels, sorted by cells)")
    ax.set_title(f"{dataset}: cells per perturbation")
    handles = [Patch(color=NEUTRAL, label="perturbation"), Patch(color=CONTROL, label="control")]
    if len(perturbed):
        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=0.8, label="median (perturbations)"))
    ax.legend(handles=handles, frameon=False, loc="upper right", fontsize=8)
    return fig
