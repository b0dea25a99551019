"""Knockdown of targeted genes (crl_pipe.tl.knockdown) and the report's guide and knockdown section.

The check on the real Schraivogel TAP-seq screen (cells with one targeting guide express its target
less than non-targeting controls for >= 80% of the measured targets) is in tests/test_guides.py,
which computes it with the same function.
"""

from __future__ import annotations

import html
import re

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_report import make_artifacts, render

from crl_pipe._provenance import provenance
from crl_pipe.io import read_h5ad, write_table
from crl_pipe.report import SECTIONS
from crl_pipe.tl import knockdown

GENES = ["GATA1", "MYC", "TAL1"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labels(groups: dict[str, int]) -> pd.DataFrame:
    names = [name for name, n in groups.items() for _ in range(n)]
    targets = [[] if n == "control" else n.split("+") for n in names]
    return pd.DataFrame(
        {
            "sample_id": [f"cell{i}" for i in range(len(names))],
            "intervention": names,
            "targets": targets,
            "n_targets": [len(t) for t in targets],
            "is_control": [n == "control" for n in names],
        }
    )


def _screen(labels: pd.DataFrame, genes: list[str] = GENES, seed: int = 0) -> ad.AnnData:
    """Log-normalised expression: each gene ~ 20 normalised counts, a quarter of that where it is targeted."""
    rng = np.random.default_rng(seed)
    mean = np.full((len(labels), len(genes)), 20.0)
    for j, gene in enumerate(genes):
        hit = labels["targets"].map(lambda t, g=gene: t in ([g], [f"{g}-enh"])).to_numpy()
        mean[hit, j] = 5.0
    X = np.log1p(rng.poisson(mean)).astype(np.float32)
    return ad.AnnData(
        X=sp.csr_matrix(X), obs=pd.DataFrame(index=labels["sample_id"].to_numpy()), var=pd.DataFrame(index=genes)
    )


def test_knockdown_compares_each_measured_single_target_with_controls(tmp_path):
    labels = _labels({"control": 200, "GATA1": 60, "MYC-enh": 50, "NOTMEASURED": 40, "GATA1+MYC": 30})
    adata = _screen(labels)
    table = knockdown(adata, labels)
    print(table.round(3).to_string())
    assert list(table["intervention"]) == ["GATA1", "MYC-enh"]  # no double, no unmeasured target
    assert list(table["gene"]) == ["GATA1", "MYC"]  # an element is checked on the gene it is named after
    assert list(table["n_cells"]) == [60, 50] and list(table["n_control"]) == [200, 200]
    X = adata.X.toarray()
    control, gata1 = X[:200, 0], X[200:260, 0]
    row = table.iloc[0]
    assert row["mean_control"] == pytest.approx(control.mean()) and row["mean_perturbed"] == pytest.approx(gata1.mean())
    assert row["log_fc"] == pytest.approx(gata1.mean() - control.mean())
    assert row["remaining"] == pytest.approx(np.expm1(gata1).mean() / np.expm1(control).mean())
    assert 0.2 < row["remaining"] < 0.3  # planted: 5 of 20 normalised counts left
    assert (table["p_value"] < 1e-10).all()
    # a backed file, read in row chunks, gives the same table
    adata.write_h5ad(tmp_path / "pre.h5ad")
    backed = read_h5ad(tmp_path / "pre.h5ad", backed=True)
    pd.testing.assert_frame_equal(knockdown(backed, labels), table)
    backed.file.close()
    # nothing to check: an empty table with the same columns
    assert knockdown(adata, _labels({"control": 5, "X": 5})).empty


def _guides_table(labels: pd.DataFrame) -> pd.DataFrame:
    """guides.parquet of the report fixture: a called guide per target (NT_1 for controls), a background count."""
    rows = []
    for cell, targets in zip(labels["sample_id"], labels["targets"], strict=True):
        for target in list(targets) or ["non-targeting"]:
            rows.append((cell, f"{target}_1" if len(targets) else "NT_1", 40.0, True, 5.0, target, "mixture"))
        rows.append((cell, "NT_2", 1.0, False, 6.0, "non-targeting", "mixture"))
    return pd.DataFrame(rows, columns=["sample_id", "guide", "umis", "called", "threshold", "target", "method"])


def test_report_section_shows_calls_and_knockdown_only_when_there_are_some(tmp_path):
    paths = make_artifacts(tmp_path / "a", models={"linear": {"epochs": 1}}, with_truth=False)
    labels = pd.read_parquet(paths["interventions"])
    write_table(_guides_table(labels), tmp_path / "guides.parquet", "guides", provenance("ingest", {}))
    screen = _screen(labels.assign(targets=labels["targets"].map(list)), genes=["GATA1", "TP53", "OTHER"])
    screen.write_h5ad(tmp_path / "pre.h5ad")
    out = render(
        tmp_path / "report.html", "pilot", paths, guides=tmp_path / "guides.parquet", expression=tmp_path / "pre.h5ad"
    )
    page = out.read_text(encoding="utf-8")
    section = page.split(f". {html.escape(dict(SECTIONS)['guides'])}</h2>")[1].split("</section>")[0]
    assert "<b>93.3%</b>cells with exactly one guide" in section  # 70 of 75 cells: 5 doubles carry two
    assert len(re.findall(r'<img src="data:image/png;base64,', section)) == 3  # calls, UMIs, knockdown
    assert "2 of 2 measured target genes are lower in their perturbed cells than in the controls" in section
    assert re.search(r"<td>GATA1</td><td>GATA1</td>", section) and re.search(r"<td>TP53</td><td>TP53</td>", section)
    assert "<td>NT_1</td><td>non-targeting</td><td>mixture</td>" in section
    # without calls or measured targets the section says so
    write_table(
        _guides_table(labels).assign(called=False), tmp_path / "none.parquet", "guides", provenance("ingest", {})
    )
    page = render(tmp_path / "plain.html", "plain", paths, guides=tmp_path / "none.parquet").read_text()
    section = page.split(f". {html.escape(dict(SECTIONS)['guides'])}</h2>")[1].split("</section>")[0]
    assert "No guides were called for this dataset" in section and "cannot be checked here" in section
    assert "<img" not in section
