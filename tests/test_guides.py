"""Guide counts in (``format: guide_counts``), guide -> target mapping, and guide calling."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from _shared import SHARED_DATA
from scipy import stats

from crl_pipe import InputError
from crl_pipe._provenance import sha256sum
from crl_pipe.io import (
    SCHEMAS,
    read_guide_counts,
    read_guide_map,
    read_h5ad,
    read_screen,
    read_table,
    write_h5ad,
    write_table,
)
from crl_pipe.pp import CONTROL_TARGET, call_guides, guide_target, label_interventions
from crl_pipe.tl import knockdown

TAPSEQ = SHARED_DATA / "schraivogel2020_tapseq"
TAPSEQ_EXPRESSION = TAPSEQ / "gene_expression_counts.csv"
TAPSEQ_GUIDES = TAPSEQ / "gRNA_counts.h5ad"
needs_tapseq = pytest.mark.skipif(not TAPSEQ_GUIDES.exists(), reason="shared TAP-seq data not available")

CELLS = [f"AAAC-{i}" for i in range(6)]
GENES = ["GATA1", "MYC", "TAL1"]
GUIDES = ["GATA1_1", "GATA1_2", "MYC_1", "NT_1"]


# ------------------------------------------------------------------ fixtures built in code


def _expression(n_cells: int = 6) -> np.ndarray:
    return np.random.default_rng(0).poisson(4.0, size=(n_cells, len(GENES)))


def _guide_matrix() -> np.ndarray:
    """Rows follow CELLS[1:] + ["ghost"]: guide counts exist for 5 of the 6 expression cells, plus one stray barcode."""
    return np.array(
        [
            [40, 0, 1, 0],  # AAAC-1: GATA1_1
            [0, 0, 55, 2],  # AAAC-2: MYC_1 (NT_1 is background)
            [30, 0, 0, 25],  # AAAC-3: GATA1_1 + NT_1 -> GATA1
            [0, 0, 0, 60],  # AAAC-4: NT_1 -> non-targeting
            [1, 2, 0, 0],  # AAAC-5: nothing called
            [9, 9, 9, 9],  # ghost: not in the expression file
        ]
    )


def _write_table(path: Path, matrix: np.ndarray, cells: list[str], columns: list[str], sep: str = ",") -> Path:
    frame = pd.DataFrame(matrix, index=pd.Index(cells, name="cell"), columns=columns)
    frame.to_csv(path, sep=sep)
    return path


def _write_guides_h5ad(path: Path) -> Path:
    ad.AnnData(
        X=sp.csr_matrix(_guide_matrix()),
        obs=pd.DataFrame(index=[*CELLS[1:], "ghost"]),
        var=pd.DataFrame(index=GUIDES),
    ).write_h5ad(path)
    return path


def _write_mtx(folder: Path, X: np.ndarray, cells: list[str], features: list[tuple[str, str, str]]) -> Path:
    """A Cell Ranger filtered_feature_bc_matrix folder, gzipped (features x cells)."""
    folder.mkdir()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(X.T))
    pd.DataFrame(features).to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.DataFrame(cells).to_csv(folder / "barcodes.tsv.gz", sep="\t", header=False, index=False)
    return folder


@pytest.fixture
def screen_files(tmp_path) -> tuple[Path, Path]:
    expression = _write_table(tmp_path / "expr.csv", _expression(), CELLS, GENES)
    return expression, _write_guides_h5ad(tmp_path / "guides.h5ad")


# ------------------------------------------------------------------ reading


def test_csv_expression_and_h5ad_guides_are_aligned_on_barcodes(screen_files, caplog):
    expression, guides = screen_files
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        adata = read_guide_counts(expression, guides)
    assert list(adata.obs_names) == CELLS[1:]  # expression order, AAAC-0 has no guide counts
    assert list(adata.var_names) == GENES
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), _expression()[1:])
    assert sp.issparse(adata.obsm["guide_counts"]) and adata.obsm["guide_counts"].dtype == np.float32
    np.testing.assert_array_equal(adata.obsm["guide_counts"].toarray(), _guide_matrix()[:5])
    assert list(adata.uns["guide_names"]) == GUIDES
    assert "1 of 6 cells of" in caplog.text and "have no guide counts in" in caplog.text  # AAAC-0
    assert "are not in" in caplog.text  # the ghost barcode


def test_tsv_guides_and_gzipped_csv_expression(tmp_path):
    plain = _write_table(tmp_path / "expr.csv", _expression(), CELLS, GENES)
    packed = tmp_path / "expr.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    guides = _write_table(tmp_path / "guides.tsv", _guide_matrix(), [*CELLS[1:], "ghost"], GUIDES, sep="\t")
    adata = read_guide_counts(packed, guides)
    np.testing.assert_array_equal(adata.obsm["guide_counts"].toarray(), _guide_matrix()[:5])
    np.testing.assert_array_equal(adata.X.toarray(), _expression()[1:])


def test_mtx_folder_with_guide_capture_features_needs_no_guides_file(tmp_path):
    genes = [(f"ENSG{i}", g, "Gene Expression") for i, g in enumerate(GENES)]
    guides = [(g, g, "CRISPR Guide Capture") for g in GUIDES]
    X = np.hstack([_expression(5), _guide_matrix()[:5]])
    folder = _write_mtx(tmp_path / "filtered_feature_bc_matrix", X, CELLS[1:], genes + guides)
    adata = read_guide_counts(folder, None)
    assert list(adata.var_names) == GENES and list(adata.var["gene_ids"]) == ["ENSG0", "ENSG1", "ENSG2"]
    np.testing.assert_array_equal(adata.X.toarray(), _expression(5))
    np.testing.assert_array_equal(adata.obsm["guide_counts"].toarray(), _guide_matrix()[:5])
    assert list(adata.uns["guide_names"]) == GUIDES


def test_mtx_expression_with_separate_guides(tmp_path):
    folder = _write_mtx(
        tmp_path / "mtx", _expression(), CELLS, [(f"ENSG{i}", g, "Gene Expression") for i, g in enumerate(GENES)]
    )
    adata = read_guide_counts(folder, _write_guides_h5ad(tmp_path / "guides.h5ad"))
    assert adata.n_obs == 5 and adata.obsm["guide_counts"].shape == (5, len(GUIDES))
    with pytest.raises(InputError, match=r"no guide counts given and no 'CRISPR Guide Capture' features"):
        read_guide_counts(folder, None)


def test_read_screen_registry_and_h5ad_round_trip(screen_files, tmp_path):
    expression, guides = screen_files
    before = {p: sha256sum(p) for p in screen_files}
    adata = read_screen(
        expression, format="guide_counts", guides=guides, guide_map={g: g.split("_")[0] for g in GUIDES}
    )
    assert list(adata.uns["guide_targets"]) == ["GATA1", "GATA1", "MYC", "NT"]
    back = read_h5ad(write_h5ad(adata, tmp_path / "ingested.h5ad"))
    np.testing.assert_array_equal(back.obsm["guide_counts"].toarray(), adata.obsm["guide_counts"].toarray())
    assert list(back.uns["guide_names"]) == GUIDES
    assert {p: sha256sum(p) for p in screen_files} == before
    with pytest.raises(InputError, match=r"option\(s\) \['guides'\] not understood by format 'h5ad'"):
        read_screen(guides, guides=guides)


def test_no_shared_barcode_names_both_files(tmp_path):
    expression = _write_table(tmp_path / "expr.csv", _expression(), [f"{c}-1" for c in CELLS], GENES)
    guides = _write_guides_h5ad(tmp_path / "guides.h5ad")
    with pytest.raises(
        InputError, match=r"guides\.h5ad: no cell barcode in common with .*expr\.csv \(e\.g\. 'AAAC-1' vs 'AAAC-0-1'\)"
    ):
        read_guide_counts(expression, guides)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", r"expr\.csv: .*invalid value 'abc'.*expected a gene UMI count in every column"),
        ("", r"expr\.csv: 1 empty or NA value\(s\) among the gene counts"),
        ("2.5", r"expr\.csv: counts holds 1 non-integer value\(s\)"),
        ("-1", r"expr\.csv: counts holds 1 negative value\(s\)"),
    ],
)
def test_bad_expression_values_are_named(tmp_path, cell, message):
    path = tmp_path / "expr.csv"
    path.write_text(f"barcode,{','.join(GENES)}\nA,1,2,3\nB,4,{cell},6\n")
    with pytest.raises(InputError, match=message):
        read_guide_counts(path, _write_guides_h5ad(tmp_path / "guides.h5ad"))


def test_bad_headers_and_layouts(tmp_path):
    guides = _write_guides_h5ad(tmp_path / "guides.h5ad")
    dup = tmp_path / "dup.csv"
    dup.write_text("barcode,GATA1,GATA1\nA,1,2\n")
    with pytest.raises(InputError, match=r"dup\.csv: header \(gene names\) has 1 duplicated name\(s\) \(GATA1\)"):
        read_guide_counts(dup, guides)
    with pytest.raises(InputError, match=r"x\.loom: unsupported expression layout"):
        (tmp_path / "x.loom").write_text("")
        read_guide_counts(tmp_path / "x.loom", guides)
    with pytest.raises(InputError, match=r"nope\.csv: file does not exist"):
        read_guide_counts(tmp_path / "nope.csv", guides)
    with pytest.raises(InputError, match=r"empty: no matrix\.mtx\[\.gz\]"):
        (tmp_path / "empty").mkdir()
        read_guide_counts(tmp_path / "empty", guides)


def test_guide_map_table(screen_files, tmp_path):
    expression, guides = screen_files
    table = tmp_path / "map.csv"
    table.write_text("guide,target,note\nGATA1_1,GATA1,x\nGATA1_2,GATA1,\nMYC_1,MYC,\nNT_1,non-targeting,\n")
    assert read_guide_map(table) == {"GATA1_1": "GATA1", "GATA1_2": "GATA1", "MYC_1": "MYC", "NT_1": "non-targeting"}
    assert list(read_guide_counts(expression, guides, guide_map=table).uns["guide_targets"])[-1] == "non-targeting"
    short = tmp_path / "short.tsv"
    short.write_text("guide\ttarget\nGATA1_1\tGATA1\n")
    with pytest.raises(
        InputError, match=r"short\.tsv: 3 guide\(s\) of .*guides\.h5ad have no target \(GATA1_2, MYC_1, NT_1\)"
    ):
        read_guide_counts(expression, guides, guide_map=short)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sgRNA,gene\nGATA1_1,GATA1\n")
    with pytest.raises(InputError, match=r"wrong\.csv: missing column\(s\) \['guide', 'target'\]"):
        read_guide_map(wrong)
    clash = tmp_path / "clash.csv"
    clash.write_text("guide,target\nG1,GATA1\nG1,MYC\n")
    with pytest.raises(InputError, match=r"clash\.csv: guide 'G1' has several targets"):
        read_guide_map(clash)


# ------------------------------------------------------------------ the naming rule


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("GATA1_1", "GATA1"),
        ("GATA1-2", "GATA1"),
        ("lib_GATA1_00002", "GATA1"),
        ("NKX2-1_3", "NKX2-1"),
        ("HLA-A_1", "HLA-A"),
        ("NT_12", CONTROL_TARGET),
        ("ntc-3", CONTROL_TARGET),
        ("Non-Targeting_0001", CONTROL_TARGET),
        ("safe_targeting_17", CONTROL_TARGET),
        ("CENTG1_1", "CENTG1"),  # 'NT' inside a word is not a control
        ("CROPseq_dCas9_DS_CPQ_+_97657557.23-P1P2", "CPQ"),
        ("CROPseq_dCas9_DS_CCNE2_-_95907017.23-P1P2", "CCNE2"),
        ("CROPseq_dCas9_DS_OXR1_+_107670106.23", "OXR1"),
        ("CROPseq_dCas9_DS_GATA1-A", "GATA1-enh"),
        ("CROPseq_dCas9_DS_HS2-D", "HS2-enh"),
        ("CROPseq_dCas9_DS_non-targeting_00029", CONTROL_TARGET),
    ],
)
def test_guide_target_rule(name, target):
    assert guide_target(name) == target


@needs_tapseq
def test_guide_target_on_the_real_tapseq_names():
    names = list(ad.read_h5ad(TAPSEQ_GUIDES, backed="r").var_names)
    targets = pd.Series([guide_target(n) for n in names], index=names)
    promoters = {"CCNE2", "CPQ", "DSCC1", "FAM83A", "LRRCC1", "OXR1", "PHF20L1", "RIPK2", "STK3", "UBR5"}
    elements = {"GATA1-enh", "HS2-enh", "MYC-enh", "ZFPM2-enh"}
    assert set(targets) == promoters | elements | {CONTROL_TARGET}
    assert (targets == CONTROL_TARGET).sum() == 30
    assert targets.value_counts().drop(CONTROL_TARGET).eq(4).all()  # four guides per promoter or element
    assert not targets.str.contains(r"[+,|;]").any()  # the strand '+' never leaks into a target


# ------------------------------------------------------------------ guide calling


def _calls_adata(matrix: np.ndarray, names: list[str], **uns) -> ad.AnnData:
    adata = ad.AnnData(X=sp.csr_matrix((matrix.shape[0], 1), dtype=np.float32))
    adata.obs_names = [f"cell{i}" for i in range(matrix.shape[0])]
    adata.obsm["guide_counts"] = sp.csr_matrix(matrix, dtype=np.float32)
    adata.uns["guide_names"] = np.asarray(names)
    adata.uns.update(uns)
    return adata


def test_threshold_calls_label_cells_and_fit_the_guides_schema(tmp_path):
    adata = _calls_adata(_guide_matrix()[:5], GUIDES)
    table = call_guides(adata, method="threshold", min_umis=5)
    assert list(adata.obs["n_guides"]) == [1, 1, 2, 1, 0]
    assert list(adata.obs["guide_calls"].astype(object).fillna("-")) == [
        "GATA1_1",
        "MYC_1",
        "GATA1_1|NT_1",
        "NT_1",
        "-",
    ]
    assert list(adata.obs["perturbation"].astype(object).fillna("-")) == ["GATA1", "MYC", "GATA1", CONTROL_TARGET, "-"]
    assert table.shape[0] == int((_guide_matrix()[:5] > 0).sum())
    assert table["called"].sum() == 5 and (table["threshold"] == 5).all() and (table["method"] == "threshold").all()
    back = read_table(write_table(table, tmp_path / "guides.parquet", "guides"), "guides")
    assert set(SCHEMAS["guides"]) <= set(back.columns)
    again = read_h5ad(write_h5ad(adata, tmp_path / "called.h5ad"))
    assert list(again.obs["n_guides"]) == [1, 1, 2, 1, 0] and list(again.uns["guide_calling"]["thresholds"]) == [5] * 4
    labels = label_interventions(adata, perturbation_key="perturbation", control_values=[CONTROL_TARGET])
    assert list(labels["intervention"]) == ["GATA1", "MYC", "GATA1", "control"]


def test_multiplexed_cells_join_targets_and_map_overrides_rule():
    matrix = np.array([[50, 0, 40, 0], [50, 45, 0, 0], [0, 0, 0, 0]])
    adata = _calls_adata(matrix, GUIDES, guide_targets=np.array(["GATA1", "GATA1", "MYC", "ctrl"]))
    call_guides(adata, method="threshold")
    assert list(adata.obs["perturbation"].astype(object).fillna("-")) == ["GATA1+MYC", "GATA1", "-"]
    call_guides(adata, method="threshold", guide_map={"GATA1_1": "A", "GATA1_2": "B", "MYC_1": "C", "NT_1": "D"})
    assert list(adata.obs["perturbation"].astype(object).fillna("-")) == ["A+C", "A+B", "-"]


def test_calling_errors():
    adata = _calls_adata(_guide_matrix()[:5], GUIDES)
    with pytest.raises(InputError, match=r"unknown method 'gmm'; expected one of \['mixture', 'threshold'\]"):
        call_guides(adata, method="gmm")
    with pytest.raises(InputError, match=r"obsm\['crispr'\] not found"):
        call_guides(adata, key="crispr")
    with pytest.raises(InputError, match=r"adata is a view"):
        call_guides(adata[:2])
    with pytest.raises(InputError, match=r"guide_map: 1 guide\(s\) have no target \(NT_1\)"):
        call_guides(adata, guide_map={"GATA1_1": "A", "GATA1_2": "B", "MYC_1": "C"})


#: (background Poisson rate, signal median UMIs, signal log-sd, signal fraction) of each simulated guide.
PLANTED = [(0.3, 40.0, 0.7, 0.4), (2.0, 60.0, 0.6, 0.3), (5.0, 100.0, 0.5, 0.5)]


def _planted_threshold(rate: float, median: float, sd: float, weight: float) -> int:
    """Bayes threshold of the simulated model, written out independently of the package's EM."""
    k = np.arange(1, 2000)
    background = (1 - weight) * stats.poisson.pmf(k, rate) / (1 - np.exp(-rate))
    upper = stats.norm.cdf((np.log(k + 0.5) - np.log(median)) / sd)
    lower = np.where(k > 1, stats.norm.cdf((np.log(k - 0.5) - np.log(median)) / sd), 0.0)
    return int(k[np.argmax(weight * (upper - lower) > background)])


