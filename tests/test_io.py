"""crl_pipe.io: screens, gene sets and graphs read from every supported layout."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _shared import SHARED_DATA

from crl_pipe import InputError
from crl_pipe._provenance import sha256sum
from crl_pipe.io import read_gmt, read_graph, read_screen, write_gmt, write_graphml, write_table

DATA = SHARED_DATA
TAPSEQ_GUIDES = DATA / "schraivogel2020_tapseq" / "gRNA_counts.h5ad"
SACHS_TRUTH = DATA / "sachs2005" / "sachs.2005.ground.truth.graph.txt"
SPECTRA = DATA / "genesets" / "spectra_default_gene_sets.json"


def _counts(n_cells: int = 30, n_genes: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, size=(n_cells, n_genes)).astype(np.int64)


def _write_screen(path: Path, X, *, layers: dict | None = None, obs_names=None, var_names=None) -> Path:
    n_cells, n_genes = X.shape
    obs = pd.DataFrame(
        {"guide": [f"G{i % 3}" for i in range(n_cells)]},
        index=list(obs_names) if obs_names is not None else [f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=list(var_names) if var_names is not None else [f"GENE{j}" for j in range(n_genes)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        ad.AnnData(X=X, obs=obs, var=var, layers=layers or {}).write_h5ad(path)
    return path


# ---------------------------------------------------------------- read_screen


def test_read_screen_returns_csr_float32_counts_with_obs_kept(tmp_path):
    X = _counts()
    adata = read_screen(_write_screen(tmp_path / "s.h5ad", sp.csr_matrix(X)))
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert list(adata.obs_names[:2]) == ["cell0", "cell1"]
    assert list(adata.var_names[:2]) == ["GENE0", "GENE1"]
    assert list(adata.obs["guide"][:4]) == ["G0", "G1", "G2", "G0"]


def test_read_screen_converts_dense_integral_floats(tmp_path):
    X = _counts().astype(np.float64)
    adata = read_screen(_write_screen(tmp_path / "s.h5ad", X))
    assert sp.isspmatrix_csr(adata.X)
    np.testing.assert_array_equal(adata.X.toarray(), X)


def test_read_screen_prefers_counts_layer_over_log_x(tmp_path):
    X = _counts()
    path = _write_screen(tmp_path / "s.h5ad", np.log1p(X), layers={"counts": sp.csr_matrix(X)})
    np.testing.assert_array_equal(read_screen(path).X.toarray(), X)


def test_read_screen_named_layer_and_missing_layer(tmp_path):
    X = _counts()
    path = _write_screen(tmp_path / "s.h5ad", np.log1p(X), layers={"umi": X})
    np.testing.assert_array_equal(read_screen(path, counts_layer="umi").X.toarray(), X)
    with pytest.raises(InputError, match=r"layers\['raw'\] not found.*available layers: \['umi'\]"):
        read_screen(path, counts_layer="raw")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1.0, r"X holds 1 negative value\(s\) \(e.g. -1\)"),
        (np.nan, r"X holds 1 NaN/Inf"),
        (np.inf, r"X holds 1 NaN/Inf"),
        (2.5, r"X holds 1 non-integer value\(s\) \(e.g. 2.5\)"),
    ],
)
def test_read_screen_rejects_invalid_counts(tmp_path, value, message):
    X = _counts().astype(np.float32)
    X[3, 2] = value
    path = _write_screen(tmp_path / "bad.h5ad", sp.csr_matrix(X))
    with pytest.raises(InputError, match=rf"bad.h5ad: {message}.*expected raw counts"):
        read_screen(path)


def test_read_screen_names_the_layer_with_bad_counts(tmp_path):
    X = _counts().astype(np.float32)
    bad = X.copy()
    bad[0, 0] = 0.5
    path = _write_screen(tmp_path / "s.h5ad", X, layers={"counts": bad})
    with pytest.raises(InputError, match=r"layers\['counts'\] holds 1 non-integer"):
        read_screen(path)


def test_read_screen_rejects_duplicated_genes_and_cells(tmp_path):
    X = _counts(n_cells=4, n_genes=3)
    genes = _write_screen(tmp_path / "g.h5ad", X, var_names=["A", "B", "A"])
    with pytest.raises(InputError, match=r"g.h5ad: var index \(gene symbols\) has 1 duplicated name\(s\) \(A\)"):
        read_screen(genes)
    cells = _write_screen(tmp_path / "c.h5ad", X, obs_names=["c1", "c2", "c1", "c2"])
    with pytest.raises(InputError, match=r"c.h5ad: obs index \(cell IDs\) has 2 duplicated name\(s\) \(c1, c2\)"):
        read_screen(cells)


def test_read_screen_unknown_format_lists_supported(tmp_path):
    with pytest.raises(InputError, match=r"unknown screen format 'loom'; supported formats: \[.*'h5ad'.*\]"):
        read_screen(tmp_path / "x.loom", format="loom")


def test_read_screen_missing_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_screen(tmp_path / "missing.h5ad")
    (tmp_path / "empty.h5ad").touch()
    with pytest.raises(InputError, match="empty.h5ad: file is empty"):
        read_screen(tmp_path / "empty.h5ad")


def test_read_screen_leaves_a_read_only_input_untouched(tmp_path):
    path = _write_screen(tmp_path / "s.h5ad", sp.csr_matrix(_counts()))
    before = sha256sum(path)
    os.chmod(path, 0o444)
    adata = read_screen(path)
    adata.X[0, 0] = 99  # the result is in memory, detached from the file
    assert sha256sum(path) == before


def test_read_screen_real_tapseq_guides():
    before = sha256sum(TAPSEQ_GUIDES)
    adata = read_screen(TAPSEQ_GUIDES)
    assert adata.shape == (21977, 86)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    raw = ad.read_h5ad(TAPSEQ_GUIDES)
    assert adata.X.sum(dtype=np.float64) == raw.X.sum()
    assert adata.obs_names.is_unique and adata.obs_names[0] == "TAP1-AAACCTGAGCCTATGT"
    assert sha256sum(TAPSEQ_GUIDES) == before


# ---------------------------------------------------------------- gene sets


def test_gmt_round_trip_keeps_order_and_empty_sets(tmp_path):
    sets = {"P2": ["B", "A"], "P1": ["C"], "EMPTY": []}
    path = write_gmt(sets, tmp_path / "sets.gmt")
    assert read_gmt(path) == sets
    assert list(read_gmt(path)) == ["P2", "P1", "EMPTY"]
    assert [p.name for p in tmp_path.iterdir()] == ["sets.gmt"]  # no temporary file left behind


def test_read_gmt_skips_blank_lines_trailing_tabs_and_duplicate_genes(tmp_path):
    path = tmp_path / "s.gmt"
    path.write_text("MYC\thttp://x\tMYC\tCDK4\t\tMYC\t\n\n  \nE2F\tna\tE2F1\r\n")
    assert read_gmt(path) == {"MYC": ["MYC", "CDK4"], "E2F": ["E2F1"]}


def test_read_gmt_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.gmt"
    path.write_text("A\tna\tG1\n\nB only-two-fields\tG2\n")
    with pytest.raises(InputError, match=r"bad.gmt, line 3: expected name<TAB>description<TAB>gene.*found 2"):
        read_gmt(path)


def test_read_gmt_duplicate_set_name(tmp_path):
    path = tmp_path / "dup.gmt"
    path.write_text("A\tna\tG1\nA\tna\tG2\n")
    with pytest.raises(InputError, match=r"line 2: gene set 'A' appears twice"):
        read_gmt(path)


def test_write_gmt_rejects_tabs(tmp_path):
    with pytest.raises(InputError, match="no tab or newline"):
        write_gmt({"A": ["G\t1"]}, tmp_path / "x.gmt")
    assert not list(tmp_path.iterdir())


def test_read_json_flat_and_grouped(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"P1": ["A", "B"], "P2": ["C"]}))
    assert read_gmt(flat) == {"P1": ["A", "B"], "P2": ["C"]}
    grouped = tmp_path / "grouped.json"
    grouped.write_text(json.dumps({"g1": {"P1": ["A"]}, "g2": {"P2": ["B"], "P3": ["C"]}, "empty": {}}))
    assert read_gmt(grouped) == {"P1": ["A"], "P2": ["B"], "P3": ["C"]}
    assert read_gmt(grouped, collection="g2") == {"P2": ["B"], "P3": ["C"]}
    with pytest.raises(InputError, match=r"collection 'g3' not found; available collections: \['empty', 'g1', 'g2'\]"):
        read_gmt(grouped, collection="g3")


def test_read_json_name_clash_across_collections(tmp_path):
    path = tmp_path / "clash.json"
    path.write_text(json.dumps({"g1": {"P": ["A"]}, "g2": {"P": ["B"]}}))
    with pytest.raises(InputError, match=r"\['P'\] appear in more than one collection; pick one with collection="):
        read_gmt(path)


def test_read_json_rejects_non_gene_lists(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"P": "ABC"}))
    with pytest.raises(InputError, match=r"bad.json: gene set P is not a list of gene names"):
        read_gmt(path)


def test_read_real_spectra_gene_sets():
    everything = read_gmt(SPECTRA)
    glob = read_gmt(SPECTRA, collection="global")
    assert len(everything) == 181 and len(glob) == 150
    assert set(glob) <= set(everything)
    assert everything["B_Breg_UP"] == ["TGFB1", "IL10", "IL12A", "EBI3", "TGFB2"]


# ---------------------------------------------------------------- graphs


def test_read_real_sachs_truth_graph():
    edges = read_graph(SACHS_TRUTH)
    assert list(edges.columns) == ["source", "target", "weight"]
    assert len(edges) == 20
    assert len(set(edges["source"]) | set(edges["target"])) == 11
    assert ("erk", "akt") in set(zip(edges["source"], edges["target"], strict=True))
    assert (edges["weight"] == 1.0).all()


def test_read_tetrad_reversed_and_undirected_edges(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("Graph Nodes:\na;b;c\n\nGraph Edges:\n1. a --> b\n2. c <-- b\n\nGraph Attributes:\nScore: 1\n")
    edges = read_graph(path)
    assert list(zip(edges["source"], edges["target"], strict=True)) == [("a", "b"), ("b", "c")]
    path.write_text("Graph Nodes:\na;b\n\nGraph Edges:\n1. a --- b\n")
    with pytest.raises(InputError, match=r"g.txt, line 5: edge mark '---' is not directed"):
        read_graph(path)
    path.write_text("Graph Nodes:\na;b\n\nGraph Edges:\n1. a --> z\n")
    with pytest.raises(InputError, match=r"node\(s\) \['z'\] not listed"):
        read_graph(path)


def test_read_graph_csv_tsv_and_parquet(tmp_path):
    (tmp_path / "g.csv").write_text("source,target\nX,Y\nY,Z\n")
    csv = read_graph(tmp_path / "g.csv")
    assert csv["weight"].tolist() == [1.0, 1.0] and csv["weight"].dtype == float
    (tmp_path / "g.tsv").write_text("source\ttarget\tweight\nX\tY\t0.5\n")
    assert read_graph(tmp_path / "g.tsv")["weight"].tolist() == [0.5]
    table = pd.DataFrame({"source": ["L1"], "target": ["L2"], "weight": [0.3], "stability": [0.9]})
    pq = read_graph(write_table(table, tmp_path / "g.parquet", "graph"))
    assert pq["lag"].isna().all()  # the graph artifact's lag, null without a time axis
    assert pq["confidence"].isna().all()  # written without the confidence calls of recover_graph
    assert pq[["source", "target", "weight", "stability"]].to_dict("records") == [
        {"source": "L1", "target": "L2", "weight": 0.3, "stability": 0.9}
    ]


def test_read_graph_errors(tmp_path):
    (tmp_path / "g.csv").write_text("from,to\nX,Y\n")
    with pytest.raises(InputError, match=r"g.csv: missing column\(s\) \['source', 'target'\].*found \['from', 'to'\]"):
        read_graph(tmp_path / "g.csv")
    (tmp_path / "w.csv").write_text("source,target,weight\nX,Y,strong\n")
    with pytest.raises(InputError, match=r"w.csv: column 'weight' must be numeric"):
        read_graph(tmp_path / "w.csv")
    (tmp_path / "g.xml").write_text("<graph/>")
    with pytest.raises(InputError, match=r"unknown graph layout '.xml'"):
        read_graph(tmp_path / "g.xml")
    with pytest.raises(InputError, match="graph file does not exist"):
        read_graph(tmp_path / "none.csv")


def test_write_graphml_carries_numeric_attributes(tmp_path):
    edges = pd.DataFrame(
        {
            "source": ["L1", "L2"],
            "target": ["L2", "L3"],
            "weight": [0.5, -1.0],
            "stability": [1.0, 0.25],
            "note": ["a", "b"],
        }
    )
    path = write_graphml(edges, tmp_path / "out" / "graph.graphml")
    graph = nx.read_graphml(path)
    assert graph.is_directed()
    assert sorted(graph.nodes) == ["L1", "L2", "L3"]
    assert graph.edges["L1", "L2"] == {"weight": 0.5, "stability": 1.0}
    assert graph.edges["L2", "L3"]["stability"] == 0.25
    assert [p.name for p in path.parent.iterdir()] == ["graph.graphml"]
    with pytest.raises(InputError, match="missing column"):
        write_graphml(edges.drop(columns="target"), tmp_path / "x.graphml")


def test_empty_table_has_the_contract_columns_and_types(tmp_path):
    from crl_pipe.io import SCHEMAS, empty_table, read_table, write_table

    table = empty_table("steering")
    assert list(table.columns) == list(SCHEMAS["steering"]) and table.empty
    assert table["predicted_change"].dtype == float and table["frame"].dtype == "int64"
    write_table(table, tmp_path / "steering.parquet", "steering")  # a valid artifact as it is
    assert read_table(tmp_path / "steering.parquet", "steering").empty
