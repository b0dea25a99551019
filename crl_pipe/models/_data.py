"""CRLData: what every model trains on, aligned from the stage artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError, ModelError
from ..io._camera import get_frames


@dataclass
class CRLData:
    """Cells x features matrix with intervention labels and anchor programs, aligned by sample.

    Attributes
    ----------
    X
        Log-normalised expression (cells x features), float32: dense, or CSR when the dense matrix
        would take more than :data:`DENSE_LIMIT` bytes (models then work on it by row chunks).
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
    frames
        Camera -> frames (rows x size x size x 3 uint8 RGB) of robot logs with cameras
        (``obsm["frames.<camera>"]``, :mod:`crl_pipe.io._camera`); empty otherwise.
    """

    X: np.ndarray | sp.csr_matrix
    sample_ids: np.ndarray
    features: list[str]
    intervention: np.ndarray
    is_control: np.ndarray
    targets: dict[str, tuple[str, ...]]
    anchors: dict[str, list[str]] = field(default_factory=dict)
    counts: sp.csr_matrix | None = None
    obs: pd.DataFrame | None = None
    frames: dict[str, np.ndarray] = field(default_factory=dict)

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
            frames={camera: images[rows] for camera, images in self.frames.items()},
        )

    @classmethod
    def from_artifacts(
        cls,
        adata: ad.AnnData,
        interventions: pd.DataFrame,
        anchors: pd.DataFrame | None = None,
        *,
        dense_limit: int | None = None,
    ) -> CRLData:
        """Align a preprocessed AnnData with ``interventions.parquet`` and ``anchors.parquet`` tables.

        A sparse ``X`` is densified when that takes at most ``dense_limit`` bytes (default
        :data:`DENSE_LIMIT`) and kept CSR otherwise, so a million-cell screen is never densified.
        """
        labels = interventions.set_index("sample_id")
        keep = adata.obs_names.isin(labels.index)
        if not keep.any():
            raise InputError("interventions table: no sample_id matches a cell of the preprocessed data")
        if not keep.all():  # a view of every cell would copy every matrix
            adata = adata[keep]
        labels = labels.loc[adata.obs_names]
        X = _log_matrix(adata.X, DENSE_LIMIT if dense_limit is None else dense_limit)
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
            X=X,
            sample_ids=np.asarray(adata.obs_names, dtype=str),
            features=features,
            intervention=labels["intervention"].to_numpy(dtype=str),
            is_control=labels["is_control"].to_numpy(dtype=bool),
            targets=target_map,
            anchors=anchor_map,
            counts=None if counts is None else sp.csr_matrix(counts),
            obs=_frame_columns(adata.obs),
            frames=get_frames(adata),
        )


#: Largest dense ``X`` (bytes) :meth:`CRLData.from_artifacts` makes of a sparse one; larger stays CSR.
DENSE_LIMIT = 256 << 20
#: Rows per block when a model works through a sparse ``X`` (bounds the float64 temporaries).
ROW_CHUNK = 16384


def _log_matrix(X, dense_limit: int) -> np.ndarray | sp.csr_matrix:
    """float32 dense, or float32 CSR when the dense form would exceed ``dense_limit`` bytes."""
    if hasattr(X, "to_memory"):  # an on-disk (backed) matrix
        X = X.to_memory()
    if sp.issparse(X) and X.shape[0] * X.shape[1] * 4 > dense_limit:
        return sp.csr_matrix(X, dtype=np.float32)
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    return X.astype(np.float32, copy=False)


def column_stats(X: np.ndarray | sp.spmatrix, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) SD of ``X[rows]`` in float64, block by block for a sparse ``X``."""
    if not sp.issparse(X):
        sub = X if rows is None else X[rows]
        return sub.mean(axis=0, dtype=np.float64), sub.std(axis=0, dtype=np.float64)
    rows = None if rows is None else _positions(rows)
    n = X.shape[0] if rows is None else rows.size
    total, squares = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for start in range(0, n, ROW_CHUNK):
        block = X[start : start + ROW_CHUNK] if rows is None else X[rows[start : start + ROW_CHUNK]]
        data = block.data.astype(np.float64)
        total += np.bincount(block.indices, weights=data, minlength=X.shape[1])
        squares += np.bincount(block.indices, weights=data * data, minlength=X.shape[1])
    n = max(n, 1)
    mean = total / n
    return mean, np.sqrt(np.maximum(squares / n - mean**2, 0.0))


def matmul(X: np.ndarray | sp.spmatrix, W: np.ndarray) -> np.ndarray:
    """``X @ W`` (cells x k); a sparse ``X`` block by block, so that its values are never copied whole to float64."""
    if not sp.issparse(X):
        return X @ W
    return np.vstack([np.asarray(X[s : s + ROW_CHUNK] @ W) for s in range(0, X.shape[0], ROW_CHUNK)])


def crossprod(X: np.ndarray | sp.spmatrix, Z: np.ndarray) -> np.ndarray:
    """``X.T @ Z`` (features x k), block by block for a sparse ``X``."""
    if not sp.issparse(X):
        return X.T @ Z
    out = np.zeros((X.shape[1], Z.shape[1]))
    for s in range(0, X.shape[0], ROW_CHUNK):
        out += np.asarray(X[s : s + ROW_CHUNK].T @ Z[s : s + ROW_CHUNK])
    return out


def standardisation(X: np.ndarray | sp.spmatrix, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and SD of every row (SD 1 where constant), accumulated in float64, returned as float32."""
    if sp.issparse(X):
        mean, sd = column_stats(X)
        return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    total = np.zeros(X.shape[1])
    squares = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], chunk):
        block = np.asarray(X[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=0)
        squares += (block**2).sum(axis=0)
    mean = total / X.shape[0]
    sd = np.sqrt(np.maximum(squares / X.shape[0] - mean**2, 0.0))
    return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)


def align_features(data: CRLData, features: list[str], model: str) -> np.ndarray | sp.csr_matrix:
    """``data.X`` with the columns ``features`` (a fitted model's), in that order.

    Raises :class:`~crl_pipe.ModelError` naming ``model`` when a feature is missing from ``data``.
    """
    index = {f: i for i, f in enumerate(data.features)}
    missing = [f for f in features if f not in index]
    if missing:
        raise ModelError(f"model {model}: features missing from the data: {missing[:5]}")
    if features == data.features:
        return data.X  # selecting every column would copy a large sparse matrix
    return data.X[:, [index[f] for f in features]]


def dense_columns(X: np.ndarray | sp.spmatrix, cols: list[int]) -> np.ndarray:
    """The columns ``cols`` of ``X`` as a dense array (a few anchors of every cell)."""
    return X[:, cols].toarray() if sp.issparse(X) else X[:, cols]


#: ``obs`` columns that make rows a time series (robot logs); carried into :attr:`CRLData.obs`.
FRAME_COLUMNS = ("episode", "frame", "timestamp")


def frame_steps(x: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """Row i: ``x[i] - x[i - 1]`` within its segment (``[start, stop)`` row ranges), 0 on a segment's first row."""
    out = np.zeros_like(x, dtype=np.float64)
    for s, e in segments:
        out[s + 1 : e] = np.diff(x[s:e], axis=0)
    return out


def _frame_columns(obs: pd.DataFrame) -> pd.DataFrame | None:
    if not all(c in obs for c in FRAME_COLUMNS):
        return None
    return obs[list(FRAME_COLUMNS)].reset_index(drop=True).astype({"episode": str})


def _positions(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows
