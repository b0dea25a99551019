from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from crl_pipe import ConfigError
from crl_pipe.simulate import CONTROL_LABEL, simulate_screen

SMALL = dict(n_programs=4, n_genes=80, anchors_per_program=5, n_control=400, cells_per_perturbation=100, n_doubles=2)


def test_screen_layout_and_truth():
    s = simulate_screen(**SMALL, seed=3)
    labels = s.adata.obs["perturbation"].astype(str)
    assert s.adata.shape == (400 + 100 * (4 + 2), 80)
    assert (labels == CONTROL_LABEL).sum() == 400
    assert sum("+" in lab for lab in labels.unique()) == 2
    X = s.adata.X.toarray()
    assert (X >= 0).all() and np.array_equal(X, np.round(X))
    # anchors: >= 2 genes per program, disjoint, all measured
    assert set(s.gene_sets) == {"P1", "P2", "P3", "P4"}
    members = [g for genes in s.gene_sets.values() for g in genes]
    assert len(members) == len(set(members)) == 20 and set(members) <= set(s.adata.var_names)
    # the truth graph is a DAG over the programs, every single perturbation hits one program
    g = nx.DiGraph(list(zip(s.graph["source"], s.graph["target"], strict=False)))
    assert nx.is_directed_acyclic_graph(g)
    singles = s.targets[~s.targets["intervention"].str.contains("+", regex=False)]
    assert sorted(singles["program"]) == ["P1", "P2", "P3", "P4"]
    # controls' latents are standardised
    ctrl = s.latents.set_index("sample_id").loc[labels.index[labels == CONTROL_LABEL]]
    assert np.allclose(ctrl.std(), 1.0, atol=0.15)


def test_knockdown_lowers_the_perturbed_gene_and_shifts_its_program():
    s = simulate_screen(**SMALL, seed=1)
    labels = s.adata.obs["perturbation"].astype(str)
    X = s.adata.to_df()
    lat = s.latents.set_index("sample_id")
    ctrl = labels == CONTROL_LABEL
    for reg, program in s.targets[
        s.targets["intervention"].str.startswith("REG") & ~s.targets["intervention"].str.contains("+", regex=False)
    ].itertuples(index=False):
        cells = labels == reg
        assert X.loc[cells, reg].mean() < 0.3 * X.loc[ctrl, reg].mean()
        assert lat.loc[cells, program].mean() - lat.loc[ctrl, program].mean() < -1.0


def test_seed_determinism_and_nonlinear_option():
    a, b = simulate_screen(**SMALL, seed=5), simulate_screen(**SMALL, seed=5)
    assert (a.adata.X != b.adata.X).nnz == 0 and a.graph.equals(b.graph)
    c = simulate_screen(**SMALL, seed=5, mixing="nonlinear")
    assert (a.adata.X != c.adata.X).nnz > 0 and c.graph.equals(a.graph)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"n_programs": 1}, "n_programs"), ({"n_genes": 10}, "too small"), ({"mixing": "cubic"}, "mixing")],
)
def test_bad_parameters(params, message):
    with pytest.raises(ConfigError, match=message):
        simulate_screen(**{**SMALL, **params})


# -- knobs for harder screens (issue 13) -----------------------------------------------------------
HARD = dict(n_programs=10, n_genes=300, anchors_per_program=6, n_control=1500, cells_per_perturbation=300, n_doubles=0)


@pytest.mark.parametrize("n_edges", [0, 9, 20, 45])
def test_n_edges_gives_a_dag_with_exactly_that_many_edges(n_edges):
    s = simulate_screen(**HARD, n_edges=n_edges, min_edge_weight=0.6, max_edge_weight=1.2, seed=2)
    assert len(s.graph) == n_edges
    g = nx.DiGraph(list(zip(s.graph["source"], s.graph["target"], strict=True)))
    g.add_nodes_from(s.gene_sets)
    assert nx.is_directed_acyclic_graph(g)


def test_raw_latents_pile_up_variance_and_keep_the_sem_weights():
    s = simulate_screen(**HARD, n_edges=20, min_edge_weight=0.6, max_edge_weight=1.2, standardise_latents=False, seed=0)
    assert s.graph["weight"].abs().between(0.6, 1.2).all()  # raw SEM weights, in latent units
    g = nx.DiGraph(list(zip(s.graph["source"], s.graph["target"], strict=True)))
    g.add_nodes_from(s.gene_sets)
    labels = s.adata.obs["perturbation"].astype(str).to_numpy()
    var = s.latents.drop(columns="sample_id")[labels == CONTROL_LABEL].var()
    roots = [p for p in s.gene_sets if g.in_degree(p) == 0]
    assert np.allclose(var[roots], 1.0, atol=0.15)  # unit exogenous noise
    assert var.max() > 4.0  # a downstream program adds up its ancestors' variance
    std = simulate_screen(**HARD, n_edges=20, min_edge_weight=0.6, max_edge_weight=1.2, seed=0)
    assert std.graph[["source", "target"]].equals(s.graph[["source", "target"]])  # same DAG either way


