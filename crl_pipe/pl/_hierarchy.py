"""The concept graph across levels: anchor genes -> programs -> modules, with the causal arrows."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from ._common import require_columns, short, styled

#: Colour-blind safe (Okabe-Ito): genes, programs, modules; arrows that raise / lower.
_COLOURS = {1: "#BBBBBB", 2: "#56B4E9", 3: "#E69F00", "up": "#0072B2", "down": "#D55E00"}


@styled
def concept_graph(
    membership: pd.DataFrame,
    program_graph: pd.DataFrame,
    module_graph: pd.DataFrame,
    *,
    genes_per_program: int = 3,
    title: str = "",
) -> Figure:
    """Three rows: top anchor genes (bottom), programs (middle), modules (top).

    Grey lines: membership (gene in program, program in module; width = weight). Arrows: causal edges
    among programs given the modules (``status`` kept or added) and among modules; blue raises,
    orange lowers. A module is labelled with its readable name (``parent_name``: its id and its
    programs' gene sets) where the table has one.

    Parameters
    ----------
    membership
        ``hierarchy.parquet`` (``level, parent, child, weight``, optionally ``parent_name``).
    program_graph
        ``graph_given_modules.parquet`` (``source, target, weight, status``).
    module_graph
        ``module_graph.parquet`` (``source, target, weight``).
    genes_per_program
        Anchor genes drawn per program (highest weight first).
    title
        Figure title (the dataset and model).
    """
    require_columns(membership, ["level", "parent", "child", "weight"], "hierarchy table")
    level1 = membership[membership["level"] == 1].sort_values("weight", ascending=False, kind="stable")
    level2 = membership[membership["level"] == 2]
    programs = sorted(set(level2["child"]) | set(level1["parent"]) | set(program_graph["source"])
                      | set(program_graph["target"]), key=str)  # fmt: skip
    modules = sorted(set(level2["parent"]), key=str)
    genes = level1.groupby("parent", sort=False).head(genes_per_program)
    order = {p: i for i, p in enumerate(sorted(programs, key=lambda p: (str(_module_of(level2).get(p, "~")), str(p))))}
    pos = {("p", p): (order[p], 1.0) for p in programs}
    for m in modules:
        xs = [order[c] for c in level2.loc[level2["parent"] == m, "child"] if c in order]
        pos[("m", m)] = (sum(xs) / max(len(xs), 1), 2.0)
    gene_rows = [row for row in genes.itertuples(index=False) if row.parent in order]
    for program, group in genes[genes["parent"].isin(list(order))].groupby("parent", sort=False):
        n = len(group)
        for i, gene in enumerate(group["child"]):  # fanned out under their program
            pos[("g", gene)] = (order[program] + (i - (n - 1) / 2) * 0.8 / max(n, 1), 0.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(programs) + 2), 4.8))
    for row in gene_rows:
        _line(ax, pos[("g", row.child)], pos[("p", row.parent)], 0.6)
    for row in level2.itertuples(index=False):
        if row.child in order:
            _line(ax, pos[("p", row.child)], pos[("m", row.parent)], 1 + 3 * float(row.weight))
    kept = program_graph[program_graph.get("status", pd.Series("kept", index=program_graph.index)) != "explained"]
    _arrows(ax, kept, lambda n: pos.get(("p", n)), rad=0.35)
    _arrows(ax, module_graph, lambda n: pos.get(("m", n)), rad=-0.3)
    readable = _readable_names(level2)
    for (kind, name), (x, y) in pos.items():
        level = {"g": 1, "p": 2, "m": 3}[kind]
        text = _wrapped(readable.get(name, name)) if kind == "m" else short(name, 14)
        ax.text(x, y, text, ha="center", va="center", fontsize=7 if kind == "g" else 9 if kind == "p" else 8,
                rotation=60 if kind == "g" else 0,
                bbox={"boxstyle": "round", "fc": _COLOURS[level], "ec": "none", "alpha": 0.9})  # fmt: skip
    ax.set_yticks([0, 1, 2], ["anchor genes", "programs", "modules"])
    ax.set_xticks([])
    ax.set_ylim(-0.6, 2.9)
    ax.set_xlim(-0.8, max(len(programs) - 1, 1) + 0.8)
    ax.spines[["left", "bottom"]].set_visible(False)
    ax.set_title(title or "Concept levels")
    fig.tight_layout()
    return fig


def _readable_names(level2: pd.DataFrame) -> dict[str, str]:
    """Module id -> readable name (``parent_name``), where the table has one."""
    if "parent_name" not in level2:
        return {}
    named = level2.dropna(subset=["parent_name"])
    return dict(zip(named["parent"].astype(str), named["parent_name"].astype(str), strict=True))


def _wrapped(name: str, width: int = 22, lines: int = 3) -> str:
    """A module's readable name on at most ``lines`` lines of ``width`` characters (cut with an ellipsis)."""
    return "\n".join(textwrap.wrap(name, width, max_lines=lines, placeholder="\u2026"))


def _module_of(level2: pd.DataFrame) -> dict[str, str]:
    return dict(zip(level2["child"], level2["parent"], strict=True))


def _line(ax, a, b, width) -> None:
    ax.plot([a[0], b[0]], [a[1], b[1]], color="#999999", lw=width, alpha=0.6, zorder=0)


def _arrows(ax, edges: pd.DataFrame, where, rad: float) -> None:
    for row in edges.itertuples(index=False):
        a, b = where(row.source), where(row.target)
        if a is None or b is None:
            continue
        colour = _COLOURS["up"] if row.weight > 0 else _COLOURS["down"]
        ax.annotate("", xy=b, xytext=a, zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1 + min(abs(row.weight), 2),
                                "connectionstyle": f"arc3,rad={rad}", "shrinkA": 12, "shrinkB": 12})  # fmt: skip
