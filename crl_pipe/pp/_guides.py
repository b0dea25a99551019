"""Guide calling: guide UMI counts -> called guides and a perturbation label per cell."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import brentq
from scipy.special import gammaln

from .._constants import CONTROL_TARGET
from .._errors import InputError
from ._perturbation import CONTROL_TOKENS

log = logging.getLogger("crl_pipe")

METHODS = ("mixture", "threshold")

_CONTROL_NAME = re.compile(r"(?:non|safe)[-_ ]?target", re.IGNORECASE)
_CONTROL_WORDS = frozenset({"nt", "ntc"})
_WORD_SPLIT = re.compile(r"[_\-.\s]+")
_PROMOTER = re.compile(r"(?:^|_)([^_]+)_[+-]_\d")  # ..._GENE_+_97657557... : strand and TSS coordinate
_ELEMENT = re.compile(r"^(.+)-[A-Z]$")  # GATA1-A: lettered guides tiling a regulatory element
_NUMBERED = re.compile(r"^(.+?)[-.]\d+$")  # GATA1-2, GATA1.2
_MAX_SHOWN = 10
_LOG_2PI = float(np.log(2 * np.pi))


def guide_target(name: str) -> str:
    """Target of a guide, from its name.

    The rule, first match wins:

    1. **Controls**: ``non-targeting`` or ``safe-targeting`` anywhere in the name (any case,
       ``-``/``_``/no separator), or a whole word ``NT`` or ``NTC`` (words split on ``_ - .``),
       give ``"non-targeting"``.
    2. **Promoter guides named by strand and coordinate** (CROP-seq/TAP-seq, Replogle):
       the word before ``_+_<digits>`` or ``_-_<digits>`` is the gene, so
       ``CROPseq_dCas9_DS_CPQ_+_97657557.23-P1P2`` gives ``CPQ``. The ``+`` there is the DNA
       strand, never a separator between genes.
    3. Otherwise the last ``_``-word that is not a bare guide number: ``GATA1_1`` and
       ``lib_GATA1_00002`` give ``GATA1``. If no ``_<number>`` was dropped, a guide number
       glued with ``-`` or ``.`` is dropped instead (``GATA1-2``, ``GATA1.2`` give ``GATA1``), and
       a single capital letter after ``-`` marks lettered guides tiling a regulatory element,
       named after the gene or site it controls: ``CROPseq_dCas9_DS_GATA1-A`` gives
       ``GATA1-enh``, ``..._HS2-C`` gives ``HS2-enh`` (Schraivogel et al. 2020 label their
       enhancer guides this way; promoter guides carry coordinates).

    Names the rule reads wrongly (a gene such as ``HLA-A`` or ``NKX2-1`` with no other guide
    number) need a guide map (:func:`crl_pipe.io.read_guide_map`).

    Parameters
    ----------
    name
        The guide (protospacer) name as it appears in the guide count matrix.

    Returns
    -------
    The target: a gene symbol, ``"<element>-enh"``, or ``"non-targeting"``.
    """
    name = str(name).strip()
    words = {w.casefold() for w in _WORD_SPLIT.split(name)}
    if _CONTROL_NAME.search(name) or words & _CONTROL_WORDS:
        return CONTROL_TARGET
    promoter = _PROMOTER.search(name)
    if promoter:
        return promoter.group(1)
    parts = [p for p in name.split("_") if p]
    numbered = bool(parts) and parts[-1].isdigit()
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    last = parts[-1] if parts else name
    if numbered:
        return last
    element = _ELEMENT.match(last)
    if element:
        return f"{element.group(1)}-enh"
    numbered_glued = _NUMBERED.match(last)
    return numbered_glued.group(1) if numbered_glued else last


def call_guides(
    adata: ad.AnnData,
    *,
    method: str = "mixture",
    min_umis: int = 3,
    min_cells: int = 20,
    guide_map: Mapping[str, str] | None = None,
    key: str = "guide_counts",
) -> pd.DataFrame:
    """Call the guides each cell carries and label its perturbation.

    Each guide gets a UMI threshold; a cell carries the guide when its UMI count reaches it.

    - ``method="threshold"``: the fixed threshold ``min_umis`` for every guide.
    - ``method="mixture"``: per guide, a two-component mixture fitted by EM to the UMI counts
      of the cells where the guide is detected (count >= 1), in the spirit of the
      Poisson-Gaussian model of Replogle et al. 2022 / crispat: background (ambient) counts are
      zero-truncated Poisson, true guide expression is Gaussian on the log of the UMI count
      (log-normal counts). The threshold is the smallest count whose posterior probability of
      the signal component exceeds 0.5, but never below ``min_umis``. Guides detected in
      fewer than ``min_cells`` cells, or whose fit puts the signal below the background, fall
      back to ``min_umis`` (said in the log).

    Cells with several called guides are multiplexed perturbations (their targets joined by
    ``+``); cells with none have no perturbation label and are left out downstream.

    Parameters
    ----------
    adata
        Screen with guide UMI counts in ``obsm[key]`` (cells x guides) and the guide names in
        ``uns["guide_names"]``, as :func:`crl_pipe.io.read_guide_counts` returns it. Not a view.
    method
        ``"mixture"`` or ``"threshold"``.
    min_umis
        Fewest UMIs a call rests on: the threshold of ``method="threshold"``, the floor of the
        mixture thresholds and the threshold of guides the mixture cannot fit.
    min_cells
        Fewest cells with the guide detected for the mixture to be fitted.
    guide_map
        Target of each guide; by default ``uns["guide_targets"]`` when present, else
        :func:`guide_target` of each name. Control targets (``non-targeting``, ``NT``, ``control``
        ...) become ``"non-targeting"``.
    key
        ``obsm`` key of the guide counts.

    Returns
    -------
    Long table with one row per detected (cell, guide) pair: ``sample_id``, ``guide``, ``umis``
    (float), ``called`` (bool), ``threshold`` (UMIs, ``inf`` when the mixture calls nothing),
    ``target`` and ``method`` (``"mixture"`` or ``"threshold"``: how that guide's threshold was set).
    ``adata.obs`` gains ``guide_calls`` (called guides joined by ``|``), ``n_guides`` (int) and
    ``perturbation`` (targets of the called guides, sorted, joined by ``+``; ``"non-targeting"``
    when only control guides are called; NaN when none is); the parameters, per-guide
    thresholds and the number of cells per number of guides land in ``uns["guide_calling"]``.
    """
    counts, names = _guide_counts(adata, key)
    if method not in METHODS:
        raise InputError(f"guide calling: unknown method {method!r}; expected one of {list(METHODS)}")
    if min_umis < 1:
        raise InputError(f"guide calling: min_umis={min_umis}; expected at least 1 UMI")
    targets = _targets(names, guide_map if guide_map is not None else adata.uns.get("guide_targets"))
    thresholds, fitted = _thresholds(counts, names, method=method, min_umis=min_umis, min_cells=min_cells)
    table = _long_table(counts, adata.obs_names, names, targets, thresholds, fitted)
    calls = _cell_calls(table, adata.obs_names)
    for column in calls.columns:
        adata.obs[column] = calls[column]
    n_by_guides = np.bincount(calls["n_guides"].to_numpy(), minlength=3)
    adata.uns["guide_calling"] = {
        "method": method,
        "min_umis": int(min_umis),
        "min_cells": int(min_cells),
        "key": key,
        "guides": np.asarray(names, dtype=str),
        "targets": np.asarray(targets, dtype=str),
        "thresholds": thresholds,
        "fitted": fitted,
        "n_cells_by_n_guides": n_by_guides,
    }
    _log_summary(method, n_by_guides)
    return table.drop(columns="cell")


# ------------------------------------------------------------------ inputs


def _guide_counts(adata: ad.AnnData, key: str) -> tuple[sp.csc_matrix, np.ndarray]:
    if adata.is_view:
        raise InputError("guide calling: adata is a view; expected an AnnData of its own (pass adata.copy())")
    if key not in adata.obsm:
        raise InputError(
            f"guide calling: obsm[{key!r}] not found; expected the guide UMI counts there "
            f"(read the screen with format 'guide_counts'; obsm keys: {list(adata.obsm)})"
        )
    counts = sp.csc_matrix(adata.obsm[key], dtype=np.float64)
    names = np.asarray(adata.uns.get("guide_names", []), dtype=str)
    if names.shape != (counts.shape[1],):
        raise InputError(
            f"guide calling: uns['guide_names'] has {names.size} name(s); "
            f"expected one per column of obsm[{key!r}] ({counts.shape[1]})"
        )
    if counts.nnz and (counts.data.min() < 0 or not np.isfinite(counts.data).all()):
        raise InputError(f"guide calling: obsm[{key!r}] holds negative or non-finite values; expected UMI counts")
    return counts, names


def _targets(names: np.ndarray, guide_map: Mapping[str, str] | Iterable[str] | None) -> np.ndarray:
    if guide_map is None:
        targets = [guide_target(n) for n in names]
    elif isinstance(guide_map, Mapping):
        missing = [n for n in names if n not in guide_map]
        if missing:
            shown = ", ".join(missing[:_MAX_SHOWN]) + (" ..." if len(missing) > _MAX_SHOWN else "")
            raise InputError(f"guide_map: {len(missing)} guide(s) have no target ({shown}); expected one per guide")
        targets = [str(guide_map[n]).strip() for n in names]
    else:  # uns["guide_targets"], aligned with the names
        targets = [str(t).strip() for t in guide_map]
        if len(targets) != len(names):
            raise InputError(
                f"guide calling: uns['guide_targets'] has {len(targets)} entries; expected {len(names)}, one per guide"
            )
    return np.asarray([CONTROL_TARGET if t.casefold() in CONTROL_TOKENS else t for t in targets], dtype=object)


# ------------------------------------------------------------------ thresholds


def _thresholds(
    counts: sp.csc_matrix, names: np.ndarray, *, method: str, min_umis: int, min_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """UMI threshold of each guide, and whether the mixture set it (False: fixed ``min_umis``)."""
    thresholds = np.full(len(names), float(min_umis))
    fitted = np.zeros(len(names), dtype=bool)
    if method == "threshold":
        return thresholds, fitted
    too_few, failed, silent = [], [], []
    for j, name in enumerate(names):
        umis = counts.data[counts.indptr[j] : counts.indptr[j + 1]]
        umis = umis[umis > 0]
        if umis.size < min_cells:
            too_few.append(name)
            continue
        threshold = _mixture_threshold(umis)
        if threshold is None:
            failed.append(name)
            continue
        thresholds[j], fitted[j] = max(threshold, float(min_umis)), True
        if np.isinf(threshold):
            silent.append(name)
    _log_fallback(too_few, f"detected in fewer than min_cells={min_cells} cells", min_umis)
    _log_fallback(failed, "with no signal above the background in the mixture fit", min_umis)
    if silent:
        log.warning(
            "%d guide(s) with no count likelier signal than background: never called: %s",
            len(silent),
            ", ".join(silent[:_MAX_SHOWN]),
        )
    return thresholds, fitted


def _log_fallback(guides: list[str], why: str, min_umis: int) -> None:
    if guides:
        shown = ", ".join(guides[:_MAX_SHOWN]) + (
            f" and {len(guides) - _MAX_SHOWN} more" if len(guides) > _MAX_SHOWN else ""
        )
        log.warning("%d guide(s) %s called with the fixed threshold min_umis=%d: %s", len(guides), why, min_umis, shown)


@dataclass(frozen=True)
class _Mixture:
    """Zero-truncated Poisson background + log-normal signal over UMI counts >= 1."""

    weight: float  # fraction of detected cells in the signal component
    rate: float  # Poisson rate of the background (UMIs)
    mu: float  # mean of log(UMI) of the signal
    sigma: float  # standard deviation of log(UMI) of the signal

    def log_joint(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log P(background, k) and log P(signal, k) for counts ``k`` >= 1."""
        log_k = np.log(k)
        background = (
            np.log1p(-self.weight) + k * np.log(self.rate) - self.rate - gammaln(k + 1) - np.log(-np.expm1(-self.rate))
        )
        z = (log_k - self.mu) / self.sigma
        signal = np.log(self.weight) - log_k - np.log(self.sigma) - 0.5 * _LOG_2PI - 0.5 * z**2
        return background, signal

    def posterior(self, k: np.ndarray) -> np.ndarray:
        background, signal = self.log_joint(k)
        return np.exp(signal - np.logaddexp(background, signal))


def _mixture_threshold(umis: np.ndarray, *, max_iter: int = 500, tol: float = 1e-9) -> float | None:
    """UMI threshold of one guide from a Poisson / log-normal mixture fitted by EM.

    Parameters
    ----------
    umis
        UMI counts of the guide in the cells where it is detected (values >= 1).
    max_iter
        Most EM iterations.
    tol
        Relative change of the log-likelihood at which EM stops.

    Returns
    -------
    The smallest count whose posterior probability of the signal component exceeds 0.5
    (``inf`` when no observed count does), or ``None`` when the fit is degenerate: no
    background, or a signal no higher than the background.
    """
    values, weights = np.unique(np.asarray(umis, dtype=np.float64), return_counts=True)
    fit = _fit_mixture(values, weights.astype(np.float64), max_iter=max_iter, tol=tol)
    if fit is None:
        return None
    grid = np.arange(1.0, values.max() + 1.0)
    above = np.flatnonzero(fit.posterior(grid) > 0.5)
    return float(grid[above[0]]) if above.size else float("inf")


def _fit_mixture(k: np.ndarray, n: np.ndarray, *, max_iter: int, tol: float) -> _Mixture | None:
    """EM on the histogram (distinct counts ``k`` seen ``n`` times); ``None`` when degenerate."""
    log_k = np.log(k)
    q90 = k[np.searchsorted(np.cumsum(n), 0.9 * n.sum())]
    cut = 0.5 * np.log(q90)  # start: signal above halfway (in log) to the 90th centile
    resp = (log_k > cut).astype(np.float64)  # initial responsibilities of the signal
    previous = -np.inf
    fit = None
    for _ in range(max_iter):
        fit = _m_step(k, log_k, n, resp)
        if fit is None:
            return None
        background, signal = fit.log_joint(k)
        total = np.logaddexp(background, signal)
        resp = np.exp(signal - total)
        loglik = float(n @ total)
        if loglik - previous <= tol * abs(loglik):
            break
        previous = loglik
    if fit.mu <= np.log(max(fit.rate, 1.0)):
        return None  # the "signal" sits at or below the background: no bimodality to separate
    return fit


def _m_step(k: np.ndarray, log_k: np.ndarray, n: np.ndarray, resp: np.ndarray) -> _Mixture | None:
    n_signal = float(n @ resp)
    n_background = float(n.sum()) - n_signal
    if n_signal < 1.0 or n_background < 1.0:
        return None
    mu = float(n @ (resp * log_k)) / n_signal
    var = float(n @ (resp * (log_k - mu) ** 2)) / n_signal
    mean_background = float(n @ ((1.0 - resp) * k)) / n_background
    return _Mixture(
        weight=n_signal / (n_signal + n_background),
        rate=_truncated_poisson_rate(mean_background),
        mu=mu,
        sigma=max(np.sqrt(var), 0.05),
    )


def _truncated_poisson_rate(mean: float) -> float:
    """Rate whose zero-truncated Poisson has this mean (mean = rate / (1 - exp(-rate)) >= 1)."""
    excess = mean - 1.0
    if excess < 1e-6:
        return max(2.0 * excess, 1e-6)  # mean ~ 1 + rate / 2 for a small rate
    return brentq(lambda rate: rate / -np.expm1(-rate) - mean, 1e-9, mean)


# ------------------------------------------------------------------ outputs


def _long_table(
    counts: sp.csc_matrix,
    cells: pd.Index,
    names: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    fitted: np.ndarray,
) -> pd.DataFrame:
    """One row per detected (cell, guide) pair, in cell order then guide order."""
    coo = counts.tocsr().tocoo()
    keep = coo.data > 0
    cell, guide, umis = coo.row[keep], coo.col[keep], coo.data[keep]
    return pd.DataFrame(
        {
            "cell": cell,
            "sample_id": np.asarray(cells, dtype=str)[cell],
            "guide": names[guide],
            "umis": umis.astype(np.float64),
            "called": umis >= thresholds[guide],
            "threshold": thresholds[guide],
            "target": targets[guide],
            "method": np.where(fitted, "mixture", "threshold")[guide],
        }
    )


def _cell_calls(table: pd.DataFrame, cells: pd.Index) -> pd.DataFrame:
    """``guide_calls``, ``n_guides`` and ``perturbation`` of each cell (NaN where nothing is called)."""
    called = table[table["called"]]
    grouped = called.groupby("cell", sort=True)
    guide_calls = grouped["guide"].agg("|".join)
    perturbation = grouped["target"].agg(_join_targets)
    n_guides = np.bincount(called["cell"].to_numpy(), minlength=len(cells)).astype(np.int64)
    out = pd.DataFrame(index=cells)
    out["guide_calls"] = pd.Categorical(guide_calls.reindex(range(len(cells))).to_numpy())
    out["n_guides"] = n_guides
    out["perturbation"] = pd.Categorical(perturbation.reindex(range(len(cells))).to_numpy())
    return out


def _join_targets(targets: pd.Series) -> str:
    genes = sorted({t for t in targets if t != CONTROL_TARGET})
    return "+".join(genes) if genes else CONTROL_TARGET


def _log_summary(method: str, n_by_guides: np.ndarray) -> None:
    total = int(n_by_guides.sum())
    none, single, multiple = int(n_by_guides[0]), int(n_by_guides[1]), int(n_by_guides[2:].sum())
    log.info(
        "guide calling (%s): %d cells; %d with one guide, %d with several (multiplexed perturbations), "
        "%d with none (no perturbation label, left out)",
        method,
        total,
        single,
        multiple,
        none,
    )
