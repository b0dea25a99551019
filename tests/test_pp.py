"""crl_pipe.pp: perturbation labels, QC metrics, preprocessing and anchors."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from crl_pipe import InputError
from crl_pipe.io import read_h5ad, read_table, write_h5ad, write_table
from crl_pipe.pp import (
    CONTROL_TOKENS,
    build_anchors,
    data_driven_anchors,
    label_interventions,
    parse_perturbation,
    preprocess,
    qc_metrics,
)


def _adata(X, labels=None, genes=None) -> ad.AnnData:
    n_cells, n_genes = X.shape
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    if labels is not None:
        obs["perturbation"] = labels
    var = pd.DataFrame(index=genes if genes is not None else [f"G{j}" for j in range(n_genes)])
    return ad.AnnData(X=X, obs=obs, var=var)


def _obs_only(labels) -> ad.AnnData:
    return _adata(sp.csr_matrix((len(labels), 2), dtype=np.float32), labels)


# ---------------------------------------------------------------- parse_perturbation


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("MYC", ("MYC",)),
        ("GATA1+MYC", ("GATA1", "MYC")),
        ("MYC + GATA1", ("GATA1", "MYC")),
        ("MYC,GATA1", ("GATA1", "MYC")),
        ("MYC|GATA1|MYC", ("GATA1", "MYC")),
        ("MYC;ctrl", ("MYC",)),
        ("GENE+ctrl", ("GENE",)),
        ("ctrl", ()),
        ("CTRL+Non-Targeting", ()),
        ("control", ()),
        ("NT", ()),
        ("safe-targeting", ()),
        (None, None),
        (np.nan, None),
        (pd.NA, None),
        ("", None),
        ("  ", None),
        ("+", None),
    ],
)
def test_parse_perturbation_cases(label, expected):
    assert parse_perturbation(label) == expected


def test_parse_perturbation_user_control_values():
    assert parse_perturbation("NTC_1", control_values=["ntc_1"]) == ()
    assert parse_perturbation("MYC+NTC_1", control_values=["NTC_1"]) == ("MYC",)
    # A whole label listed as a control counts even when it contains a separator.
    assert parse_perturbation("empty+vector", control_values=["empty+vector"]) == ()


_gene = st.from_regex(r"[A-Z][A-Z0-9-]{0,6}", fullmatch=True).filter(lambda g: g.casefold() not in CONTROL_TOKENS)
_sep = st.sampled_from(["+", ",", "|", ";", " + "])


@given(st.lists(_gene, min_size=1, max_size=5), st.randoms(use_true_random=False), _sep)
def test_parse_perturbation_is_order_invariant(genes, rnd, sep):
    shuffled = list(genes)
    rnd.shuffle(shuffled)
    assert parse_perturbation(sep.join(genes)) == parse_perturbation(sep.join(shuffled)) == tuple(sorted(set(genes)))


@given(st.lists(_gene, min_size=1, max_size=5), _sep)
def test_parse_perturbation_is_idempotent_on_joined_result(genes, sep):
    once = parse_perturbation(sep.join(genes))
    assert parse_perturbation("+".join(once)) == once


_control = st.sampled_from(sorted(CONTROL_TOKENS) + ["CTRL", "Control", "Non-Targeting"])


@given(st.lists(_gene, max_size=4), st.lists(_control, min_size=1, max_size=3))
def test_parse_perturbation_controls_vanish(genes, controls):
    assert parse_perturbation("+".join(genes + controls)) == tuple(sorted(set(genes)))


# ---------------------------------------------------------------- label_interventions


def test_label_interventions_schema_and_values(tmp_path):
    adata = _obs_only(["ctrl", "MYC", "MYC+GATA1", "GATA1,MYC", "ctrl", "GATA1"])
    table = label_interventions(adata, perturbation_key="perturbation", control_values=["ctrl"])
    assert table["sample_id"].tolist() == [f"c{i}" for i in range(6)]
    assert table["intervention"].tolist() == ["control", "MYC", "GATA1+MYC", "GATA1+MYC", "control", "GATA1"]
    assert table["targets"].tolist() == [[], ["MYC"], ["GATA1", "MYC"], ["GATA1", "MYC"], [], ["GATA1"]]
    assert table["n_targets"].tolist() == [0, 1, 2, 2, 0, 1]
    assert table["is_control"].tolist() == [True, False, False, False, True, False]
    assert table["n_targets"].dtype == np.int64 and table["is_control"].dtype == bool
    write_table(table, tmp_path / "interventions.parquet", "interventions")  # meets the artifact contract


def test_label_interventions_categorical_column_and_custom_control_label():
    labels = pd.Categorical(["NTC", "A", "B", "NTC"], categories=["A", "B", "NTC", "unused"])
    table = label_interventions(
        _obs_only(labels), perturbation_key="perturbation", control_values=["NTC"], control_label="observational"
    )
    assert table["intervention"].tolist() == ["observational", "A", "B", "observational"]


def test_label_interventions_missing_column_lists_available():
    adata = _obs_only(["ctrl", "A"])
    with pytest.raises(InputError, match=r"obs column 'guide' not found.*available obs columns: \['perturbation'\]"):
        label_interventions(adata, perturbation_key="guide", control_values=["ctrl"])


def test_label_interventions_no_controls_names_what_was_looked_for():
    adata = _obs_only(["A"] * 3 + ["B"] * 2 + ["NTC"])
    expected = r"no control cells; looked for \['non_targeting'\].*most common labels: 'A' \(3\), 'B' \(2\)"
    with pytest.raises(InputError, match=expected):
        label_interventions(adata, perturbation_key="perturbation", control_values=["non_targeting"])


def test_label_interventions_stops_on_unmatched_control_value():
    """A configured control value that matches no label is a mistake, even where built-in tokens
    found other controls: the error lists the labels that look like controls, with cell counts."""
    adata = _obs_only(["non-targeting"] * 3 + ["NT_guide_2"] * 2 + ["A", "A", "STAT1+ctrl"])
    expected = (
        r"obs\['perturbation'\]: control value 'NTC' matches no label; labels that look like controls: "
        r"'non-targeting' \(3 cells\), 'NT_guide_2' \(2 cells\); expected control_values to name those$"
    )
    with pytest.raises(InputError, match=expected):
        label_interventions(adata, perturbation_key="perturbation", control_values=["NTC"])
    table = label_interventions(adata, perturbation_key="perturbation", control_values=["NT_guide_2"])
    assert table["is_control"].sum() == 5


def test_label_interventions_drops_unlabelled_cells(caplog):
    adata = _obs_only(["ctrl", None, "A", np.nan, ""])
    with caplog.at_level(logging.INFO, logger="crl_pipe"):
        table = label_interventions(adata, perturbation_key="perturbation", control_values=["ctrl"])
    assert table["sample_id"].tolist() == ["c0", "c2"]
    assert "3 of 5 cells have no perturbation label" in caplog.text


def test_label_interventions_min_cells_drops_rare_but_keeps_controls(caplog):
    adata = _obs_only(["ctrl"] + ["A"] * 3 + ["B"] + ["A+B"] * 2)
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        table = label_interventions(adata, perturbation_key="perturbation", control_values=["ctrl"], min_cells=3)
    assert table["intervention"].tolist() == ["control", "A", "A", "A"]
    assert "2 intervention(s) with fewer than 3 cells dropped: A+B (2), B (1)" in caplog.text
    with pytest.raises(InputError, match=r"no perturbed \(non-control\) cells with at least min_cells=5 cells remain"):
        label_interventions(adata, perturbation_key="perturbation", control_values=["ctrl"], min_cells=5)


def test_label_interventions_only_controls():
    with pytest.raises(InputError, match=r"no perturbed \(non-control\) cells remain"):
        label_interventions(_obs_only(["ctrl", "ctrl"]), perturbation_key="perturbation", control_values=["ctrl"])


def test_label_interventions_on_backed_anndata(tmp_path):
    path = tmp_path / "screen.h5ad"
    _obs_only(["ctrl", "A", "A+B"]).write_h5ad(path)
    backed = read_h5ad(path, backed=True)
    try:
        table = label_interventions(backed, perturbation_key="perturbation", control_values=["ctrl"])
        with pytest.raises(InputError, match=r"screen.h5ad: obs column 'x' not found"):
            label_interventions(backed, perturbation_key="x", control_values=["ctrl"])
    finally:
        backed.file.close()
    assert table["intervention"].tolist() == ["control", "A", "A+B"]


# ---------------------------------------------------------------- qc_metrics


def test_qc_metrics_equal_hand_computed_sums():
    X = sp.csr_matrix(np.array([[0, 3, 1], [0, 0, 0], [5, 0, 2]], dtype=np.float32))
    X.data[0] = 0.0  # an explicitly stored zero is not a detected gene
    qc = qc_metrics(_adata(X))
    assert qc["sample_id"].tolist() == ["c0", "c1", "c2"]
    assert qc["total_counts"].tolist() == [1.0, 0.0, 7.0]
    assert qc["n_genes"].tolist() == [1, 0, 2]
    assert qc.dtypes.to_dict() == {"sample_id": object, "total_counts": np.float64, "n_genes": np.int64}
    dense = qc_metrics(_adata(X.toarray()))
    pd.testing.assert_frame_equal(qc, dense)


# ---------------------------------------------------------------- preprocess


def _screen(seed: int = 0):
    """200 genes at means 2..60 counts: HV0..HV4 bimodal (highly variable), the rest Poisson.

    ``PERT`` (targeted) and ``KEEP`` (a gene-set member) are Poisson: flat, never highly variable.
    """
    rng = np.random.default_rng(seed)
    n_cells = 120
    genes = [f"HV{j}" for j in range(5)] + [f"G{j}" for j in range(193)] + ["PERT", "KEEP"]
    means = np.linspace(2, 60, len(genes))[rng.permutation(len(genes))]
    means[:5] = [20, 27, 34, 42, 50]  # overdispersion shows on the log scale only away from tiny means
    rates = np.tile(means, (n_cells, 1))
    rates[:, :5] *= rng.choice([0.1, 1.9], size=(n_cells, 5))  # on/off expression: far above Poisson noise
    X = rng.poisson(rates).astype(np.float32)
    labels = ["ctrl"] * 60 + ["PERT"] * 40 + ["OTHER"] * 20
    adata = _adata(sp.csr_matrix(X), labels, genes)
    table = label_interventions(adata, perturbation_key="perturbation", control_values=["ctrl"])
    return adata, table


def test_preprocess_selects_hvgs_plus_perturbed_and_gene_set_genes():
    adata, table = _screen()
    out = preprocess(adata, table, keep_genes=["KEEP", "ABSENT"], n_top_genes=5)
    assert set(out.var_names) == {"HV0", "HV1", "HV2", "HV3", "HV4", "PERT", "KEEP"}
    assert not out.var.loc["PERT", "highly_variable"] and out.var.loc["PERT", "perturbed"]
    assert not out.var.loc["KEEP", "highly_variable"] and out.var.loc["KEEP", "in_gene_set"]
    assert out.var["highly_variable"].sum() == 5
    assert out.var[["highly_variable", "perturbed", "in_gene_set"]].dtypes.eq(bool).all()
    params = out.uns["crl_pipe_preprocess"]
    assert params["n_top_genes"] == 5 and params["target_sum"] == 1e4 and params["flavor"] == "seurat"
    assert params["n_perturbed"] == 1 and params["n_in_gene_set"] == 1 and params["n_keep_genes_missing"] == 1


def test_preprocess_values_cells_and_layers():
    adata, table = _screen()
    table = table[table["sample_id"] != "c5"].iloc[::-1]  # order of the table must not matter
    out = preprocess(adata, table, n_top_genes=5)
    assert list(out.obs_names) == [c for c in adata.obs_names if c != "c5"]
    assert out.obs["intervention"].iloc[0] == "control" and out.obs["intervention"].iloc[-1] == "OTHER"
    assert out.obs["is_control"].sum() == 59
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32
    assert sp.isspmatrix_csr(out.layers["counts"]) and out.layers["counts"].dtype == np.float32
    raw = adata[out.obs_names, out.var_names].X.toarray()
    np.testing.assert_array_equal(out.layers["counts"].toarray(), raw)
    library = adata[out.obs_names].X.toarray().sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.X.toarray(), np.log1p(raw / library * 1e4), rtol=1e-5)
    assert adata.n_vars == 200 and "counts" not in adata.layers  # the input is left alone


def test_preprocess_caps_n_top_genes_and_drops_empty_cells(tmp_path, caplog):
    adata, table = _screen()
    X = adata.X.toarray()
    X[3, :] = 0
    X[:, 10] = 0  # a gene that never varies cannot be highly variable
    adata.X = sp.csr_matrix(X)
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        out = preprocess(adata, table, n_top_genes=5000)
    assert "1 labelled cell(s) with zero counts dropped" in caplog.text
    assert "c3" not in out.obs_names and out.n_obs == 119
    assert adata.var_names[10] not in out.var_names and out.n_vars == 199
    write_h5ad(out, tmp_path / "pre.h5ad")  # writes without warnings (warnings are errors here)
    assert read_h5ad(tmp_path / "pre.h5ad").uns["crl_pipe_preprocess"]["n_top_genes"] == 5000


def test_preprocess_accepts_table_read_back_from_parquet(tmp_path):
    adata, table = _screen()
    back = read_table(write_table(table, tmp_path / "i.parquet", "interventions"), "interventions")
    assert "PERT" in preprocess(adata, back, n_top_genes=2).var_names


def test_preprocess_errors():
    adata, table = _screen()
    with pytest.raises(InputError, match=r"missing column\(s\) \['targets'\]"):
        preprocess(adata, table.drop(columns="targets"))
    with pytest.raises(InputError, match="no sample_id matches a cell"):
        preprocess(adata, table.assign(sample_id="x" + table["sample_id"]))
    with pytest.raises(InputError, match="sample_id 'c0' appears twice"):
        preprocess(adata, pd.concat([table, table.head(1)]))


# ---------------------------------------------------------------- build_anchors


def _preprocessed(genes) -> ad.AnnData:
    return _adata(sp.csr_matrix((4, len(genes)), dtype=np.float32), genes=list(genes))


def test_build_anchors_keeps_order_drops_small_and_shared(tmp_path):
    adata = _preprocessed(["A1", "A2", "A3", "B1", "B2", "S", "C1"])
    sets = {"P_A": ["A1", "A2", "A3", "MISSING"], "P_B": ["B1", "S", "B2"], "P_C": ["C1", "S"], "P_D": ["X", "Y"]}
    anchors, dropped = build_anchors(adata, sets)
    assert anchors.columns.tolist() == ["program", "feature", "weight"]
    assert anchors["program"].unique().tolist() == ["P_A", "P_B"]
    assert anchors.loc[anchors["program"] == "P_B", "feature"].tolist() == ["B1", "B2"]  # S is shared with P_C
    assert (anchors["weight"] == 1.0).all()
    assert dropped.columns.tolist() == ["program", "n_in_set", "n_in_data", "reason"]
    assert dropped["program"].tolist() == ["P_C", "P_D"]
    assert dropped["reason"].tolist() == [
        "2 of 2 genes in the data, 1 of them shared with other gene sets; needs at least 2 anchors",
        "0 of 2 genes in the data; needs at least 2 anchors",
    ]
    write_table(anchors, tmp_path / "anchors.parquet", "anchors")


def test_build_anchors_non_exclusive_keeps_shared_genes():
    adata = _preprocessed(["A1", "S", "C1"])
    anchors, dropped = build_anchors(adata, {"P_A": ["A1", "S"], "P_C": ["C1", "S"]}, exclusive=False, min_anchors=2)
    by_program = anchors.groupby("program", sort=False)["feature"].apply(list).to_dict()
    assert by_program == {"P_A": ["A1", "S"], "P_C": ["C1", "S"]}
    assert dropped.empty


def test_build_anchors_reason_for_too_few_genes():
    adata = _preprocessed([f"G{i}" for i in range(3)] + ["H1", "H2"])
    sets = {"BIG": [f"G{i}" for i in range(25)][:1] + [f"Z{i}" for i in range(24)], "H": ["H1", "H2"]}
    _, dropped = build_anchors(adata, sets)
    reason = "1 of 25 genes in the data; needs at least 2 anchors"
    assert dropped.to_dict("records") == [{"program": "BIG", "n_in_set": 25, "n_in_data": 1, "reason": reason}]


def test_build_anchors_nothing_kept_explains_both_sides():
    adata = _preprocessed(["Actb", "Gapdh", "Myc"])
    with pytest.raises(
        InputError,
        match=r"no gene set has >= 2 anchor genes in the data.*the data has 3 genes \(e.g. Actb, Gapdh, Myc\), "
        r"the 1 gene sets name 3 genes \(e.g. ACTB, GAPDH, MYC\); 3 gene-set genes match only when ignoring case",
    ):
        build_anchors(adata, {"P": ["ACTB", "GAPDH", "MYC"]})
    with pytest.raises(InputError, match="none given"):
        build_anchors(adata, {})


# ---------------------------------------------------------------- data_driven_anchors


def test_data_driven_anchors_recover_planted_blocks():
    rng = np.random.default_rng(0)
    n_cells, block = 400, 8
    factors = rng.normal(size=(n_cells, 3))
    loadings = np.zeros((3, 3 * block + 6))
    for k in range(3):
        loadings[k, k * block : (k + 1) * block] = rng.uniform(0.8, 1.2, block)
    X = factors @ loadings + 0.5 * rng.normal(size=(n_cells, loadings.shape[1]))
    genes = [f"B{j // block}_{j % block}" for j in range(3 * block)] + [f"NOISE{j}" for j in range(6)]
    adata = _adata(sp.csr_matrix(X.astype(np.float32)), genes=genes)
    adata.obs["is_control"] = np.arange(n_cells) < 300  # FA sees the 300 control cells

    anchors, dropped = data_driven_anchors(adata, n_programs=3, n_anchors=block)
    recovered = {frozenset(g) for g in anchors.groupby("program")["feature"].apply(set)}
    planted = {frozenset(g for g in genes if g.startswith(f"B{k}_")) for k in range(3)}
    assert recovered == planted
    assert sorted(anchors["program"].unique()) == ["F1", "F2", "F3"]
    assert dropped.empty
    again, _ = data_driven_anchors(adata, n_programs=3, n_anchors=block)
    pd.testing.assert_frame_equal(anchors, again)  # deterministic

    top3, _ = data_driven_anchors(adata, n_programs=3, n_anchors=3)
    assert top3.groupby("program").size().tolist() == [3, 3, 3]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_data_driven_anchors_drops_noise_factor(seed):
    """One real program and two factors asked for: the second, fitted to noise genes, is dropped."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(200, 1))
    X = np.hstack([factor + 0.3 * rng.normal(size=(200, 5)), rng.normal(size=(200, 4))])
    adata = _adata(sp.csr_matrix(X.astype(np.float32)), genes=[f"A{i}" for i in range(5)] + [f"N{i}" for i in range(4)])
    anchors, dropped = data_driven_anchors(adata, n_programs=2)
    assert set(anchors["feature"]) == {f"A{i}" for i in range(5)} and set(anchors["program"]) == {"F1"}
    assert dropped["program"].tolist() == ["F2"]
    assert dropped["reason"].iloc[0].startswith("explains less variance than one gene (sum of squared loadings 0.")


def test_data_driven_anchors_errors():
    flat = _adata(sp.csr_matrix(np.ones((10, 3), dtype=np.float32)))
    with pytest.raises(InputError, match="0 genes vary across cells"):
        data_driven_anchors(flat)
    with pytest.raises(InputError, match="expected both >= 1"):
        data_driven_anchors(flat, n_programs=0)
    rng = np.random.default_rng(0)
    noise = _adata(sp.csr_matrix(rng.normal(size=(100, 6)).astype(np.float32)))
    with pytest.raises(InputError, match="none of 3 factors explains more variance than one gene with >= 2 genes"):
        data_driven_anchors(noise, n_programs=3)
