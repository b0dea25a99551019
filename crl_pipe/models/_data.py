"""CRLData: what every model trains on, aligned from the stage artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError


@dataclass
class CRLData:
    """Cells x features matrix with intervention labels and anchor programs, aligned by sample.

    Attributes
    ----------
    X
        Log-normalised expression (cells x features), float32.
    sample_ids
        Cell identifiers, in the row order of ``X``.
    features
        Feature (gene or channel) names, in the column order of ``X``.
    intervention
        Intervention label of each cell (the control label for controls).
    is_control
        Whether each cell is an observational (control) sample.
    targets
        Intervention label -> targeted genes/variables.
    anchors
        Program -> anchor features present in ``features`` (insertion order = latent order).
    counts
        Raw counts of the same cells and features, when available (count likelihoods).
    obs
        Per-row metadata in the row order of ``X``, when available: for robot logs the columns
        ``episode``, ``frame`` and ``timestamp`` that time-series models (``temporal``) need.
    """

    X: np.ndarray
    sample_ids: np.ndarray
    features: list[str]
    intervention: np.ndarray
    is_control: np.ndarray
    targets: dict[str, tuple[str, ...]]
    anchors: dict[str, list[str]] = field(default_factory=dict)
    counts: sp.csr_matrix | None = None
    obs: pd.DataFrame | None = None

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def perturbations(self) -> list[str]:
        """Non-control intervention labels, sorted."""
        return sorted(set(self.intervention[~self.is_control]))

    def subset(self, rows: np.ndarray) -> CRLData:
        """The same data restricted to ``rows`` (indices or a boolean mask), e.g. a bootstrap resample."""
        return CRLData(
            X=self.X[rows],
            sample_ids=self.sample_ids[rows],
            features=self.features,
            intervention=self.intervention[rows],
            is_control=self.is_control[rows],
            targets=self.targets,
            anchors=self.anchors,
            counts=None if self.counts is None else self.counts[rows],
            obs=None if self.obs is None else self.obs.iloc[_positions(rows)].reset_index(drop=True),
        )

    @classmethod
    def from_artifacts(
        cls, adata: ad.AnnData, interventions: pd.DataFrame, anchors: pd.DataFrame | None = None
    ) -> CRLData:
        """Align a preprocessed AnnData with ``interventions.parquet`` and ``anchors.parquet`` tables."""
        labels = interventions.set_index("sample_id")
        keep = adata.obs_names.isin(labels.index)
        if not keep.any():
            raise InputError("interventions table: no sample_id matches a cell of the preprocessed data")
        adata = adata[keep]
        labels = labels.loc[adata.obs_names]
        X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        counts = adata.layers["counts"] if "counts" in adata.layers else None
        features = [str(f) for f in adata.var_names]
        present = set(features)
        anchor_map: dict[str, list[str]] = {}
        if anchors is not None:
            for program, group in anchors.groupby("program", sort=False):
                genes = [g for g in group["feature"] if g in present]
                if genes:
                    anchor_map[str(program)] = genes
        target_map = {
            str(lab): tuple(t) for lab, t in labels.groupby("intervention", sort=True)["targets"].first().items()
        }
        return cls(
            X=X.astype(np.float32, copy=False),
            sample_ids=np.asarray(adata.obs_names, dtype=str),
            features=features,
            intervention=labels["intervention"].to_numpy(dtype=str),
            is_control=labels["is_control"].to_numpy(dtype=bool),
            targets=target_map,
            anchors=anchor_map,
            counts=None if counts is None else sp.csr_matrix(counts),
            obs=_frame_columns(adata.obs),
        )


#: ``obs`` columns that make rows a time series (robot logs); carried into :attr:`CRLData.obs`.
FRAME_COLUMNS = ("episode", "frame", "timestamp")


def _frame_columns(obs: pd.DataFrame) -> pd.DataFrame | None:
    if not all(c in obs for c in FRAME_COLUMNS):
        return None
    return obs[list(FRAME_COLUMNS)].reset_index(drop=True).astype({"episode": str})


def _positions(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows
