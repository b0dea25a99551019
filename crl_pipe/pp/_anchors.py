"""Anchor features: the genes that pin each latent program (the ``anchors.parquet`` table).

An anchor feature depends on one latent program alone; with at least two anchors per program
the sparse decoder is identifiable up to permutation and scaling (Moran et al. 2022; Moran &
Aragam 2025). Gene sets give anchors from prior knowledge; :func:`data_driven_anchors` derives
them from the data when no gene sets are given. Where the latents are measured directly (the
variables of a table, the state channels of a robot log), each anchors itself
(:func:`identity_anchors`, :func:`robot_anchors`).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from ..io._camera import camera_names

log = logging.getLogger("crl_pipe")

ANCHOR_COLUMNS = ["program", "feature", "weight"]
DROPPED_COLUMNS = ["program", "n_in_set", "n_in_data", "reason"]
_N_EXAMPLES = 5
#: A data-driven anchor must load at least twice as much on its factor as on any other.
_DOMINANCE = 2.0
#: ...and explain at least 1% of its standardised variance there (|loading| >= 0.1), so that
#: genes unrelated to every factor cannot pass the dominance test on noise alone.
_MIN_LOADING = 0.1
#: Kaiser's rule: a factor explaining less standardised variance than one gene is noise, not a
#: shared program (extra factors, when n_programs exceeds the real ones, pick up noise genes).
_MIN_EXPLAINED = 1.0
#: Factor analysis runs on a seeded subsample of at most this many cells (dense memory bound).
_MAX_FA_CELLS = 20_000
_MIN_CONTROL_CELLS = 50


def build_anchors(
    adata: ad.AnnData,
    gene_sets: Mapping[str, Sequence[str]],
    *,
    min_anchors: int = 2,
    exclusive: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Anchor genes of each gene set that is present in the data.

    Parameters
    ----------
    adata
        Preprocessed data; anchors are drawn from ``adata.var_names``.
    gene_sets
        Program name -> genes (e.g. from :func:`crl_pipe.io.read_gmt`); programs keep this order.
    min_anchors
        Programs with fewer anchor genes in the data are dropped.
    exclusive
        Leave out genes that belong to more than one gene set, since an anchor must depend on a
        single program. Membership is counted over all given sets, kept or not.

    Returns
    -------
    anchors
        Long form ``program``, ``feature``, ``weight`` (1.0), genes in gene-set order.
    dropped
        ``program``, ``n_in_set``, ``n_in_data``, ``reason`` (a sentence) for each dropped program.
    """
    if not gene_sets:
        raise InputError("gene sets: none given; expected at least one gene set")
    if isinstance(min_anchors, bool) or not isinstance(min_anchors, int | np.integer) or min_anchors < 1:
        raise InputError(f"min_anchors={min_anchors!r}: expected an integer >= 1")
    present = set(map(str, adata.var_names))
    sets = {str(name): list(dict.fromkeys(map(str, genes))) for name, genes in gene_sets.items()}
    membership = Counter(g for genes in sets.values() for g in genes)
    rows, dropped = [], []
    for program, genes in sets.items():
        in_data = [g for g in genes if g in present]
        anchors = [g for g in in_data if not (exclusive and membership[g] > 1)]
        if len(anchors) >= min_anchors:
            rows.extend((program, g, 1.0) for g in anchors)
            continue
        shared = len(in_data) - len(anchors)
        note = f", {shared} of them shared with other gene sets" if shared else ""
        reason = f"{len(in_data)} of {len(genes)} genes in the data{note}; needs at least {min_anchors} anchors"
        dropped.append((program, len(genes), len(in_data), reason))
    if not rows:
        raise InputError(_nothing_kept_message(sets, adata.var_names, min_anchors, exclusive))
    return pd.DataFrame(rows, columns=ANCHOR_COLUMNS), pd.DataFrame(dropped, columns=DROPPED_COLUMNS)


