"""Per-cell quality control: distributions of total counts and detected genes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ._common import NEUTRAL, plain_log_ticks, require_columns, styled


@styled
def qc_distribution(qc: pd.DataFrame, *, dataset: str) -> Figure:
    """Histograms of total counts (UMIs) per cell and of genes detected per cell, with medians.

    Parameters
    ----------
    qc
        The ``qc.parquet`` table: ``sample_id, total_counts, n_genes``.
    dataset
        Dataset name, shown in the title.
    """
    require_columns(qc, ["total_counts", "n_genes"], "qc table")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    panels = [
        ("total_counts", "total counts per cell (UMIs)", axes[0]),
        ("n_genes", "genes detected per cell", axes[1]),
    ]
    for column, label, ax in panels:
        values = pd.to_numeric(qc[column], errors="coerce").dropna().to_numpy(dtype=float)
        use_log = column == "total_counts" and len(values) > 0 and bool(np.all(values > 0))
        if len(values):
            sns.histplot(x=values, ax=ax, bins=40, log_scale=use_log, color=NEUTRAL, edgecolor="white", linewidth=0.3)
            if use_log:
                plain_log_ticks(ax.xaxis)
            median = float(np.median(values))
            ax.axvline(median, color="0.2", linestyle="--", linewidth=0.9, label=f"median {median:,.0f}")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xlabel(label + (" (log scale)" if use_log else ""))
        ax.set_ylabel("cells")
    fig.suptitle(f"{dataset}: per-cell quality control ({len(qc):,} cells)")
    return fig
