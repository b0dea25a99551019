"""A simulated screen as model input, without running the workflow (tests, benchmarks, notebooks)."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp

from ..models import CRLData
from ._screen import CONTROL_LABEL, SimulatedScreen


def screen_to_crl_data(screen: SimulatedScreen, *, target_sum: float = 1e4, with_counts: bool = True) -> CRLData:
    """Log-normalised :class:`CRLData` of a simulated screen, with raw counts and its anchor gene sets.

    ``with_counts=False`` leaves ``counts`` unset (Gaussian models need only the log data).
    Labels follow the simulator's convention (``A+B`` for doubles, ``non-targeting`` for controls).
    """
    adata = screen.adata.copy()
    counts = sp.csr_matrix(adata.X)
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    return CRLData(
        X=adata.X.toarray().astype(np.float32),
        sample_ids=np.asarray(adata.obs_names, dtype=str),
        features=list(adata.var_names),
        intervention=labels,
        is_control=labels == CONTROL_LABEL,
        targets={lab: tuple(lab.split("+")) for lab in set(labels) if lab != CONTROL_LABEL},
        anchors=dict(screen.gene_sets),
        counts=counts if with_counts else None,
    )