def _nothing_kept_message(sets: Mapping[str, list[str]], var_names: pd.Index, min_anchors: int, exclusive: bool) -> str:
    set_genes = list(dict.fromkeys(g for genes in sets.values() for g in genes))
    data_genes = [str(g) for g in var_names]
    folded = {g.casefold() for g in data_genes}
    case_only = sum(g.casefold() in folded for g in set_genes) - len(set(set_genes) & set(data_genes))
    hint = ""
    if case_only:
        hint = f"; {case_only} gene-set genes match only when ignoring case (species or naming mismatch?)"
    rule = " (exclusive=True leaves out genes shared between sets)" if exclusive else ""
    return (
        f"gene sets: no gene set has >= {min_anchors} anchor genes in the data{rule}; "
        f"the data has {len(data_genes)} genes (e.g. {', '.join(data_genes[:_N_EXAMPLES])}), "
        f"the {len(sets)} gene sets name {len(set_genes)} genes (e.g. {', '.join(set_genes[:_N_EXAMPLES])}){hint}"
    )


def data_driven_anchors(
    adata: ad.AnnData,
    *,
    n_programs: int = 10,
    min_anchors: int = 2,
    n_anchors: int = 10,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Anchors from a varimax-rotated factor analysis of the data, when no gene sets are given.

    Factor analysis (scikit-learn, ``random_state=0``) runs on the standardised log data
    (``adata.X``) of the control cells when there are at least 50, else of all cells (a seeded
    subsample of at most 20,000). Factors are ordered by explained variance and named
    ``F1``..``Fk``. A gene anchors factor ``j`` when ``|loading_j| >= 0.1`` and
    ``|loading_j| > 2 * max_{i != j} |loading_i|``; each factor keeps its top ``n_anchors``.
    Factors that explain less standardised variance than a single gene (sum of squared
    loadings < 1, Kaiser's rule) are dropped, so a generous ``n_programs`` yields no noise programs.

    These anchors carry no prior-knowledge guarantee: they describe the correlation structure
    of the data, so a program named ``F3`` is whatever co-varies, not a known pathway.

    Parameters
    ----------
    adata
        Preprocessed data (log-normalised ``X``; ``obs["is_control"]`` when available).
    n_programs
        Number of factors (capped at the number of varying genes and of cells).
    min_anchors
        Factors with fewer anchors are dropped.
    n_anchors
        Most anchors kept per factor, by absolute loading.

    Returns
    -------
    anchors, dropped
        As :func:`build_anchors`; for a dropped factor ``n_in_set`` and ``n_in_data`` both count
        the genes that load mostly on it.
    """
    if n_programs < 1 or n_anchors < 1:
        raise InputError(f"n_programs={n_programs}, n_anchors={n_anchors}: expected both >= 1")
    Z, genes = _standardised_sample(adata)
    k = min(n_programs, Z.shape[1], Z.shape[0])
    if k < n_programs:
        log.warning("data-driven anchors: n_programs capped at %d (varying genes x cells: %d x %d)", k, *Z.shape[::-1])
    loadings = _varimax_loadings(Z, k)
    rows, dropped = [], []
    for j, program in enumerate(f"F{i + 1}" for i in range(k)):
        anchors, n_eligible, reason = _factor_anchors(loadings, j, n_anchors, min_anchors)
        if reason:
            dropped.append((program, n_eligible, n_eligible, reason))
        else:
            rows.extend((program, str(genes[i]), 1.0) for i in anchors)
    if not rows:
        raise InputError(
            f"data-driven anchors: none of {k} factors explains more variance than one gene with >= {min_anchors} "
            "genes loading mostly on it; expected co-varying genes in the data, or give gene sets"
        )
    return pd.DataFrame(rows, columns=ANCHOR_COLUMNS), pd.DataFrame(dropped, columns=DROPPED_COLUMNS)


def identity_anchors(adata: ad.AnnData) -> pd.DataFrame:
    """Anchors table in which each variable is its own program (weight 1).

    The causal variables of an observed-variable table are the measurements themselves, so each
    program is read straight from its one variable, as robot states are (:func:`robot_anchors`).
    """
    return _self_anchored(adata.var_names)


def robot_anchors(adata: ad.AnnData) -> pd.DataFrame:
    """Anchors table in which each state channel is its own program (weight 1).

    Robot latents are the measured state variables themselves, so each program is anchored by the
    one channel it is (the ``temporal`` model reads the latents straight from those channels). A log
    seen only through cameras (no state channel, frames in ``obsm``) gets an empty table: the
    ``camera`` model learns its latents from the frames.
    """
    if "kind" not in adata.var:
        raise InputError("var column 'kind' not found; expected robot channels of kind state/action/event/other")
    states = adata.var_names[adata.var["kind"] == "state"]
    if not len(states) and camera_names(adata):  # seen only through cameras: the latents anchor on no channel
        return pd.DataFrame({"program": pd.Series([], dtype=str), "feature": pd.Series([], dtype=str), "weight": []})
    if not len(states):
        raise InputError("no channel of kind 'state'; expected the robot's state variables (or camera frames)")
    return _self_anchored(states)


def _self_anchored(names: Sequence[str]) -> pd.DataFrame:
    """Each of ``names`` is a program anchored by itself alone (weight 1)."""
    names = [str(n) for n in names]
    return pd.DataFrame({"program": names, "feature": names, "weight": 1.0})


def _factor_anchors(loadings: np.ndarray, j: int, n_anchors: int, min_anchors: int) -> tuple[np.ndarray, int, str]:
    """Gene indices anchoring factor ``j``, how many genes qualified, and why the factor is dropped ("" if kept)."""
    mine = np.abs(loadings[j])
    others = np.delete(np.abs(loadings), j, axis=0).max(axis=0) if len(loadings) > 1 else np.zeros_like(mine)
    eligible = np.flatnonzero((mine >= _MIN_LOADING) & (mine > _DOMINANCE * others))
    top = eligible[np.argsort(-mine[eligible], kind="stable")][:n_anchors]
    explained = float((loadings[j] ** 2).sum())
    if explained < _MIN_EXPLAINED:
        return top, len(eligible), f"explains less variance than one gene (sum of squared loadings {explained:.2f} < 1)"
    if len(top) < min_anchors:
        reason = f"{len(eligible)} gene(s) load mostly on this factor; needs at least {min_anchors} anchors"
        return top, len(eligible), reason
    return top, len(eligible), ""


def _standardised_sample(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Dense z-scored log data of the cells factor analysis sees; constant genes left out."""
    rows = np.arange(adata.n_obs)
    if "is_control" in adata.obs.columns:
        controls = np.flatnonzero(adata.obs["is_control"].to_numpy(dtype=bool))
        if len(controls) >= _MIN_CONTROL_CELLS:
            rows = controls
    if len(rows) > _MAX_FA_CELLS:
        rows = np.sort(np.random.default_rng(0).choice(rows, _MAX_FA_CELLS, replace=False))
    X = adata.X[rows]
    X = X.toarray() if sp.issparse(X) else np.array(X)
    X = X.astype(np.float64)
    sd = X.std(axis=0)
    varies = sd > 1e-8
    if varies.sum() < 2:
        raise InputError(f"data-driven anchors: {int(varies.sum())} genes vary across cells; expected at least 2")
    Z = (X[:, varies] - X[:, varies].mean(axis=0)) / sd[varies]
    return Z, np.asarray(adata.var_names, dtype=str)[varies]


def _varimax_loadings(Z: np.ndarray, k: int) -> np.ndarray:
    """Varimax-rotated loadings (k x genes), factors sorted by explained variance, signs made positive."""
    from sklearn.decomposition import FactorAnalysis  # deferred: scikit-learn only for programs learned here
    from sklearn.exceptions import ConvergenceWarning  # deferred: as above

    with warnings.catch_warnings():
        # Non-convergence is reported through the crl_pipe log instead (warnings are errors in tests).
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        fa = FactorAnalysis(n_components=k, rotation="varimax", random_state=0).fit(Z)
    if fa.n_iter_ >= fa.max_iter:
        log.warning("data-driven anchors: factor analysis did not converge; anchors may be unstable")
    L = fa.components_
    L = L[np.argsort(-(L**2).sum(axis=1), kind="stable")]
    # Factor signs are arbitrary; orient each so that its largest loading is positive (stable output).
    signs = np.sign(L[np.arange(len(L)), np.abs(L).argmax(axis=1)])
    return L * np.where(signs == 0, 1, signs)[:, None]
