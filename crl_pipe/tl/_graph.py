"""The latent causal graph with the stability of each edge over bootstrap refits."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..models import CRLData, CRLModel
from ._resample import bootstrap_rows


def _edge_list(model: CRLModel) -> pd.DataFrame:
    """``source, target, weight, lag`` of the model's non-zero edges (lag null without a time axis)."""
    edges = model.get_edges()
    return edges.assign(lag=edges["lag"].astype("Int64")).reset_index(drop=True)


def _keys(edges: pd.DataFrame) -> list[tuple[str, str, object]]:
    """Identity of each edge over refits: the pair, and whether it is instantaneous (None: no time axis)."""
    kinds = [None if pd.isna(lag) else lag == 0 for lag in edges["lag"]]
    return list(zip(edges["source"].astype(str), edges["target"].astype(str), kinds, strict=True))


def recover_graph(model: CRLModel, data: CRLData, *, n_refits: int = 20, seed: int = 0) -> pd.DataFrame:
    """Edges of ``model``'s latent graph, each with the fraction of bootstrap refits that keep it.

    Parameters
    ----------
    model
        A fitted model; its graph on the full data gives the edges and weights.
    data
        The data it was fit on; refits use bootstrap resamples of it (within intervention groups).
    n_refits
        Number of bootstrap refits (0: stability is left as NaN).
    seed
        Seed of the resampling; refit ``r`` also uses ``seed + r`` as its model seed.

    Returns
    -------
    Table ``source, target, weight, stability, lag`` (the graph artifact), strongest edges first.
    ``lag`` (frames) comes from models with a time axis (``capabilities.time_series``; ``temporal``): 0 for an
    instantaneous edge, >= 1 for a lagged one (its strongest lag), and a pair with both is two rows;
    a refit keeps such an edge if it has the pair with the same kind (instantaneous or lagged, at
    any lag). Other models give one row per pair, ``lag`` null.
    """
    edges = _edge_list(model)
    kept = dict.fromkeys(_keys(edges), 0)
    rng = np.random.default_rng(seed)
    for r in tqdm(range(n_refits), desc="bootstrap refits", disable=not sys.stderr.isatty()):
        refit = type(model)(**model.params).fit(data.subset(bootstrap_rows(data, rng)), seed=seed + r)
        for key in set(_keys(_edge_list(refit))) & kept.keys():
            kept[key] += 1
    edges["stability"] = [kept[k] / n_refits if n_refits else np.nan for k in _keys(edges)]
    edges = edges[["source", "target", "weight", "stability", "lag"]]
    return edges.sort_values(["stability", "weight"], key=lambda c: -c.abs(), kind="stable").reset_index(drop=True)
