"""Guide calls (guides per cell, cells per guide, UMIs with thresholds) and the knockdown of targeted genes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .._constants import CONTROL_TARGET
from ._common import BLUE, CONTROL, GREY, NEUTRAL, clamp, plain_log_ticks, require_columns, short, styled

#: The per-guide UMI heatmap and the knockdown plot show at most this many rows; captions say so.
MAX_GUIDES_SHOWN = 60
MAX_TARGETS_SHOWN = 40


def guide_summary(guides: pd.DataFrame) -> pd.DataFrame:
    """Per guide: ``guide, target, threshold, method, n_detected, n_called, median_umis_called``, most called first."""
    require_columns(guides, ["sample_id", "guide", "umis", "called"], "guides table")
    table = guides.assign(
        target=guides["target"] if "target" in guides else "",
        threshold=guides["threshold"] if "threshold" in guides else np.nan,
        method=guides["method"] if "method" in guides else "",
        called_umis=guides["umis"].where(guides["called"].astype(bool)),
    )
    summary = table.groupby("guide", sort=False).agg(
        target=("target", "first"),
        threshold=("threshold", "first"),
        method=("method", "first"),
        n_detected=("umis", "size"),
        n_called=("called", "sum"),
        median_umis_called=("called_umis", "median"),
    )
    summary = summary.reset_index().astype({"n_called": int, "guide": str, "target": str})
    return summary.sort_values(["n_called", "guide"], ascending=[False, True], kind="stable").reset_index(drop=True)


def guides_per_cell_counts(guides: pd.DataFrame, n_cells: int | None = None) -> pd.Series:
    """Cells by number of called guides (index 0, 1, 2 ...); with ``n_cells``, cells absent from
    ``guides`` count as 0."""
    called = guides.loc[guides["called"].astype(bool)].groupby("sample_id").size()
    seen = guides["sample_id"].nunique()
    counts = called.value_counts().sort_index()
    zero = (n_cells if n_cells is not None else seen) - len(called)
    counts.loc[0] = max(int(zero), 0)
    return counts.sort_index().astype(int)


@styled
def guide_calls(guides: pd.DataFrame, *, dataset: str, n_cells: int | None = None) -> Figure:
    """Two panels: cells by number of called guides, and cells per guide (sorted, control guides in orange).

    Parameters
    ----------
    guides
        The ``guides.parquet`` table (one row per detected cell-guide pair).
    dataset
        Dataset name, shown in the title.
    n_cells
        Cells of the screen; those without any detected guide count as carrying none.
    """
    per_cell = guides_per_cell_counts(guides, n_cells)
    summary = guide_summary(guides)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=[1, 2.6], layout="constrained")
    shown = per_cell[per_cell.index <= 4]
    labels = [str(i) for i in shown.index]
    values = list(shown.to_numpy())
    if (per_cell.index > 4).any():
        labels.append("5+")
        values.append(int(per_cell[per_cell.index > 4].sum()))
    total = max(sum(values), 1)
    colours = [GREY if lab == "0" else BLUE if lab == "1" else NEUTRAL for lab in labels]
    bars = left.bar(labels, values, color=colours, width=0.75, linewidth=0)
    for bar, value in zip(bars, values, strict=True):
        left.annotate(
            f"{100 * value / total:.1f}%",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_xlabel("guides called in a cell")
    left.set_ylabel("cells")
    left.set_title("guides per cell")
    left.margins(y=0.12)

    n = len(summary)
    control = (summary["target"] == CONTROL_TARGET).to_numpy()
    colours = np.where(control, CONTROL, NEUTRAL)
    if n <= 300:
        right.bar(range(n), summary["n_called"], color=colours, width=0.85, linewidth=0)
    else:  # thousands of guides: a line reads better than bars
        right.plot(range(n), summary["n_called"], color=NEUTRAL, linewidth=1)
    median = float(summary["n_called"].median()) if n else 0.0
    right.axhline(median, color="0.3", linestyle="--", linewidth=0.8)
    if n <= 100:
        right.set_xticks(range(n))
        right.set_xticklabels([_tail(g) for g in summary["guide"]], rotation=90, fontsize=clamp(9 - n / 20, 4.0, 8.0))
    else:
        right.set_xticks([])
    right.set_xlim(-0.6, n - 0.4)
    right.set_xlabel(f"guide ({n} guides, sorted by cells)")
    right.set_ylabel("cells with the guide called")
    right.set_title("cells per guide")
    handles = [
        Patch(color=NEUTRAL, label="targeting guide"),
        Patch(color=CONTROL, label="control guide"),
        Line2D([], [], color="0.3", linestyle="--", linewidth=0.8, label=f"median {median:,.0f}"),
    ]
    right.legend(handles=handles, frameon=False, fontsize=8, loc="upper right")
    fig.suptitle(f"{dataset}: guide calls")
    return fig


@styled
def guide_umis(guides: pd.DataFrame, *, dataset: str, max_guides: int = MAX_GUIDES_SHOWN) -> Figure:
    """UMI counts of the guides: pooled histogram (called vs not), and one row per guide with its threshold.

    The right panel is a heatmap: each row is a guide, each column a bin of UMI counts (log
    scale); the shade is how many of the guide's cells fall in that bin (relative to its fullest
    bin, log scale), and the blue tick is the guide's UMI threshold. A good call separates two
    humps, background on the left and signal on the right, with the tick between them.

    Parameters
    ----------
    guides
        The ``guides.parquet`` table (``threshold`` column optional).
    dataset
        Dataset name, shown in the title.
    max_guides
        Rows of the heatmap: the guides called in the most cells.
    """
    summary = guide_summary(guides)
    umis = np.maximum(guides["umis"].to_numpy(dtype=float), 1.0)
    edges = _umi_edges(umis.max() if umis.size else 10.0)
    shown = summary.head(max_guides)
    n = len(shown)
    height = clamp(0.095 * n + 1.5, 3.6, 8.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), width_ratios=[1, 1.5], layout="constrained")

    called = guides["called"].astype(bool).to_numpy()
    left.hist([umis[~called], umis[called]], bins=edges, stacked=True, color=[GREY, BLUE], linewidth=0,
              label=["not called (background)", "called"])  # fmt: skip
    left.set_xscale("log")
    left.set_yscale("log")
    plain_log_ticks(left.xaxis)
    plain_log_ticks(left.yaxis)
    left.set_xlim(edges[0], edges[-1])
    left.set_xlabel("UMIs of a guide in a cell (log scale)")
    left.set_ylabel("cell-guide pairs (log scale)")
    left.set_title("all guides pooled")
    left.legend(frameon=False, fontsize=8)

    grid = np.full((n, len(edges) - 1), np.nan)
    by_guide = {str(g): v.to_numpy(dtype=float) for g, v in guides.groupby("guide", sort=False)["umis"]}
    for i, guide in enumerate(shown["guide"]):
        hist, _ = np.histogram(np.maximum(by_guide.get(guide, np.array([])), 1.0), bins=edges)
        if hist.max() > 0:
            grid[i] = np.where(hist > 0, hist / hist.max(), np.nan)
    right.pcolormesh(
        edges, np.arange(n + 1) - 0.5, grid, cmap="Greys", norm=LogNorm(vmin=1e-3, vmax=1.0), shading="flat"
    )
    thresholds = shown["threshold"].to_numpy(dtype=float)
    finite = np.isfinite(thresholds) & (thresholds > 0)
    right.scatter(thresholds[finite] - 0.5, np.arange(n)[finite], marker="|", s=70, color=BLUE, linewidths=2.2,
                  label="UMI threshold (calls at or above)")  # fmt: skip
    right.set_xscale("log")
    plain_log_ticks(right.xaxis)
    right.set_xlim(edges[0], edges[-1])
    right.set_ylim(n - 0.5, -0.5)
    right.set_yticks(range(n))
    right.set_yticklabels([_tail(g) for g in shown["guide"]], fontsize=clamp(9 - n / 15, 4.5, 8.0))
    right.set_xlabel("UMIs of the guide in a cell (log scale)")
    more = f" ({n} of {len(summary)} guides, most called first)" if len(summary) > n else ""
    right.set_title(f"per guide: UMI distribution and threshold{more}")
    if finite.any():
        right.legend(frameon=False, fontsize=8, loc="lower right")
    fig.suptitle(f"{dataset}: guide UMI counts per cell")
    return fig


def _umi_edges(top: float, n: int = 45) -> np.ndarray:
    """Bin edges for integer UMI counts on a log axis: one bin per count at the low end, log-spaced above."""
    centres = np.unique(np.round(np.logspace(0, np.log10(max(top, 10.0)), n)))
    return np.append(centres - 0.5, centres[-1] + 0.5)


def _tail(name: str, limit: int = 26) -> str:
    """The end of a long guide name (library prefixes repeat; the guide's own part comes last)."""
    text = str(name)
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1) :]


