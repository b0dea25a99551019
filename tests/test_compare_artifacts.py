"""benchmarks/compare_artifacts.py: the check that a change left the workflow's artifacts as they were."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crl_pipe.io import write_h5ad, write_table

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_artifacts", REPO / "benchmarks" / "compare_artifacts.py")
compare_artifacts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_artifacts)


def _folder(root: Path, *, seed_note: str, qc_value: float, extra: bool) -> Path:
    res = root / "results" / "ds"
    labels = pd.DataFrame({"program": ["P1", "P1"], "feature": ["A", "B"], "weight": [1.0, 1.0]})
    write_table(labels, res / "anchors.parquet", "anchors", {"step": "anchors", "note": seed_note})
    write_table(labels.assign(weight=[1.0, qc_value]), res / "other.parquet", "anchors")
    adata = ad.AnnData(X=sp.csr_matrix(np.eye(3, dtype=np.float32)), obs=pd.DataFrame(index=["a", "b", "c"]))
    write_h5ad(adata, root / "resources" / "screen.h5ad", {"step": "simulate", "note": seed_note})
    (res / "report.html").write_text("<p>same</p>\n")
    if extra:
        (res / "only_here.txt").write_text("x\n")
    return root


def test_lines_say_identical_equal_content_or_different(tmp_path, capsys):
    a = _folder(tmp_path / "a", seed_note="one", qc_value=1.0, extra=True)
    b = _folder(tmp_path / "b", seed_note="two", qc_value=2.0, extra=False)
    status = compare_artifacts.main([str(a), str(b)])
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert status == 1
    assert lines["results/ds/report.html"] == "identical"
    assert lines["results/ds/anchors.parquet"].startswith("equal content (schema metadata differs: crl_pipe: ['note']")
    assert lines["results/ds/other.parquet"] == "DIFFERENT (values differ in column(s) ['weight'])"
    assert lines["resources/screen.h5ad"].startswith("equal content (provenance uns['crl_pipe'] differs: ['note']")
    assert lines["results/ds/only_here.txt"].startswith("DIFFERENT (only in")
    assert compare_artifacts.main([str(a), str(a)]) == 0
