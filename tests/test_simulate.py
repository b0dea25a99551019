from __future__ import annotations

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
