"""Knockdown check: each targeted gene's expression in the cells that target it vs control cells."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .._errors import InputError

#: Columns of the table :func:`knockdown` returns.
COLUMNS = [
    "intervention",
    "gene",
    "n_cells",
    "n_control",
    "mean_perturbed",
    "mean_control",
    "sem_perturbed",
    "sem_control",
    "log_fc",
    "remaining",
    "p_value",
]
_ELEMENT_SUFFIX = "-enh"  # a regulatory element named after the gene it controls (crl_pipe.pp.guide_target)
_CHUNK_ROWS = 50_000


def knockdown(adata: ad.AnnData, interventions: pd.DataFrame) -> pd.DataFrame:
    """Expression of every measured target gene in its single-target cells and in the control cells.

    Parameters
    ----------
    adata
        Log-normalised expression in ``X`` (``log1p`` of normalised counts, as the
        ``preprocessed.h5ad`` artifact holds it); cells are matched on ``obs_names``. A backed
        AnnData is read in row chunks, only the target genes' columns kept.
    interventions
        Table in the ``interventions`` schema. Interventions with one target are checked when
        the target is a gene of ``adata`` (an element ``GENE-enh`` is checked on ``GENE``).

    Returns
    -------
    One row per checked intervention, strongest knockdown first: ``intervention``, ``gene``,
    ``n_cells``, ``n_control``, ``mean_perturbed`` and ``mean_control`` (mean log-normalised
    expression) with their standard errors ``sem_*``, ``log_fc`` (``mean_perturbed -
    mean_control``, natural log), ``remaining`` (mean normalised expression of the perturbed
    cells as a fraction of the controls'; 0.2 = an 80% knockdown) and ``p_value`` (two-sided
    Mann-Whitney U test). Empty when no target is a measured gene.
    """
    missing = [c for c in ("sample_id", "intervention", "targets", "is_control") if c not in interventions.columns]
    if missing:
        raise InputError(f"knockdown: interventions table lacks column(s) {missing}")
    cells = pd.Index(np.asarray(adata.obs_names, dtype=str))
    labels = interventions.assign(row=cells.get_indexer(interventions["sample_id"].astype(str)))
    labels = labels[labels["row"] >= 0]
    control_rows = labels.loc[labels["is_control"].astype(bool), "row"].to_numpy()
    checked = _checked(labels, pd.Index(np.asarray(adata.var_names, dtype=str)))
    if checked.empty or control_rows.size == 0:
        return pd.DataFrame({c: [] for c in COLUMNS})
    genes = sorted(set(checked["gene"]))
    columns = _columns(adata, np.asarray(adata.var_names.get_indexer(genes)))
    rows = []
    for gene, by_gene in checked.groupby("gene", sort=False):
        values = columns[:, genes.index(gene)].toarray().ravel()  # one gene dense at a time
        for intervention, group in by_gene.groupby("intervention", sort=False):
            rows.append(_compare(intervention, gene, values[group["row"].to_numpy()], values[control_rows]))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("log_fc", kind="stable").reset_index(drop=True)


def _checked(labels: pd.DataFrame, genes: pd.Index) -> pd.DataFrame:
    """Single-target cells whose target (or the gene an element is named after) is measured."""
    single = labels[~labels["is_control"].astype(bool) & (labels["targets"].map(len) == 1)]
    target = single["targets"].map(lambda t: str(t[0]))
    gene = target.where(target.isin(genes), target.str.removesuffix(_ELEMENT_SUFFIX))
    keep = gene.isin(genes)
    return single.loc[keep, ["intervention", "row"]].assign(gene=gene[keep])


def _columns(adata: ad.AnnData, cols: np.ndarray) -> sp.csc_matrix:
    """Cells x ``cols`` of ``X`` (sparse, float64), read in row chunks so a backed file is never loaded whole."""
    blocks = []
    for start in range(0, adata.n_obs, _CHUNK_ROWS):
        block = adata.X[start : start + _CHUNK_ROWS]
        blocks.append(sp.csr_matrix(block[:, cols] if sp.issparse(block) else np.asarray(block)[:, cols]))
    return sp.vstack(blocks, format="csc", dtype=np.float64)


def _compare(intervention: str, gene: str, perturbed: np.ndarray, control: np.ndarray) -> list:
    mean_p, mean_c = perturbed.mean(), control.mean()
    linear_c = np.expm1(control).mean()
    remaining = np.expm1(perturbed).mean() / linear_c if linear_c > 0 else np.nan
    p_value = stats.mannwhitneyu(perturbed, control, alternative="two-sided").pvalue if perturbed.size else np.nan
    return [
        str(intervention),
        gene,
        int(perturbed.size),
        int(control.size),
        float(mean_p),
        float(mean_c),
        _sem(perturbed),
        _sem(control),
        float(mean_p - mean_c),
        float(remaining),
        float(p_value),
    ]


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else np.nan