@pytest.mark.parametrize("standardise", [True, False])
def test_shift_in_latent_sds_moves_each_target_by_that_many_control_sds(standardise):
    s = simulate_screen(
        **HARD,
        n_edges=20,
        shift=2.5,
        shift_unit="latent",
        standardise_latents=standardise,
        guides_per_program=2,
        seed=1,
    )
    labels = s.adata.obs["perturbation"].astype(str).to_numpy()
    lat = s.latents.drop(columns="sample_id")
    ctrl = lat[labels == CONTROL_LABEL]
    shifts = [
        (lat[labels == label][program].mean() - ctrl[program].mean()) / ctrl[program].std()
        for label, program in s.targets.itertuples(index=False)
    ]
    assert len(shifts) == 20 and np.allclose(shifts, 2.5, atol=0.3)
    # in noise units a program with parents moves by less than 2.5 of its own SDs
    noise = simulate_screen(**HARD, n_edges=20, shift=2.5, guides_per_program=2, seed=1)
    lat_n = noise.latents.drop(columns="sample_id")
    ctrl_n = lat_n[labels == CONTROL_LABEL]
    moved = [
        (lat_n[labels == label][program].mean() - ctrl_n[program].mean()) / ctrl_n[program].std()
        for label, program in noise.targets.itertuples(index=False)
    ]
    assert min(moved) < 2.0


def test_wrong_anchors_change_the_gene_sets_not_the_counts():
    right = simulate_screen(**HARD, seed=4)
    wrong = simulate_screen(**HARD, wrong_anchor_fraction=1 / 3, seed=4)
    assert (right.adata.X != wrong.adata.X).nnz == 0 and right.latents.equals(wrong.latents)
    true_anchors = {g for genes in right.gene_sets.values() for g in genes}
    for program, genes in wrong.gene_sets.items():
        assert len(genes) == 6 and len(set(genes) & set(right.gene_sets[program])) == 4
        assert not set(genes) - set(right.gene_sets[program]) & true_anchors  # wrong ones are no anchors at all
    members = [g for genes in wrong.gene_sets.values() for g in genes]
    assert len(members) == len(set(members))
    # a wrong anchor does not follow its program: its correlation with it is far below a right one's
    X = wrong.adata.to_df()
    z = wrong.latents.set_index("sample_id")
    corr = {g: np.corrcoef(np.log1p(X[g]), z["P1"])[0, 1] for g in wrong.gene_sets["P1"]}
    wrong_p1 = set(wrong.gene_sets["P1"]) - set(right.gene_sets["P1"])
    assert max(abs(corr[g]) for g in wrong_p1) < min(corr[g] for g in set(corr) - wrong_p1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_edges": 46}, "n_edges must be between 0 and 45"),
        ({"n_edges": -1}, "n_edges"),
        ({"shift_unit": "cells"}, "shift_unit"),
        ({"wrong_anchor_fraction": 1.5}, "wrong_anchor_fraction"),
        ({"wrong_anchor_fraction": 1.0, "n_genes": 100, "anchors_per_program": 6}, "regulated mixed genes"),
    ],
)
def test_bad_harder_knobs(params, message):
    with pytest.raises(ConfigError, match=message):
        simulate_screen(**{**HARD, **params})


def test_harder_knobs_from_the_workflow_config(tmp_path):
    from crl_pipe.config import validate_config
    from crl_pipe.io import read_gmt, read_table
    from crl_pipe.pipeline import simulate

    schema = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    knobs = dict(n_edges=12, min_edge_weight=0.6, max_edge_weight=1.2, standardise_latents=False, shift=2.5)
    knobs |= dict(shift_unit="latent", wrong_anchor_fraction=0.5, dispersion=2.0, noise_scale=1.0)
    config = {"simulations": {"hard": {**HARD, **knobs}}, "datasets": {"d": {"format": "h5ad", "path": "x.h5ad"}}}
    params = validate_config(config, schema)["simulations"]["hard"]
    simulate(out_h5ad=tmp_path / "s.h5ad", out_gmt=tmp_path / "p.gmt", out_truth_dir=tmp_path / "truth", params=params)
    expected = simulate_screen(**HARD, **knobs)
    assert read_table(tmp_path / "truth/graph.parquet", "graph")[["source", "target"]].equals(
        expected.graph[["source", "target"]]
    )
    assert read_gmt(tmp_path / "p.gmt") == expected.gene_sets
