"""Cell Ranger runs with CRISPR Guide Capture (``format: 10x``): MTX and h5 layouts, calls, targets."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from crl_pipe import InputError, pipeline
from crl_pipe.config import validate_config
from crl_pipe.io import read_10x, read_h5ad, read_screen, read_table

SCHEMA = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"

CELLS = [f"AAAC{i:02d}-1" for i in range(8)]
GENES = [("ENSG01", "GATA1"), ("ENSG02", "MYC"), ("ENSG03", "TAL1"), ("ENSG04", "MYC")]  # MYC twice: made unique
#: Guide IDs that the naming rule could not read: their targets come from the feature reference.
GUIDES = [
    ("sg01", "GATA1_a", "GATA1"),
    ("sg02", "GATA1_b", "GATA1"),
    ("sg03", "MYC_a", "MYC"),
    ("sg04", "ctrl_a", "Non-Targeting"),
]
ANTIBODY = ("CD4", "CD4_TotalSeqB")
#: Guide UMIs per cell (rows = CELLS, columns = GUIDES) and Cell Ranger's calls of each cell.
GUIDE_UMIS = np.array(
    [
        [40, 0, 1, 0],  # sg01
        [0, 0, 55, 2],  # sg03
        [30, 0, 0, 25],  # sg01 + sg04 -> GATA1
        [0, 0, 0, 60],  # sg04 -> non-targeting
        [1, 2, 0, 0],  # nothing called
        [0, 35, 45, 0],  # sg02 + sg03 -> GATA1+MYC
        [0, 0, 0, 70],  # sg04
        [2, 0, 0, 3],  # nothing called
    ]
)
CALLS = {0: "sg01", 1: "sg03", 2: "sg01|sg04", 3: "sg04", 5: "sg02|sg03", 6: "sg04"}
THRESHOLDS = {"sg01": 30, "sg02": 35, "sg03": 45}  # sg04 left out: its threshold is its lowest called count


def _expression() -> np.ndarray:
    return np.random.default_rng(0).poisson(5.0, size=(len(CELLS), len(GENES)))


def _features() -> pd.DataFrame:
    rows = [(i, n, "Gene Expression", "GRCh38", "", "") for i, n in GENES]
    rows += [(i, n, "CRISPR Guide Capture", "", t, t) for i, n, t in GUIDES]
    rows.append((ANTIBODY[0], ANTIBODY[1], "Antibody Capture", "", "", ""))
    return pd.DataFrame(rows, columns=["id", "name", "feature_type", "genome", "target_gene_id", "target_gene_name"])


def _matrix() -> np.ndarray:
    """cells x features, in the order of :func:`_features`."""
    return np.hstack([_expression(), GUIDE_UMIS, np.full((len(CELLS), 1), 7)])


def _write_mtx(folder: Path, matrix: np.ndarray, features: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(matrix.T))  # Cell Ranger stores features x cells
    features[["id", "name", "feature_type"]].to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.DataFrame(CELLS).to_csv(folder / "barcodes.tsv.gz", sep="\t", header=False, index=False)


def _write_h5(path: Path, matrix: np.ndarray, features: pd.DataFrame, *, targets: bool = False) -> None:
    """The 10x v3 HDF5 layout: /matrix CSC (features x cells) and /matrix/features."""
    csc = sp.csc_matrix(matrix.T.astype(np.int32))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(CELLS, dtype="S"))
        m.create_dataset("data", data=csc.data.astype(np.int32))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        g = m.create_group("features")
        tags = ["genome", *(["target_gene_id", "target_gene_name"] if targets else [])]
        g.create_dataset("_all_tag_keys", data=np.array(tags, dtype="S"))
        for column, name in [("id", "id"), ("name", "name"), ("feature_type", "feature_type"), *[(t, t) for t in tags]]:
            g.create_dataset(name, data=np.array(features[column].tolist(), dtype="S"))


def cellranger_run(
    root: Path, *, layout: str = "mtx", calls: bool = True, reference: bool = True, h5_targets: bool = False
) -> Path:
    """A Cell Ranger ``outs/`` folder: the filtered matrix, and crispr_analysis/ with calls, thresholds, reference."""
    outs = root / "outs"
    features = _features()
    if layout == "mtx":
        _write_mtx(outs / "filtered_feature_bc_matrix", _matrix(), features)
    else:
        _write_h5(outs / "filtered_feature_bc_matrix.h5", _matrix(), features, targets=h5_targets)
    analysis = outs / "crispr_analysis"
    analysis.mkdir()
    if calls:
        lines = ["cell_barcode,num_features,feature_call,num_umis"]
        for cell, call in CALLS.items():
            umis = "|".join(str(GUIDE_UMIS[cell, [g[0] for g in GUIDES].index(x)]) for x in call.split("|"))
            lines.append(f"{CELLS[cell]},{call.count('|') + 1},{call},{umis}")
        (analysis / "protospacer_calls_per_cell.csv").write_text("\n".join(lines) + "\n")
        thresholds = ["Protospacer,UMI threshold", *(f"{g},{t}" for g, t in THRESHOLDS.items())]
        (analysis / "protospacer_umi_thresholds.csv").write_text("\n".join(thresholds) + "\n")
    if reference:
        ref = features[features["feature_type"] == "CRISPR Guide Capture"].assign(
            read="R2", pattern="(BC)", sequence="ACGT"
        )
        cols = ["id", "name", "read", "pattern", "sequence", "feature_type", "target_gene_id", "target_gene_name"]
        ref[cols].to_csv(analysis / "feature_reference.csv", index=False)
    return outs


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("layout", ["mtx", "h5"])
def test_both_layouts_read_expression_guides_targets_and_calls(tmp_path, layout, caplog):
    outs = cellranger_run(tmp_path, layout=layout)
    with caplog.at_level(logging.INFO, logger="crl_pipe"):
        adata = read_10x(outs)
    assert list(adata.obs_names) == CELLS
    assert list(adata.var_names) == ["GATA1", "MYC", "TAL1", "MYC-1"]
    assert list(adata.var["gene_ids"]) == [g[0] for g in GENES]
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), _expression())
    np.testing.assert_array_equal(adata.obsm["guide_counts"].toarray(), GUIDE_UMIS)
    assert list(adata.uns["guide_names"]) == ["sg01", "sg02", "sg03", "sg04"]
    assert list(adata.uns["guide_targets"]) == ["GATA1", "GATA1", "MYC", "non-targeting"]  # from the feature reference
    calls = adata.obs["feature_call"].astype(object)
    assert calls.isna().tolist() == [i not in CALLS for i in range(len(CELLS))]
    assert list(calls.dropna()) == list(CALLS.values())
    np.testing.assert_array_equal(adata.uns["cellranger_thresholds"], [30, 35, 45, np.nan])
    assert "1 feature(s) neither 'Gene Expression' nor 'CRISPR Guide Capture' left out" in caplog.text  # antibody


def test_matrix_paths_and_targets_from_the_h5_features(tmp_path):
    outs = cellranger_run(tmp_path, layout="h5", reference=False, h5_targets=True)
    by_file = read_10x(outs / "filtered_feature_bc_matrix.h5")  # crispr_analysis/ found beside it
    assert list(by_file.uns["guide_targets"]) == ["GATA1", "GATA1", "MYC", "non-targeting"]
    assert "feature_call" in by_file.obs
    mtx = cellranger_run(tmp_path / "m", reference=False)
    direct = read_10x(mtx / "filtered_feature_bc_matrix")
    assert "guide_targets" not in direct.uns  # no reference: call_guides falls back to the naming rule
    np.testing.assert_array_equal(direct.obsm["guide_counts"].toarray(), by_file.obsm["guide_counts"].toarray())
    mapped = read_screen(mtx, format="10x", guide_map={g[0]: g[2] for g in GUIDES})
    assert list(mapped.uns["guide_targets"]) == ["GATA1", "GATA1", "MYC", "non-targeting"]


# ------------------------------------------------------------------ through the workflow steps


def _ingest(outs: Path, tmp_path: Path, **calling) -> tuple:
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in [("h5ad", "h5ad"), ("qc", "parquet"), ("guides", "parquet")]}
    pipeline.ingest(
        path=outs, out_h5ad=out["h5ad"], out_qc=out["qc"], out_guides=out["guides"], format="10x", guide_calling=calling
    )
    return read_h5ad(out["h5ad"]), read_table(out["guides"], "guides"), out["h5ad"]


def test_ingest_takes_cell_rangers_calls_and_labels_are_detected(tmp_path):
    adata, guides, ingested = _ingest(cellranger_run(tmp_path), tmp_path, min_umis=3, min_cells=20)
    called = guides[guides["called"]]
    assert sorted(zip(called["sample_id"], called["guide"], strict=False)) == sorted(
        (CELLS[c], g) for c, call in CALLS.items() for g in call.split("|")
    )
    assert set(guides["method"]) == {"cellranger"}
    assert guides.groupby("guide")["threshold"].first().to_dict() == {"sg01": 30, "sg02": 35, "sg03": 45, "sg04": 25}
    assert list(adata.obs["perturbation"].astype(object).fillna("-")) == [
        "GATA1", "MYC", "GATA1", "non-targeting", "-", "GATA1+MYC", "non-targeting", "-"
    ]  # fmt: skip
    pipeline.label(ingested=ingested, out=tmp_path / "iv.parquet")  # no perturbation_key: detected
    labels = read_table(tmp_path / "iv.parquet", "interventions")
    assert list(labels["intervention"]) == ["GATA1", "MYC", "GATA1", "control", "GATA1+MYC", "control"]


def test_without_cell_ranger_calls_guides_are_called_here(tmp_path):
    outs = cellranger_run(tmp_path, calls=False)
    adata, guides, _ = _ingest(outs, tmp_path, method="threshold", min_umis=5)
    assert set(guides["method"]) == {"threshold"}
    assert list(adata.obs["n_guides"]) == [1, 1, 2, 1, 0, 2, 1, 0]  # here the same calls as Cell Ranger's
    with pytest.raises(
        InputError, match=r"outs: guide_calling.method is 'cellranger' but there is no crispr_analysis/"
    ):
        _ingest(outs, tmp_path, method="cellranger")
    # and a run with calls can still be called by crl-pipe when the config says so
    adata, guides, _ = _ingest(cellranger_run(tmp_path / "b"), tmp_path, method="mixture", min_cells=100)
    assert set(guides["method"]) == {"threshold"}  # too few cells to fit: the min_umis fallback of call_guides


def test_config_accepts_10x_without_perturbation_key():
    config = {"datasets": {"screen": {"format": "10x", "path": "outs", "guide_calling": {"method": "cellranger"}}}}
    validate_config(config, SCHEMA)
    assert config["datasets"]["screen"]["guide_calling"] == {"method": "cellranger", "min_umis": 3, "min_cells": 20}


# ------------------------------------------------------------------ errors name the file and what was expected


def test_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "logs").mkdir(parents=True)
    with pytest.raises(
        InputError, match=r"empty: no Cell Ranger matrix; expected filtered_feature_bc_matrix.h5 .*found: logs"
    ):
        read_10x(empty)
    with pytest.raises(InputError, match=r"nowhere: does not exist; expected a Cell Ranger outs/ folder"):
        read_10x(tmp_path / "nowhere")
    broken = tmp_path / "broken" / "filtered_feature_bc_matrix.h5"
    broken.parent.mkdir()
    broken.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"filtered_feature_bc_matrix\.h5: not a readable Cell Ranger matrix"):
        read_10x(broken.parent)
    genes_only = _features().iloc[: len(GENES)]
    _write_mtx(tmp_path / "gex" / "filtered_feature_bc_matrix", _expression(), genes_only)
    with pytest.raises(
        InputError, match=r"no 'CRISPR Guide Capture' features \(feature types: \['Gene Expression'\]\)"
    ):
        read_10x(tmp_path / "gex")
    outs = cellranger_run(tmp_path / "bad")
    calls = outs / "crispr_analysis" / "protospacer_calls_per_cell.csv"
    calls.write_text(calls.read_text().replace("sg03", "sg99"))
    with pytest.raises(
        InputError, match=r"protospacer_calls_per_cell\.csv: feature_call names 1 guide\(s\) not among .*\(sg99\)"
    ):
        read_10x(outs)
    reference = outs / "crispr_analysis" / "feature_reference.csv"
    reference.write_text(reference.read_text().replace("sg02", "sgXX"))
    with pytest.raises(InputError, match=r"feature_reference\.csv: 1 guide\(s\) of the matrix have no row \(sg02\)"):
        read_10x(outs, feature_reference=reference)
    with pytest.raises(InputError, match=r"option\(s\) \['guides'\] not understood by format '10x'"):
        read_screen(outs, format="10x", guides="x.h5ad")