def _simulate_guide(rng: np.random.Generator, n: int, rate: float, median: float, sd: float, weight: float):
    signal = rng.random(n) < weight
    background = rng.poisson(rate, size=4 * n)
    background = background[background > 0][:n]  # zero-truncated: the cells where the guide is seen
    umis = np.where(signal, np.maximum(1, np.round(np.exp(rng.normal(np.log(median), sd, n)))), background)
    return umis, signal


def test_mixture_recovers_planted_thresholds_and_falls_back_when_sparse(caplog):
    rng = np.random.default_rng(7)
    n_cells, n_seen = 6000, 2000
    matrix = np.zeros((n_cells, len(PLANTED) + 1))
    truth = np.zeros_like(matrix, dtype=bool)
    for j, params in enumerate(PLANTED):
        cells = rng.choice(n_cells, n_seen, replace=False)
        matrix[cells, j], truth[cells, j] = _simulate_guide(rng, n_seen, *params)
    matrix[:5, -1] = [50, 60, 1, 2, 70]  # a guide seen in 5 cells: too few to fit
    adata = _calls_adata(matrix, [f"G{j}_1" for j in range(len(PLANTED))] + ["RARE_1"])
    with caplog.at_level(logging.WARNING, logger="crl_pipe"):
        table = call_guides(adata, method="mixture", min_umis=1, min_cells=20)
    found = adata.uns["guide_calling"]["thresholds"]
    planted = [_planted_threshold(*params) for params in PLANTED]
    print("planted thresholds", planted, "recovered", list(found[:-1]))
    assert planted == sorted(planted) and planted[0] < planted[-1]  # three distinct regimes
    assert np.all(np.abs(found[:-1] - planted) <= 1)
    calls = matrix >= found
    accuracy = (calls[:, :-1] == truth[:, :-1])[matrix[:, :-1] > 0].mean()
    assert accuracy > 0.99
    assert found[-1] == 1 and not adata.uns["guide_calling"]["fitted"][-1]
    assert (
        "1 guide(s) detected in fewer than min_cells=20 cells called with the fixed threshold min_umis=1: RARE_1"
        in caplog.text
    )
    assert set(table.loc[table["guide"] == "RARE_1", "method"]) == {"threshold"}


