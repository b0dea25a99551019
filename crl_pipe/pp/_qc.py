"""Per-cell quality-control metrics (the ``qc.parquet`` table)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def qc_metrics(adata: ad.AnnData) -> pd.DataFrame:
    """Library size and detected genes of every cell, from the raw counts in ``X``.

    Computed with sparse row sums (no densifying), so it scales to millions of cells.

    Returns
    -------
    DataFrame in the ``qc`` schema: ``sample_id``, ``total_counts`` (UMIs per cell, summed in
    float64) and ``n_genes`` (genes with a count > 0), in the cell order of ``adata``.
    """
    X = adata.X
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        total = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        # Count positive entries, not stored ones: a matrix may store explicit zeros.
        positive = np.concatenate([[0], np.cumsum(X.data > 0)])
        n_genes = positive[X.indptr[1:]] - positive[X.indptr[:-1]]
    else:
        X = np.asarray(X)
        total = X.sum(axis=1, dtype=np.float64)
        n_genes = (X > 0).sum(axis=1)
    return pd.DataFrame(
        {
            "sample_id": np.asarray(adata.obs_names, dtype=str),
            "total_counts": total,
            "n_genes": n_genes.astype(np.int64),
        }
    )
