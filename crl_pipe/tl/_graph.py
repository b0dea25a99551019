"""The latent causal graph, each edge with its stability selection over half-sample refits.

Error control (issue 16) is complementary-pairs stability selection (Meinshausen & Bühlmann 2010;
Shah & Samworth 2013): the model is refit on ``n_refits`` halves of the data, drawn as disjoint
pairs (cells within intervention groups, or whole episodes). An edge's ``stability`` is the share
of refits that select it. Halves, not bootstrap resamples, because a chance correlation of the
full data reappears in most bootstrap resamples (they repeat its rows) but not on half the data,
where the model's own penalty or threshold is stricter; and because the bound below is proven for
halves. If the refits select on average ``q`` of ``n_possible`` edges, the expected number of
false edges among those with stability >= pi is at most ``q^2 / ((2 pi - 1) n_possible)``
(pi > 0.5): the ``false_edges_bound`` of each edge, at its own stability. The bound needs no
assumption on the model beyond that its selections are better than random; it is loose when the
graph is dense relative to the possible edges (few programs), which is why the confidence call
below does not rest on it alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..models import CRLData, CRLModel
from ._resample import complementary_halves

#: Columns of the graph artifact written by :func:`recover_graph`, in order.
GRAPH_COLUMNS = [
    "source",
    "target",
    "weight",
    "stability",
    "lag",
    "reverse_stability",
    "orientation",
    "weight_z",
    "false_edges_bound",
    "confidence",
    "reason",
]


@dataclass(frozen=True)
class EdgeCalls:
    """When an edge is called confident (the defaults of config ``graph``; docs in config/README.md).

    Attributes
    ----------
    min_stability
        Share of half-sample refits that must select the edge (below: "unstable").
    min_weight_z
        Full-data weight over its resampling standard error (below: "weak"): the SD of the refit
        weights (0 where a refit lacks the edge) divided by sqrt(2), since a half has twice the
        variance of the whole.
    min_orientation
        Share of the refits that have the pair at all that orient it this way (below: "orientation
        undecided"); only for edges whose direction time does not fix (no lag, or lag 0).
    """

    min_stability: float = 0.8
    min_weight_z: float = 2.0
    min_orientation: float = 0.8


def _edge_list(model: CRLModel) -> pd.DataFrame:
    """``source, target, weight, lag`` of the model's non-zero edges (lag null without a time axis)."""
    edges = model.get_edges()
    return edges.assign(lag=edges["lag"].astype("Int64")).reset_index(drop=True)


def _keys(edges: pd.DataFrame) -> list[tuple[str, str, object]]:
    """Identity of each edge over refits: the pair, and whether it is instantaneous (None: no time axis)."""
    kinds = [None if pd.isna(lag) else lag == 0 for lag in edges["lag"]]
    return list(zip(edges["source"].astype(str), edges["target"].astype(str), kinds, strict=True))


def _weights(edges: pd.DataFrame) -> dict[tuple[str, str, object], float]:
    """Weight of each edge key (a lagged pair found at two lags keeps its strongest)."""
    out: dict[tuple[str, str, object], float] = {}
    for key, w in zip(_keys(edges), edges["weight"].astype(float), strict=True):
        if abs(w) > abs(out.get(key, 0.0)):
            out[key] = w
    return out


def refit_halves(model: CRLModel, data: CRLData, n_refits: int, seed: int) -> list[pd.DataFrame]:
    """Edge lists of ``n_refits`` refits of ``model`` on complementary halves of ``data``.

    Refit ``r`` uses ``seed + r`` as its model seed and starts as :meth:`CRLModel.refit` says
    (from scratch, or warm from ``model`` for the deep models).
    """
    rng = np.random.default_rng(seed)
    halves: list[np.ndarray] = []
    while len(halves) < n_refits:
        halves.extend(complementary_halves(data, rng))
    out = []
    for r in tqdm(range(n_refits), desc="half-sample refits", disable=not sys.stderr.isatty()):
        out.append(_edge_list(model.refit(data.subset(halves[r]), seed=seed + r)))
    return out


def recover_graph(
    model: CRLModel,
    data: CRLData,
    *,
    n_refits: int = 20,
    seed: int = 0,
    calls: EdgeCalls | None = None,
) -> pd.DataFrame:
    """Edges of ``model``'s latent graph, each with its stability selection and a confidence call.

    Parameters
    ----------
    model
        A fitted model; its graph on the full data gives the edges and weights.
    data
        The data it was fit on; refits use complementary halves of it (:func:`refit_halves`).
    n_refits
        Number of half-sample refits (0: the resampling columns are left as NaN and every edge is
        tentative, reason "not resampled").
    seed
        Seed of the halves; refit ``r`` also uses ``seed + r`` as its model seed.
    calls
        Thresholds of the confidence call (default :class:`EdgeCalls`).

    Returns
    -------
    Table of :data:`GRAPH_COLUMNS` (the graph artifact), confident edges first, then by stability
    and weight: ``stability`` (share of refits with the edge, same direction and kind),
    ``reverse_stability`` (share with the reverse edge of the same kind), ``orientation`` (share of
    the refits that have the pair either way that have it this way), ``weight_z`` (weight over its
    resampling SE), ``false_edges_bound`` (stability selection's bound on the expected number of
    false edges with at least this stability; NaN at stability <= 0.5), ``confidence``
    (``confident`` or ``tentative``) and ``reason`` (why tentative: weak, unstable, orientation
    undecided; empty when confident). ``lag`` (frames) comes from models with a time axis: 0 for
    an instantaneous edge, >= 1 for a lagged one (its strongest lag), and a pair with both is two
    rows; a refit keeps such an edge if it has the pair with the same kind (instantaneous or
    lagged, at any lag). Other models give one row per pair, ``lag`` null.
    """
    edges = _edge_list(model)
    refits = refit_halves(model, data, n_refits, seed) if n_refits else []
    return call_edges(edges, refits, _n_possible(model) if refits else 1, calls)


def call_edges(
    edges: pd.DataFrame, refits: Sequence[pd.DataFrame], n_possible: int, calls: EdgeCalls | None = None
) -> pd.DataFrame:
    """Stability selection and confidence call of the full-data ``edges`` from the edge lists of
    half-sample ``refits`` (both ``source, target, weight, lag``; :func:`recover_graph` documents
    the columns it adds). ``n_possible``: the edges one refit could select. Extra columns of
    ``edges`` (a baseline's ``undirected``) are kept after :data:`GRAPH_COLUMNS`."""
    calls = calls or EdgeCalls()
    table = _resampling_columns(edges, refits, n_possible if refits else 1)
    table = _call(table, calls, resampled=bool(refits))
    order = table.assign(_conf=table["confidence"] != "confident", _abs=-table["weight"].abs(), _st=-table["stability"])
    order = order.sort_values(["_conf", "_st", "_abs"], kind="stable", na_position="last")
    extra = [c for c in edges.columns if c not in GRAPH_COLUMNS]
    return table.loc[order.index, GRAPH_COLUMNS + extra].reset_index(drop=True)


def _n_possible(model: CRLModel) -> int:
    """Edges a refit could select: every ordered pair of distinct nodes of the adjacency (sources x
    targets), twice for models with a time axis (lagged and instantaneous edges are counted apart)."""
    adjacency = model.get_adjacency()
    pairs = sum(s != t for s in adjacency.index for t in adjacency.columns)
    return max(pairs * (2 if model.capabilities.time_series else 1), 1)


def _resampling_columns(edges: pd.DataFrame, refits: Sequence[pd.DataFrame], n_possible: int) -> pd.DataFrame:
    keys = _keys(edges)
    if not refits:
        nan = np.full(len(edges), np.nan)
        return edges.assign(stability=nan, reverse_stability=nan, orientation=nan, weight_z=nan, false_edges_bound=nan)
    weights = [_weights(r) for r in refits]
    W = np.array([[w.get(k, 0.0) for w in weights] for k in keys]).reshape(len(keys), len(refits))
    stability = (W != 0).mean(axis=1)
    reverse = np.array([np.mean([(t, s, kind) in w for w in weights]) for s, t, kind in keys])
    either = stability + reverse
    orientation = np.divide(stability, either, out=np.full(len(keys), np.nan), where=either > 0)
    # the full-data weight over the SE of the refit weights (0 where a refit lacks the edge); with no
    # spread: z = 0 if no refit keeps the edge, infinite if every one keeps it with the same weight
    se = W.std(axis=1) / np.sqrt(2.0) if len(refits) > 1 else np.full(len(keys), np.nan)
    full = np.abs(edges["weight"].to_numpy(dtype=float))
    weight_z = np.divide(full, se, out=np.where(stability > 0, np.inf, 0.0), where=se > 0)
    q = float(np.mean([len(w) for w in weights]))  # edges selected per refit
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(stability > 0.5, q**2 / ((2 * stability - 1) * n_possible), np.nan)
    return edges.assign(
        stability=stability,
        reverse_stability=reverse,
        orientation=orientation,
        weight_z=weight_z,
        false_edges_bound=bound,
    )


def _call(table: pd.DataFrame, calls: EdgeCalls, *, resampled: bool) -> pd.DataFrame:
    """``confidence`` and ``reason`` of each edge from its resampling columns."""
    reasons = []
    for r in table.itertuples(index=False):
        if not resampled:
            reasons.append("not resampled")
            continue
        why = []
        if r.stability < calls.min_stability:
            why.append(f"unstable: in {r.stability:.0%} of refits")
        if r.weight_z < calls.min_weight_z:
            why.append(f"weak: weight {r.weight_z:.1f} SE from zero")
        timed = not pd.isna(r.lag) and r.lag > 0  # a lagged edge points forward in time
        if not timed and r.orientation < calls.min_orientation:
            why.append(f"orientation undecided: this way in {r.orientation:.0%} of refits that have the pair")
        reasons.append("; ".join(why))
    reason = pd.Series(reasons, index=table.index, dtype=str)
    return table.assign(confidence=np.where(reason == "", "confident", "tentative"), reason=reason)
