"""Figures of crl_pipe.pl: each returns a Figure with the expected titles, labels and marks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from crl_pipe import InputError, pl
from crl_pipe.pl._common import assigned_targets
from crl_pipe.pl._heatmap import heatmap_matrix


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _interventions(rng: np.random.Generator, n_labels: int = 6, n_cells: int = 300) -> pd.DataFrame:
    genes = [f"G{i}" for i in range(n_labels)]
    labels = ["control"] * 80 + list(rng.choice(genes, n_cells - 80))
    return pd.DataFrame(
        {
            "sample_id": [f"c{i}" for i in range(n_cells)],
            "intervention": labels,
            "targets": [[] if lab == "control" else [lab] for lab in labels],
            "n_targets": [0 if lab == "control" else 1 for lab in labels],
            "is_control": [lab == "control" for lab in labels],
        }
    )


def _targets(n_int: int, n_lat: int, seed: int = 0, with_flag: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_int):
        hit = i % n_lat
        for j in range(n_lat):
            score = rng.normal(0, 0.2) + (2.0 + i / n_int if j == hit else 0.0)
            rows.append((f"G{i}", f"z{j}", score, j == hit))
    table = pd.DataFrame(rows, columns=["intervention", "latent", "score", "is_target"])
    return table if with_flag else table.drop(columns="is_target")


def _edges() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["z0", "z1", "z2", "z1", "z3"],
            "target": ["z1", "z2", "z3", "z0", "z0"],
            "weight": [1.0, -0.5, 0.2, 0.3, -2.0],
            "stability": [1.0, 0.9, 0.2, 0.5, 0.05],
        }
    )


def _drawn_edges(fig: Figure) -> list[FancyArrowPatch]:
    return [
        p
        for ax in fig.axes
        for p in ax.patches
        if isinstance(p, FancyArrowPatch) and (p.get_gid() or "").startswith("edge:")
    ]


def test_cells_per_perturbation_sorted_with_control_highlighted():
    labels = _interventions(np.random.default_rng(0))
    fig = pl.cells_per_perturbation(labels, dataset="screenA")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "screenA" in ax.get_title()
    assert ax.get_ylabel().startswith("cells")
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == sorted(heights, reverse=True)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "control"  # 80 control cells is the largest group
    colours = {tuple(bar.get_facecolor()) for bar in ax.patches}
    assert len(colours) == 2


def test_qc_distribution_labels():
    rng = np.random.default_rng(1)
    qc = pd.DataFrame(
        {
            "sample_id": [f"c{i}" for i in range(500)],
            "total_counts": rng.lognormal(8, 0.4, 500),
            "n_genes": rng.poisson(900, 500),
        }
    )
    fig = pl.qc_distribution(qc, dataset="screenA")
    assert "screenA" in fig.get_suptitle()
    xlabels = [ax.get_xlabel() for ax in fig.axes]
    assert any("total counts" in x for x in xlabels) and any("genes detected" in x for x in xlabels)
    assert all(ax.get_ylabel() == "cells" for ax in fig.axes)


def test_target_heatmap_marks_targets_and_labels_axes():
    targets = _targets(8, 4)
    fig = pl.target_heatmap(targets, title="screenA: linear")
    ax = fig.axes[0]
    assert ax.get_title().startswith("screenA: linear")
    assert ax.get_xlabel() == "latent program"
    assert ax.get_ylabel() == "intervention"
    boxes = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(boxes) == 8  # one assigned latent per intervention
    assert sorted(t.get_text() for t in ax.get_yticklabels()) == sorted(f"G{i}" for i in range(8))


def test_target_heatmap_caps_rows_and_says_so():
    targets = _targets(200, 20)
    fig = pl.target_heatmap(targets, title="big", max_rows=60)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 60
    assert "top 60 of 200" in ax.get_ylabel()
    assert fig.get_figheight() <= 16
    scores, mask = heatmap_matrix(targets, max_rows=60)
    strength = targets.assign(a=targets["score"].abs()).groupby("intervention")["a"].max()
    assert set(scores.index) == set(strength.nlargest(60).index)  # the strongest interventions are kept
    assert mask.to_numpy().sum() == 60


def test_assigned_targets_without_flag_uses_largest_abs_score():
    targets = _targets(5, 3, with_flag=False)
    picked = assigned_targets(targets)
    assert list(picked["intervention"]) == [f"G{i}" for i in range(5)]
    assert list(picked["latent"]) == [f"z{i % 3}" for i in range(5)]


def test_causal_graph_one_arrow_per_edge_and_styles():
    edges = _edges()
    fig = pl.causal_graph(edges, title="screenA: linear", nodes=[f"z{i}" for i in range(6)])
    ax = fig.axes[0]
    assert ax.get_title() == "screenA: linear"
    drawn = _drawn_edges(fig)
    assert len(drawn) == len(edges)
    assert sorted(p.get_gid() for p in drawn) == sorted(
        f"edge:{s}->{t}" for s, t in zip(edges["source"], edges["target"], strict=True)
    )
    by_gid = {p.get_gid(): p for p in drawn}
    stable, unstable = by_gid["edge:z0->z1"], by_gid["edge:z3->z0"]
    assert stable.get_edgecolor()[3] > unstable.get_edgecolor()[3]  # faint when unstable
    assert by_gid["edge:z3->z0"].get_linewidth() > by_gid["edge:z2->z3"].get_linewidth()  # wide when |weight| is large
    blue, orange = stable.get_edgecolor()[:3], unstable.get_edgecolor()[:3]
    assert blue != orange
    labels = {t.get_text() for t in ax.texts}
    assert {f"z{i}" for i in range(6)} <= labels  # isolated nodes z4, z5 still drawn


def test_causal_graph_empty_and_deterministic():
    empty = pd.DataFrame({"source": [], "target": [], "weight": [], "stability": []})
    fig = pl.causal_graph(empty, title="none", nodes=["a", "b"])
    assert _drawn_edges(fig) == []
    pos1 = [t.get_position() for t in pl.causal_graph(_edges(), title="x").axes[0].texts]
    pos2 = [t.get_position() for t in pl.causal_graph(_edges(), title="x").axes[0].texts]
    assert pos1 == pos2


def test_graph_comparison_two_panels():
    truth = pd.DataFrame({"source": ["P0", "P1"], "target": ["P1", "P2"], "weight": [1.0, -1.0]})
    fig = pl.graph_comparison(_edges(), truth, dataset="screenA", model="linear")
    assert "screenA" in fig.get_suptitle()
    assert len(fig.axes) == 2
    assert len(_drawn_edges(fig)) == len(_edges()) + len(truth)
    assert fig.axes[1].get_title() == "ground truth"


def test_training_curves_one_line_per_split():
    history = pd.DataFrame(
        {
            "epoch": list(range(10)) * 2,
            "split": ["train"] * 10 + ["validation"] * 10,
            "loss": list(np.linspace(3, 1, 10)) * 2,
        }
    )
    fig = pl.training_curves(history, title="screenA: sparse_vae")
    ax = fig.axes[0]
    assert ax.get_title() == "screenA: sparse_vae"
    assert ax.get_xlabel() == "epoch"
    assert "loss" in ax.get_ylabel()
    assert len([line for line in ax.get_lines() if len(line.get_xdata())]) == 2


def test_math_text_in_names_is_not_parsed():
    targets = _targets(3, 2).replace({"G0": "$x^2$ broken $"})
    fig = pl.target_heatmap(targets, title="a $b")
    fig.canvas.draw()  # would raise on unbalanced mathtext if names were parsed


def test_missing_columns_raise_input_error():
    with pytest.raises(InputError, match="graph table"):
        pl.causal_graph(pd.DataFrame({"source": ["a"]}), title="x")


def test_observed_causes_boxes_each_rows_strongest_command():
    import pandas as pd

    from crl_pipe import pl

    edges = pd.DataFrame(
        {
            "source": ["action.a", "action.b", "action.a", "a", "action.c"],
            "target": ["a", "b", "b", "c", "c"],
            "weight": [0.9, 0.8, 0.3, 0.5, 0.1],
            "stability": 1.0,
        }
    )
    matrix = pl.strongest_observed_causes(edges, ["a", "b", "c"])
    assert list(matrix.index) == ["a", "b", "c"] and list(matrix.columns)[:3] == ["action.a", "action.b", "action.c"]
    assert pl.n_self_driven(matrix) == 3  # c's latent parent a is not an observed cause
    fig = pl.observed_causes(edges, ["a", "b", "c"], title="t")
    assert "3 of 3" in fig.axes[0].get_title()
