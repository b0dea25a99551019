"""Shared test data: simulated screens turned into CRLData without the workflow."""

from __future__ import annotations

import functools

import numpy as np
import scanpy as sc

from crl_pipe.models import CRLData
from crl_pipe.simulate import CONTROL_LABEL, simulate_screen


@functools.lru_cache(maxsize=8)
def screen_and_data(**params):
    """A simulated screen and its log-normalised CRLData (cached: tests must not mutate them)."""
    screen = simulate_screen(**params)
    adata = screen.adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    targets = {lab: tuple(lab.split("+")) for lab in set(labels) if lab != CONTROL_LABEL}
    data = CRLData(
        X=adata.X.toarray().astype(np.float32),
        sample_ids=np.asarray(adata.obs_names, dtype=str),
        features=list(adata.var_names),
        intervention=labels,
        is_control=labels == CONTROL_LABEL,
        targets=targets,
        anchors=dict(screen.gene_sets),
    )
    return screen, data
