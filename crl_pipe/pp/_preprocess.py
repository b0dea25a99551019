"""Normalisation, log transform and gene selection of a labelled screen."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError

log = logging.getLogger("crl_pipe")

_LABEL_COLUMNS = ["sample_id", "intervention", "targets", "is_control"]
_HVG_FLAVOR = "seurat"


def preprocess(
    adata: ad.AnnData,
    interventions: pd.DataFrame,
    *,
    keep_genes: Iterable[str] = (),
    n_top_genes: int = 2000,
    target_sum: float = 1e4,
) -> ad.AnnData:
    """Normalise, log-transform and select the genes the models see.

    Cells are those of ``interventions`` (in the order of ``adata``); cells without any count
    are dropped with a logged warning, since they cannot be normalised. Genes kept: the
    ``n_top_genes`` highly variable genes (scanpy ``flavor="seurat"`` on the log data), every
    perturbed gene (a target of some intervention) and every gene of ``keep_genes``, whether or
    not they vary.

    Parameters
    ----------
    adata
        Ingested screen, raw counts in ``X``. Not modified.
    interventions
        Table in the ``interventions`` schema (see :func:`label_interventions`).
    keep_genes
        Genes kept whatever their variability, e.g. the gene-set members used as anchors.
    n_top_genes
        Number of highly variable genes (capped at the number of genes that vary).
    target_sum
        Counts per cell after normalisation, before ``log1p``.

    Returns
    -------
    New AnnData: ``X`` = ``log1p`` of normalised counts (CSR float32), ``layers["counts"]`` = raw
    counts; ``obs`` gains ``intervention`` and ``is_control``; ``var`` gains ``highly_variable``,
    ``perturbed`` and ``in_gene_set`` (plus scanpy's ``means``, ``dispersions``,
    ``dispersions_norm``); the parameters and counts land in ``uns["crl_pipe_preprocess"]``.

    A screen larger than memory goes through :func:`preprocess_chunked` instead (file to file, in
    blocks of cells; the workflow picks it for inputs above 512 MiB), which writes the same artifact.
    """
    import scanpy as sc  # deferred: scanpy takes seconds to import

    _check_params(n_top_genes, target_sum)
    labels = _labels_by_cell(interventions)
    out = _select_cells(adata, labels)
    labels = labels.loc[out.obs_names]
    out.obs["intervention"] = pd.Categorical(labels["intervention"].astype(str).to_numpy())
    out.obs["is_control"] = labels["is_control"].astype(bool).to_numpy()
    out.layers["counts"] = out.X.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)

    hvg = _highly_variable(out, n_top_genes)
    keep_genes = set(keep_genes)
    targeted = {str(g) for targets in labels["targets"] for g in targets}
    var = hvg.assign(perturbed=out.var_names.isin(targeted), in_gene_set=out.var_names.isin(keep_genes))
    for column in var.columns:
        out.var[column] = var[column].to_numpy()
    selected = (var["highly_variable"] | var["perturbed"] | var["in_gene_set"]).to_numpy()
    out = out[:, selected].copy()
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    out.uns["crl_pipe_preprocess"] = {
        "target_sum": float(target_sum),
        "n_top_genes": int(n_top_genes),
        "flavor": _HVG_FLAVOR,
        "n_cells": int(out.n_obs),
        "n_highly_variable": int(var["highly_variable"].sum()),
        "n_perturbed": int(var["perturbed"].sum()),
        "n_in_gene_set": int(var["in_gene_set"].sum()),
        "n_keep_genes_missing": len(keep_genes - set(var.index)),
        "n_selected": int(selected.sum()),
    }
    log.info("preprocess: %d cells x %d selected genes (of %d)", out.n_obs, out.n_vars, len(selected))
    return out


def _check_params(n_top_genes: object, target_sum: object) -> None:
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1:
        raise InputError(f"n_top_genes={n_top_genes!r}: expected an integer >= 1")
    if isinstance(target_sum, bool) or not isinstance(target_sum, int | float) or not 0 < target_sum < np.inf:
        raise InputError(f"target_sum={target_sum!r}: expected a finite number > 0 (counts per cell after normalising)")


def _labels_by_cell(interventions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _LABEL_COLUMNS if c not in interventions.columns]
    if missing:
        raise InputError(f"interventions table: missing column(s) {missing}; expected {_LABEL_COLUMNS}")
    ids = interventions["sample_id"].astype(str)
    if ids.duplicated().any():
        first = ids[ids.duplicated()].iloc[0]
        raise InputError(f"interventions table: sample_id {first!r} appears twice; expected one row per cell")
    return interventions.set_index(ids)


def _select_cells(adata: ad.AnnData, labels: pd.DataFrame) -> ad.AnnData:
    """In-memory copy of the labelled cells with raw counts as CSR float32; empty cells left out."""
    if labels.empty:
        raise InputError("interventions table: no rows; expected one row per labelled cell")
    cells = adata.obs_names.isin(labels.index)
    if not cells.any():
        raise InputError(
            f"interventions table: no sample_id matches a cell of the screen (e.g. {labels.index[0]!r} vs "
            f"{adata.obs_names[0]!r}); expected the cell IDs of the screen"
        )
    view = adata[cells]
    out = view.to_memory() if adata.isbacked else view.copy()
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    empty = np.asarray(out.X.sum(axis=1)).ravel() <= 0
    if empty.all():
        raise InputError("screen: every labelled cell has zero counts; expected raw counts in X")
    if empty.any():
        log.warning("%d labelled cell(s) with zero counts dropped (nothing to normalise)", empty.sum())
        out = out[~empty].copy()
    return out


def _highly_variable(adata: ad.AnnData, n_top_genes: int) -> pd.DataFrame:
    """scanpy's seurat HVG flags for genes that vary; genes that do not are never highly variable.

    Constant genes have no dispersion, and scanpy warns when ``n_top_genes`` exceeds the genes
    with one, so they are left out of the call and ``n_top_genes`` is capped at the rest.
    """
    import scanpy as sc  # deferred: scanpy takes seconds to import

    X = adata.X
    mean = np.asarray(X.mean(axis=0, dtype=np.float64)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0, dtype=np.float64)).ravel()
    varies = (sq - mean**2) > 1e-12
    result = pd.DataFrame(
        {"highly_variable": False, "means": np.nan, "dispersions": np.nan, "dispersions_norm": np.nan},
        index=adata.var_names,
    )
    n_top = min(int(n_top_genes), int(varies.sum()))
    if n_top < 1:
        return result
    sub = ad.AnnData(X=X[:, varies], var=pd.DataFrame(index=adata.var_names[varies]))
    stats = sc.pp.highly_variable_genes(sub, flavor=_HVG_FLAVOR, n_top_genes=n_top, inplace=False)
    stats.index = sub.var_names
    numeric = ["means", "dispersions", "dispersions_norm"]
    result.loc[stats.index, numeric] = stats[numeric]
    result.loc[stats.index, "highly_variable"] = stats["highly_variable"].to_numpy(dtype=bool)
    return result.astype({"highly_variable": bool})
