"""Guide calls made elsewhere (Cell Ranger's protospacer calls) -> the outputs of :func:`call_guides`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from ._guides import _cell_calls, _guide_counts, _log_summary, _long_table, _targets

log = logging.getLogger("crl_pipe")

METHOD = "cellranger"


def import_guide_calls(
    adata: ad.AnnData,
    *,
    calls_key: str = "feature_call",
    thresholds_key: str = "cellranger_thresholds",
    guide_map: Mapping[str, str] | None = None,
    key: str = "guide_counts",
) -> pd.DataFrame:
    """Take the guide calls of another tool (by default Cell Ranger's) as the calls of each cell.

    The same outputs as :func:`crl_pipe.pp.call_guides`, so everything downstream (labels,
    ``guides.parquet``, the report) treats both alike.

    Parameters
    ----------
    adata
        Screen with guide UMI counts in ``obsm[key]``, guide names in ``uns["guide_names"]`` and
        the calls in ``obs[calls_key]``: called guide names joined by ``|`` (Cell Ranger's
        ``feature_call``), NaN or empty for cells without a call, as
        :func:`crl_pipe.io.read_10x` returns it. Not a view.
    calls_key
        ``obs`` column of the calls.
    thresholds_key
        ``uns`` key of the per-guide UMI thresholds the tool used (NaN where unknown). A guide
        without one gets the fewest UMIs among the cells it was called in (``inf``: never called).
    guide_map
        Target of each guide, as for :func:`call_guides` (default ``uns["guide_targets"]``, else
        the naming rule).
    key
        ``obsm`` key of the guide counts.

    Returns
    -------
    The long table of :func:`call_guides` (``sample_id``, ``guide``, ``umis``, ``called``,
    ``threshold``, ``target``, ``method="cellranger"``), one row per detected (cell, guide) pair;
    ``obs`` gains ``guide_calls``, ``n_guides`` and ``perturbation``; ``uns["guide_calling"]``
    records the method and thresholds.
    """
    counts, names = _guide_counts(adata, key)
    if calls_key not in adata.obs:
        raise InputError(
            f"guide calls: obs[{calls_key!r}] not found; expected the called guides of each cell there "
            f"(Cell Ranger's crispr_analysis/protospacer_calls_per_cell.csv; obs columns: {list(adata.obs.columns)})"
        )
    targets = _targets(names, guide_map if guide_map is not None else adata.uns.get("guide_targets"))
    called = _called_matrix(adata.obs[calls_key], names)
    silent = called.nnz - called.multiply(counts.tocsr() > 0).nnz
    if silent:
        log.warning("guide calls: %d call(s) of obs[%r] have no UMI in obsm[%r]; left out", silent, calls_key, key)
    thresholds = _thresholds(adata.uns.get(thresholds_key), counts, called, len(names))
    table = _long_table(counts, adata.obs_names, names, targets, thresholds, np.zeros(len(names), dtype=bool))
    table["called"] = np.asarray(called[table["cell"].to_numpy(), _column_of(table, names)]).ravel().astype(bool)
    table["method"] = METHOD
    calls = _cell_calls(table, adata.obs_names)
    for column in calls.columns:
        adata.obs[column] = calls[column]
    n_by_guides = np.bincount(calls["n_guides"].to_numpy(), minlength=3)
    adata.uns["guide_calling"] = {
        "method": METHOD,
        "key": key,
        "calls_key": calls_key,
        "guides": np.asarray(names, dtype=str),
        "targets": np.asarray(targets, dtype=str),
        "thresholds": thresholds,
        "fitted": np.zeros(len(names), dtype=bool),
        "n_cells_by_n_guides": n_by_guides,
    }
    _log_summary(METHOD, n_by_guides)
    return table.drop(columns="cell")


def _called_matrix(calls: pd.Series, names: np.ndarray) -> sp.csr_matrix:
    """cells x guides, 1 where the guide is called in the cell."""
    column = {str(n): j for j, n in enumerate(names)}
    codes, uniques = pd.factorize(calls.astype(object), use_na_sentinel=True)
    per_label = []
    for label in uniques:
        guides = [g.strip() for g in str(label).split("|") if g.strip()]
        unknown = [g for g in guides if g not in column]
        if unknown:
            raise InputError(
                f"guide calls: {unknown[0]!r} is called but not in uns['guide_names']; expected guide names"
            )
        per_label.append([column[g] for g in guides])
    # vectorised over cells: each labelled cell takes the guides of its label
    lengths = np.array([len(p) for p in per_label] or [0], dtype=np.int64)
    flat = np.array([j for p in per_label for j in p], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    cells = np.flatnonzero(codes >= 0)
    per_cell = lengths[codes[cells]]
    rows = np.repeat(cells, per_cell)
    within = np.arange(per_cell.sum()) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    cols = flat[np.repeat(starts[codes[cells]], per_cell) + within]
    data = np.ones(len(rows), dtype=np.int8)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(codes), len(names)))


def _thresholds(given, counts: sp.csc_matrix, called: sp.csr_matrix, n: int) -> np.ndarray:
    out = np.full(n, np.nan) if given is None else np.asarray(given, dtype=np.float64).copy()
    if out.shape != (n,):
        raise InputError(f"guide calls: {out.size} UMI threshold(s); expected one per guide ({n})")
    umis = counts.multiply(called.tocsc().astype(bool)).tocsc()
    for j in np.flatnonzero(np.isnan(out)):
        column = umis.data[umis.indptr[j] : umis.indptr[j + 1]]
        column = column[column > 0]
        out[j] = column.min() if column.size else np.inf
    return out


def _column_of(table: pd.DataFrame, names: np.ndarray) -> np.ndarray:
    return pd.Index(np.asarray(names, dtype=str)).get_indexer(table["guide"].to_numpy())