# ------------------------------------------------------------------ the real TAP-seq screen


@pytest.fixture(scope="module")
def tapseq() -> ad.AnnData:
    if not TAPSEQ_GUIDES.exists():
        pytest.skip("shared TAP-seq data not available")
    before = {p: sha256sum(p) for p in (TAPSEQ_EXPRESSION, TAPSEQ_GUIDES)}
    adata = read_screen(TAPSEQ_EXPRESSION, format="guide_counts", guides=TAPSEQ_GUIDES)
    call_guides(adata, method="mixture")
    assert {p: sha256sum(p) for p in before} == before, "reading changed an input file"
    return adata


def test_real_tapseq_reads_and_calls_mostly_single_guides(tapseq):
    assert tapseq.shape == (21977, 72) and tapseq.obsm["guide_counts"].shape == (21977, 86)
    by_n = np.bincount(tapseq.obs["n_guides"]) / tapseq.n_obs
    print("fraction of cells with 0/1/2/3+ guides:", np.round([*by_n[:3], by_n[3:].sum()], 4))
    assert 0.80 <= by_n[1] <= 0.92  # low-MOI screen: measured 0.868
    assert by_n[0] < 0.05 and by_n[2:].sum() < 0.15
    thresholds = tapseq.uns["guide_calling"]["thresholds"]
    assert tapseq.uns["guide_calling"]["fitted"].all() and 3 <= thresholds.min() and thresholds.max() <= 10


