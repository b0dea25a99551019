"""Classical causal discovery on the observed variables (causal-learn's PC and GES), as baselines for the CRL models.

Both return a CPDAG: edges whose direction the data do not decide stay undirected. In the graph
table an undirected edge ``a - b`` is written as the two rows ``a -> b`` and ``b -> a`` with
``undirected = True``, so the evaluation scores it as two directed guesses (see
:func:`crl_pipe.tl.graph_metrics`): over a true edge it earns the recall of that edge, adds one
false positive to the precision and one to the SHD (the orientation left open); over a pair
that is not an edge of the truth it counts as two extra edges.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._errors import ConfigError, ModelError
from ..models import CRLData
from ._graph import EdgeCalls, call_edges
from ._resample import complementary_halves

log = logging.getLogger("crl_pipe")

#: Baseline name -> its default parameters (config ``baselines.<name>``).
BASELINES: dict[str, dict[str, Any]] = {
    "pc": {"alpha": 0.05, "samples": "control"},
    "ges": {"lambda_value": None, "samples": "control"},
}
#: Which rows a baseline fits: the control (observational) samples, i.i.d. as PC and GES assume, or all pooled.
SAMPLES = ("control", "all")
#: PC and GES grow fast with the number of variables; they are meant for observed-variable tables.
MAX_VARIABLES = 100


def fit_baseline(data: CRLData, method: str, *, samples: str = "control", **params: Any) -> pd.DataFrame:
    """Fit the baseline ``method`` (``"pc"`` or ``"ges"``) on ``data.X`` (samples x variables).

    Parameters
    ----------
    data
        The preprocessed variables with their intervention labels (:meth:`CRLData.from_artifacts`).
    method
        ``"pc"``: PC-stable with Fisher-z tests at level ``alpha``; ``"ges"``: GES with the linear
        Gaussian BIC score (``lambda_value``: its penalty, default ``log(n) / 2``).
    samples
        ``"control"``: the control samples only; ``"all"``: every sample pooled (interventions
        then violate the i.i.d. assumption; mean shifts can create spurious dependences).

    Returns
    -------
    Edge table ``source, target, weight, undirected``: ``weight`` is the least-squares coefficient
    of the source in the regression of the target on its parents and undirected neighbours
    (standardised variables); an undirected edge is one row per direction.
    """
    X = _rows(data, samples, method)
    names = list(data.features)
    if method == "pc":
        from causallearn.search.ConstraintBased.PC import pc  # deferred: causal-learn only for the PC/GES baselines

        alpha = float(params.get("alpha", 0.05))
        if not 0 < alpha < 1:
            raise ConfigError(f"baseline pc: alpha={alpha!r}; expected a test level between 0 and 1")
        graph = pc(X, alpha=alpha, indep_test="fisherz", stable=True, show_progress=False).G.graph
    elif method == "ges":
        from causallearn.search.ScoreBased.GES import ges  # deferred: causal-learn only for the PC/GES baselines

        graph = ges(X, score_func="local_score_BIC", lambda_value=params.get("lambda_value"))["G"].graph
    else:
        raise ConfigError(f"unknown baseline {method!r}; expected one of {sorted(BASELINES)}")
    return _edges(graph, X, names)


def baseline_graph(
    data: CRLData,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    n_refits: int = 20,
    seed: int = 0,
    calls: EdgeCalls | None = None,
) -> pd.DataFrame:
    """The baseline's graph on all of ``data``, each edge with the same error control as the models'.

    Refits run on ``n_refits`` complementary halves (samples within each intervention group), as
    :func:`crl_pipe.tl.recover_graph` does for the models, and each edge gets its stability,
    orientation, weight z, false-edge bound and ``confidence`` / ``reason`` (thresholds ``calls``).
    An undirected CPDAG edge is in the refits both ways, so its orientation stays undecided and it
    is never confident. Returns :data:`GRAPH_COLUMNS` plus ``undirected``, confident edges first.
    """
    params = dict(params or {})
    edges = fit_baseline(data, method, **params).assign(lag=pd.NA)
    rng = np.random.default_rng(seed)
    halves: list[np.ndarray] = []
    while len(halves) < n_refits:
        halves.extend(complementary_halves(data, rng))
    refits = []
    for r in tqdm(range(n_refits), desc=f"{method} refits", disable=not sys.stderr.isatty()):
        refits.append(fit_baseline(data.subset(halves[r]), method, **params).assign(lag=pd.NA))
    p = len(data.features)
    return call_edges(edges, refits, p * (p - 1), calls)


def _rows(data: CRLData, samples: str, method: str) -> np.ndarray:
    if samples not in SAMPLES:
        raise ConfigError(f"baseline {method}: samples={samples!r}; expected one of {list(SAMPLES)}")
    if len(data.features) > MAX_VARIABLES:
        raise ModelError(
            f"baseline {method}: {len(data.features)} variables; it runs on observed-variable tables "
            f"(at most {MAX_VARIABLES} variables), not on a gene expression matrix"
        )
    X = data.X[data.is_control] if samples == "control" else data.X
    if X.shape[0] <= len(data.features) + 2:
        raise ModelError(
            f"baseline {method}: {X.shape[0]} {samples} samples for {len(data.features)} variables; "
            "expected more samples than variables"
        )
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    flat = [data.features[j] for j in np.flatnonzero(sd <= 0)]
    if flat:
        raise ModelError(f"baseline {method}: variable(s) {flat[:10]} are constant in the {samples} samples")
    return (X - X.mean(axis=0)) / sd


def _edges(graph: np.ndarray, X: np.ndarray, names: list[str]) -> pd.DataFrame:
    """causal-learn's endpoint matrix -> edge rows (``graph[j, i] == 1 and graph[i, j] == -1``: i -> j)."""
    directed = (graph.T == 1) & (graph == -1)
    # tails at both ends: undirected; arrowheads at both ends (conflicting orientations): left open too
    undirected = ((graph == -1) & (graph.T == -1)) | ((graph == 1) & (graph.T == 1))
    parents = directed | undirected  # parents[i, j]: i is a parent or an undirected neighbour of j
    weights = np.zeros(graph.shape)
    for j in range(len(names)):
        pa = np.flatnonzero(parents[:, j])
        if pa.size:
            weights[pa, j] = np.linalg.lstsq(X[:, pa], X[:, j], rcond=None)[0]
    src, dst = np.nonzero(parents)
    return pd.DataFrame(
        {
            "source": [names[i] for i in src],
            "target": [names[j] for j in dst],
            "weight": weights[src, dst].astype(float),
            "undirected": undirected[src, dst].astype(bool),
        }
    )
