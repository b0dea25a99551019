"""The causal graph among latent programs, and the recovered graph beside the true one."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._common import BLUE, GREY, ORANGE, clamp, ordered_unique, require_columns, short, styled

#: Edges kept by fewer than this fraction of refits are drawn dashed as well as faint.
UNSTABLE_BELOW = 0.5


def _alpha(stability: float) -> float:
    return 0.12 + 0.88 * clamp(stability, 0.0, 1.0)


def edge_styles(edges: pd.DataFrame) -> pd.DataFrame:
    """Per-edge drawing attributes: ``width`` by |weight|, ``color`` by sign, ``alpha`` by stability,
    ``style`` dashed for an unstable (stability below :data:`UNSTABLE_BELOW`) or tentative edge (``confidence``)."""
    require_columns(edges, ["source", "target", "weight"], "graph table")
    weight = pd.to_numeric(edges["weight"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    stability = (
        pd.to_numeric(edges["stability"], errors="coerce").fillna(1.0).to_numpy(dtype=float)
        if "stability" in edges
        else np.ones(len(edges))
    )
    tentative = (
        (edges["confidence"] == "tentative").to_numpy(dtype=bool)
        if "confidence" in edges
        else np.zeros(len(edges), bool)
    )
    top = float(np.abs(weight).max()) if len(weight) else 0.0
    width = 0.8 + 3.7 * (np.abs(weight) / top if top > 0 else np.zeros_like(weight))
    return pd.DataFrame(
        {
            "source": edges["source"].astype(str).to_numpy(),
            "target": edges["target"].astype(str).to_numpy(),
            "width": width,
            "color": [ORANGE if w < 0 else BLUE for w in weight],
            "alpha": [_alpha(s) for s in stability],
            "style": [
                "dashed" if s < UNSTABLE_BELOW or t else "solid" for s, t in zip(stability, tentative, strict=True)
            ],
        }
    )


def _layout(nodes: list[str]) -> dict[str, np.ndarray]:
    if len(nodes) == 1:
        return {nodes[0]: np.zeros(2)}
    # Deterministic: nodes on a circle in the given order, the first at the top, clockwise.
    angles = np.pi / 2 - 2 * np.pi * np.arange(len(nodes)) / len(nodes)
    return {n: np.array([np.cos(a), np.sin(a)]) for n, a in zip(nodes, angles, strict=True)}


@styled
def causal_graph(
    edges: pd.DataFrame,
    *,
    title: str,
    ax: Axes | None = None,
    nodes: Sequence[str] | None = None,
    legend: bool = True,
) -> Figure:
    """Draw a latent causal graph: one arrow per row of ``edges``.

    Width grows with ``|weight|``, blue edges are positive and orange negative, and faint (dashed
    below 0.5) edges are those few bootstrap refits kept (``stability``; 1 where absent).

    Parameters
    ----------
    edges
        Graph table ``source, target, weight[, stability]``.
    title
        Axes title (include the dataset and model).
    ax
        Axes to draw into; a new figure when omitted.
    nodes
        Every latent to show, in layout order, so programs without edges still appear
        (default: the names in ``edges`` in order of first appearance).
    legend
        Whether to add the colour/stability legend.
    """
    require_columns(edges, ["source", "target", "weight"], "graph table")
    names = [str(n) for n in nodes] if nodes is not None else []
    names += [
        n for n in ordered_unique(pd.concat([edges["source"], edges["target"]]).astype(str)) if n not in set(names)
    ]
    if ax is None:
        size = clamp(3.5 + 0.22 * len(names), 5.0, 10.0)
        fig, ax = plt.subplots(figsize=(size, 0.85 * size + 0.9), layout="constrained")
    else:
        fig = ax.figure
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    pos = _layout(names)
    node_size = 260
    nx.draw_networkx_nodes(
        graph, pos, ax=ax, node_size=node_size, node_color="#F0F0F0", edgecolors="0.25", linewidths=1.0
    )
    styles = edge_styles(edges)
    for row in styles.itertuples(index=False):
        graph.add_edge(row.source, row.target)
        patches = nx.draw_networkx_edges(
            graph,
            pos,
            edgelist=[(row.source, row.target)],
            ax=ax,
            width=row.width,
            edge_color=[to_rgba(row.color, row.alpha)],
            style=row.style,
            arrows=True,
            arrowstyle="-|>",
            arrowsize=12,
            node_size=node_size,
            connectionstyle="arc3,rad=0.12",
        )
        for patch in patches:
            patch.set_gid(f"edge:{row.source}->{row.target}")
    fontsize = clamp(11 - len(names) / 8, 7.0, 10.0)
    for name, (x, y) in pos.items():
        ha = "center" if abs(x) < 0.2 else ("left" if x > 0 else "right")
        va = "center" if abs(y) >= 0.2 or abs(x) >= 0.2 else ("bottom" if y > 0 else "top")
        ax.text(1.13 * x, 1.13 * y, short(name, 20), ha=ha, va=va, fontsize=fontsize)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title)
    if not len(styles):
        ax.text(0, 0, "no edges", ha="center", va="center", color=GREY)
    if legend:
        ax.legend(
            handles=_legend_handles(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False, fontsize=7
        )
    return fig


def _legend_handles() -> list[Line2D]:
    return [
        Line2D([], [], color=BLUE, linewidth=2.5, label="positive weight"),
        Line2D([], [], color=ORANGE, linewidth=2.5, label="negative weight"),
        Line2D([], [], color="0.2", linewidth=0.8, label="thin = small |weight|"),
        Line2D([], [], color=to_rgba("0.2", _alpha(1.0)), linewidth=2, label="stability 1.0"),
        Line2D([], [], color=to_rgba("0.2", _alpha(0.6)), linewidth=2, label="stability 0.6"),
        Line2D([], [], color=to_rgba("0.2", _alpha(0.2)), linewidth=2, linestyle="--", label="stability 0.2"),
    ]


@styled
def graph_comparison(
    recovered: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    dataset: str,
    model: str = "recovered",
    nodes: Sequence[str] | None = None,
    truth_nodes: Sequence[str] | None = None,
) -> Figure:
    """The recovered graph (left) beside the true program graph (right), same drawing rules.

    Node names differ between the two (latents vs. true programs); the matching is in the metrics.
    """
    n = max(len(set(nodes or []) | set(recovered["source"]) | set(recovered["target"])), 4)
    size = clamp(3.5 + 0.2 * n, 4.5, 8.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, 0.85 * size + 1.0), layout="constrained")
    causal_graph(recovered, title=f"{model}: recovered", ax=axes[0], nodes=nodes, legend=False)
    causal_graph(truth, title="ground truth", ax=axes[1], nodes=truth_nodes, legend=False)
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncol=6, frameon=False, fontsize=7)
    fig.suptitle(f"{dataset}: causal graph among programs, {model} vs. ground truth")
    return fig