@styled
def knockdown(table: pd.DataFrame, *, dataset: str, max_targets: int = MAX_TARGETS_SHOWN) -> Figure:
    """Each targeted gene's expression in its perturbed cells vs the controls, and the fraction that remains.

    Parameters
    ----------
    table
        The table of :func:`crl_pipe.tl.knockdown`.
    dataset
        Dataset name, shown in the title.
    max_targets
        Rows drawn: the strongest knockdowns and the weakest ones, half each, when there are more.
    """
    require_columns(
        table, ["intervention", "gene", "mean_perturbed", "mean_control", "log_fc", "remaining"], "knockdown table"
    )
    rows = table.sort_values("log_fc", kind="stable").reset_index(drop=True)
    if len(rows) > max_targets:
        half = max_targets // 2
        rows = pd.concat([rows.head(half), rows.tail(max_targets - half)], ignore_index=True)
    n = len(rows)
    height = clamp(0.22 * n + 1.4, 2.8, 11.0)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, height), width_ratios=[1.6, 1], sharey=True, layout="constrained"
    )
    y = np.arange(n)
    for name, colour, column in [("control cells", CONTROL, "control"), ("perturbed cells", BLUE, "perturbed")]:
        mean = rows[f"mean_{column}"].to_numpy(dtype=float)
        sem = rows[f"sem_{column}"].to_numpy(dtype=float) if f"sem_{column}" in rows else np.zeros(n)
        left.errorbar(
            mean,
            y,
            xerr=1.96 * np.nan_to_num(sem),
            fmt="o",
            color=colour,
            markersize=5,
            capsize=2,
            label=name,
            zorder=3,
        )
    left.hlines(y, rows["mean_perturbed"], rows["mean_control"], color="0.75", linewidth=1.2, zorder=1)
    labels = [g if g == i else f"{i} ({g})" for i, g in zip(rows["intervention"], rows["gene"], strict=True)]
    left.set_yticks(y)
    left.set_yticklabels([short(lab, 32) for lab in labels], fontsize=clamp(10 - n / 10, 5.0, 8.0))
    left.invert_yaxis()
    left.set_xlabel("mean expression of the target gene, log(1 + normalised counts); bars: 95% CI")
    left.set_title("target gene: perturbed vs control cells")
    left.legend(frameon=False, fontsize=8, loc="lower right")

    remaining = 100 * rows["remaining"].to_numpy(dtype=float)
    colours = [BLUE if r < 100 else GREY for r in np.nan_to_num(remaining, nan=100)]
    right.barh(y, np.nan_to_num(remaining), color=colours, height=0.7, linewidth=0)
    right.axvline(100, color="0.3", linestyle="--", linewidth=0.8)
    right.set_xlabel("expression left, % of controls (100% = no knockdown)")
    right.set_title("remaining expression")
    more = f" ({n} of {len(table)} targets: the strongest and weakest knockdowns)" if len(table) > n else ""
    fig.suptitle(f"{dataset}: knockdown of each targeted gene{more}")
    return fig