def _target_shifts(adata: ad.AnnData, label: np.ndarray) -> pd.DataFrame:
    """Per targeted gene the panel measures, in single-guide cells vs controls
    (crl_pipe.tl.knockdown, as the report)."""
    single = adata[(adata.obs["n_guides"] == 1).to_numpy()].copy()
    single.obs["label"] = label[(adata.obs["n_guides"] == 1).to_numpy()]
    counts = single.X.toarray()
    single.X = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    labels = label_interventions(single, perturbation_key="label", control_values=[CONTROL_TARGET])
    table = knockdown(single, labels).rename(columns={"intervention": "target", "log_fc": "shift"})
    return table.assign(promoter=~table["target"].str.endswith("-enh")).set_index("target")


def test_real_tapseq_knockdown_biology(tapseq):
    """Cells with one targeting guide express its target less than non-targeting controls."""
    label = tapseq.obs["perturbation"].astype(object).to_numpy()
    shifts = _target_shifts(tapseq, label)
    print(shifts.round(3).to_string())
    lower = (shifts["shift"] < 0).mean()
    print(f"knocked down: {lower:.0%} of {len(shifts)} targeted genes measured by the panel")
    assert len(shifts) >= 12  # 10 promoters + the GATA1, MYC, ZFPM2 elements (HS2 is no gene)
    assert lower >= 0.8
    promoters = shifts.loc[shifts["promoter"], "shift"]
    assert promoters.median() < -0.5 and (promoters < -0.25).mean() >= 0.7  # promoter guides strongly
    # The test has teeth: with the labels shuffled among cells the knockdown disappears.
    single = (tapseq.obs["n_guides"] == 1).to_numpy()
    shuffled_label = label.copy()
    shuffled_label[single] = np.random.default_rng(0).permutation(label[single])
    shuffled = _target_shifts(tapseq, shuffled_label)
    shuffled_promoters = shuffled.loc[shuffled["promoter"], "shift"]
    print("shuffled labels: median promoter shift", round(shuffled_promoters.median(), 3))
    assert abs(shuffled_promoters.median()) < 0.1
