"""Preprocessing of a screen larger than memory, in blocks of cells: the artifact of :func:`preprocess`.

Normalisation and ``log1p`` act on each cell alone, so they run block by block with scanpy
itself; gene selection needs per-gene moments over all cells, which one pass accumulates (in
float64, as scanpy does) before a second pass writes the selected genes. Only the highly variable
gene statistics differ from the in-memory path, in the last bits of the summation order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from ..io._chunked import H5adRows, write_h5ad_chunks
from ._preprocess import _HVG_FLAVOR, _check_params, _labels_by_cell

log = logging.getLogger("crl_pipe")

#: scanpy's default number of mean bins of the seurat flavour.
_N_BINS = 20


def preprocess_chunked(
    ingested: str | os.PathLike,
    interventions: pd.DataFrame,
    out: str | os.PathLike,
    provenance: Mapping[str, Any] | None = None,
    *,
    keep_genes: Iterable[str] = (),
    n_top_genes: int = 2000,
    target_sum: float = 1e4,
    chunk_rows: int | None = None,
) -> None:
    """:func:`preprocess` of the h5ad file ``ingested`` into the h5ad file ``out``, one block of cells at a time.

    Pass 1 normalises each block and accumulates the per-gene moments that gene selection needs
    (of the log data, and of its ``expm1`` for scanpy's seurat flavour); pass 2 normalises again
    and appends the selected genes' log data (``X``) and raw counts (``layers["counts"]``).
    Memory: one block (``chunk_rows`` cells, by default about 128 MiB of counts) plus per-gene
    vectors. Same cells, genes, values and annotations as :func:`preprocess`.
    """
    _check_params(n_top_genes, target_sum)
    labels = _labels_by_cell(interventions)
    with H5adRows(ingested) as source:
        obs_names = source.obs.index.astype(str)
        cells = _labelled(obs_names, labels)
        moments, empty = _moments(source, cells, target_sum, chunk_rows)
        keep = cells & ~empty
        frame = _annotations(source, cells, keep, labels)
        hvg = _highly_variable_from(moments, n_top_genes, frame.var_names)
        keep_genes = set(keep_genes)
        targeted = {str(g) for targets in labels.loc[frame.obs_names, "targets"] for g in targets}
        var = hvg.assign(perturbed=frame.var_names.isin(targeted), in_gene_set=frame.var_names.isin(keep_genes))
        for column in var.columns:
            frame.var[column] = var[column].to_numpy()
        selected = (var["highly_variable"] | var["perturbed"] | var["in_gene_set"]).to_numpy()
        frame = frame[:, selected].copy()
        frame.uns["log1p"] = {"base": None}  # what sc.pp.log1p records
        frame.uns["crl_pipe_preprocess"] = {
            "target_sum": float(target_sum),
            "n_top_genes": int(n_top_genes),
            "flavor": _HVG_FLAVOR,
            "n_cells": int(frame.n_obs),
            "n_highly_variable": int(var["highly_variable"].sum()),
            "n_perturbed": int(var["perturbed"].sum()),
            "n_in_gene_set": int(var["in_gene_set"].sum()),
            "n_keep_genes_missing": len(keep_genes - set(var.index)),
            "n_selected": int(selected.sum()),
        }
        columns = np.flatnonzero(selected)
        max_nnz = int(moments["nnz"][columns].sum())
        with write_h5ad_chunks(out, frame.obs, frame.var, provenance, uns=frame.uns, max_nnz=max_nnz) as sink:
            for start, stop, block in source.chunks("X", chunk_rows):
                rows = keep[start:stop]
                if rows.any():
                    counts = sp.csr_matrix(block[rows], dtype=np.float32)
                    sink.append(_normalised_log(counts, target_sum)[:, columns], counts=counts[:, columns])
    log.info("preprocess: %d cells x %d selected genes (of %d), in blocks", frame.n_obs, frame.n_vars, len(selected))


def _labelled(obs_names: pd.Index, labels: pd.DataFrame) -> np.ndarray:
    """Cells of the screen that have a label; the errors of :func:`preprocess`."""
    if labels.empty:
        raise InputError("interventions table: no rows; expected one row per labelled cell")
    cells = np.asarray(obs_names.isin(labels.index))
    if not cells.any():
        raise InputError(
            f"interventions table: no sample_id matches a cell of the screen (e.g. {labels.index[0]!r} vs "
            f"{obs_names[0]!r}); expected the cell IDs of the screen"
        )
    return cells


def _normalised_log(counts: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """scanpy's ``normalize_total`` + ``log1p`` of some cells (both act on each cell alone)."""
    import scanpy as sc  # deferred: scanpy takes seconds to import

    block = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(block, target_sum=target_sum)
    sc.pp.log1p(block)
    return sp.csr_matrix(block.X, dtype=np.float32)


def _moments(
    source: H5adRows, cells: np.ndarray, target_sum: float, chunk_rows: int | None
) -> tuple[dict[str, Any], np.ndarray]:
    """Pass 1: per-gene sums over the non-empty labelled cells, and which cells have no count."""
    n_vars = source.var.shape[0]
    sums = {k: np.zeros(n_vars) for k in ("log", "log_sq", "exp", "exp_sq")}
    nnz = np.zeros(n_vars, dtype=np.int64)
    empty = np.zeros(source.n_obs, dtype=bool)
    for start, stop, block in source.chunks("X", chunk_rows):
        rows = np.flatnonzero(cells[start:stop])
        counts = sp.csr_matrix(block[rows], dtype=np.float32)
        is_empty = np.asarray(counts.sum(axis=1)).ravel() <= 0
        empty[start + rows[is_empty]] = True
        X = _normalised_log(counts[~is_empty], target_sum)
        expm1 = np.expm1(X.data)  # what scanpy's seurat flavour computes its moments on
        # float32 squares summed in float64: the arithmetic of scipy's and scanpy's column moments
        for key, values in (("log", X.data), ("log_sq", X.data * X.data), ("exp", expm1), ("exp_sq", expm1 * expm1)):
            sums[key] += np.bincount(X.indices, weights=values.astype(np.float64), minlength=n_vars)
        nnz += np.bincount(X.indices, minlength=n_vars)
    n = int((cells & ~empty).sum())
    if n == 0:
        raise InputError("screen: every labelled cell has zero counts; expected raw counts in X")
    if empty.any():
        log.warning("%d labelled cell(s) with zero counts dropped (nothing to normalise)", empty.sum())
    return {"n": n, "nnz": nnz, **sums}, empty


def _annotations(source: H5adRows, cells: np.ndarray, keep: np.ndarray, labels: pd.DataFrame) -> ad.AnnData:
    """obs/var (and uns) of the kept cells, subset as AnnData subsets them (unused categories dropped)."""
    frame = ad.AnnData(obs=source.obs, var=source.var, uns=dict(source.uns))
    frame.obs_names = frame.obs_names.astype(str)
    frame.var_names = frame.var_names.astype(str)
    frame = frame[cells].copy()
    if not keep[cells].all():
        frame = frame[keep[cells]].copy()
    cell_labels = labels.loc[frame.obs_names]
    frame.obs["intervention"] = pd.Categorical(cell_labels["intervention"].astype(str).to_numpy())
    frame.obs["is_control"] = cell_labels["is_control"].astype(bool).to_numpy()
    return frame


def _highly_variable_from(moments: Mapping[str, Any], n_top_genes: int, var_names: pd.Index) -> pd.DataFrame:
    """:func:`._preprocess._highly_variable` from accumulated moments instead of the matrix."""
    n = moments["n"]
    mean = moments["log"] / n
    varies = (moments["log_sq"] / n - mean**2) > 1e-12
    result = pd.DataFrame(
        {"highly_variable": False, "means": np.nan, "dispersions": np.nan, "dispersions_norm": np.nan},
        index=var_names,
    )
    n_top = min(int(n_top_genes), int(varies.sum()))
    if n_top < 1:
        return result
    exp_mean = moments["exp"][varies] / n
    exp_var = moments["exp_sq"][varies] / n - exp_mean**2
    if n != 1:
        exp_var *= n / (n - 1)  # scanpy's unbiased variance
    stats = seurat_dispersions(exp_mean, exp_var, n_top)
    stats.index = var_names[varies]
    numeric = ["means", "dispersions", "dispersions_norm"]
    result.loc[stats.index, numeric] = stats[numeric]
    result.loc[stats.index, "highly_variable"] = stats["highly_variable"].to_numpy(dtype=bool)
    return result.astype({"highly_variable": bool})


def seurat_dispersions(mean: np.ndarray, var: np.ndarray, n_top: int, n_bins: int = _N_BINS) -> pd.DataFrame:
    """scanpy's ``highly_variable_genes(flavor="seurat", n_top_genes=n_top)`` from each gene's mean and
    (unbiased) variance of the normalised counts: log dispersion, normalised within 20 mean bins."""
    mean = np.array(mean, dtype=np.float64)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": np.log(dispersion)})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # a bin with one gene: its normalised dispersion is set to 1
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - stats["avg"]) / stats["dev"]
    norm = df["dispersions_norm"].to_numpy()
    ranked = np.sort(norm[~np.isnan(norm)])[::-1]
    cutoff = ranked[min(n_top, ranked.size) - 1] if ranked.size else np.inf
    df["highly_variable"] = np.nan_to_num(norm, nan=-np.inf) >= cutoff
    return df.drop(columns="mean_bin")
