"""Perturbation labels in the obs conventions seen in the field, configured or detected."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from crl_pipe import InputError, pipeline
from crl_pipe.io import read_h5ad, read_provenance, read_table
from crl_pipe.pp import CONVENTIONS, detect_convention, label_interventions


def _obs(**columns) -> ad.AnnData:
    n = len(next(iter(columns.values())))
    return ad.AnnData(obs=pd.DataFrame(columns, index=[f"cell{i}" for i in range(n)]))


#: convention -> (obs columns, expected intervention of each labelled cell)
CASES = {
    "pertpy": ({"perturbation": ["control", "GATA1", "MYC", "control"]}, ["control", "GATA1", "MYC", "control"]),
    "scperturb": (
        {"perturbation": ["control", "GATA1", "GATA1_MYC", "control"], "nperts": [0, 1, 2, 0]},
        ["control", "GATA1", "GATA1+MYC", "control"],
    ),
    "gears": ({"condition": ["ctrl", "GATA1+ctrl", "MYC+GATA1", "ctrl"]}, ["control", "GATA1", "GATA1+MYC", "control"]),
    "norman": ({"guide_ids": ["", "GATA1", "GATA1,MYC", ""]}, ["control", "GATA1", "GATA1+MYC", "control"]),
    "10x": (
        {"feature_call": ["Non-Targeting_1", "GATA1-2|NT_3", "GATA1-1|MYC-2", None]},
        ["control", "GATA1", "GATA1+MYC"],  # the last cell has no call: left out
    ),
    "gene": ({"gene": ["non-targeting", "GATA1", "MYC", "NT"]}, ["control", "GATA1", "MYC", "control"]),
    "target_gene": (
        {"target_gene": ["NT", "GATA1", "MYC", "non-targeting"], "batch": ["a", "b", "a", "b"]},
        ["control", "GATA1", "MYC", "control"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_convention_is_detected_and_normalised(name):
    columns, expected = CASES[name]
    adata = _obs(**columns)
    key = detect_convention(adata.obs).key
    assert key == next(c for c in columns if c not in ("nperts", "batch"))
    table = label_interventions(adata)  # no perturbation_key: detected
    assert list(table["intervention"]) == expected
    assert list(table["n_targets"]) == [0 if e == "control" else e.count("+") + 1 for e in expected]
    # the same column configured by name is read by its convention too
    assert list(label_interventions(adata, perturbation_key=key)["intervention"]) == expected


def test_first_usable_convention_wins_and_unusable_ones_are_skipped():
    adata = _obs(
        perturbation=["A", "B", "A", "B"],  # no control label: not usable
        condition=["ctrl", "GATA1+ctrl", "ctrl", "MYC+ctrl"],
        gene=["non-targeting", "X", "Y", "Z"],
    )
    assert detect_convention(adata.obs).key == "condition"
    # a configured control value makes the first column usable
    assert detect_convention(adata.obs, ["A"]).key == "perturbation"


def test_failed_detection_lists_the_columns_and_the_conventions_tried():
    adata = _obs(batch=["a", "b"], perturbation=["GATA1", "MYC"], condition=[np.nan, np.nan])
    with pytest.raises(InputError) as err:
        label_interventions(adata)
    message = str(err.value)
    print(message)
    assert message.startswith("perturbation_key not set and no obs column follows a known convention")
    assert "(obs columns: ['batch', 'perturbation', 'condition'])" in message
    assert "pertpy / scPerturb obs['perturbation'] (no control label among 'GATA1', 'MYC')" in message
    assert "GEARS obs['condition'] (every value is missing)" in message
    for convention in CONVENTIONS[2:]:
        assert f"{convention.name} obs[{convention.key!r}] (absent)" in message
    assert message.endswith("set perturbation_key (and control_values)")


@pytest.mark.parametrize("layer", [False, True])
def test_h5ad_with_counts_in_x_or_layer_runs_ingest_and_label_without_a_key(tmp_path, layer):
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(3.0, size=(6, 4)).astype(np.float32))
    obs = pd.DataFrame(
        {"condition": ["ctrl", "ctrl", "A+ctrl", "A+ctrl", "A+B", "A+B"]}, index=[f"c{i}" for i in range(6)]
    )
    adata = ad.AnnData(X=counts if not layer else sp.csr_matrix(np.log1p(counts.toarray())), obs=obs)
    adata.var_names = ["A", "B", "C", "D"]
    if layer:
        adata.layers["counts"] = counts
    adata.write_h5ad(tmp_path / "screen.h5ad")
    ingested, interventions = tmp_path / "ingested.h5ad", tmp_path / "iv.parquet"
    pipeline.ingest(path=tmp_path / "screen.h5ad", out_h5ad=ingested, out_qc=tmp_path / "qc.parquet", format="h5ad")
    np.testing.assert_array_equal(read_h5ad(ingested).X.toarray(), counts.toarray())
    pipeline.label(ingested=ingested, out=interventions, options={"perturbation_key": "auto"})
    assert list(read_table(interventions, "interventions")["intervention"]) == ["control"] * 2 + ["A"] * 2 + ["A+B"] * 2
    assert read_provenance(interventions)["params"]["perturbation_key"] == "condition"  # what was detected
