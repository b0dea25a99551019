"""The latent causal graph with the stability of each edge over bootstrap refits."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..models import CRLData, CRLModel


def bootstrap_rows(data: CRLData, rng: np.random.Generator) -> np.ndarray:
    """Resample cells with replacement within each intervention group (group sizes are kept).

    Time series (``data.obs`` with an ``episode`` column) are resampled by whole episodes instead,
    so that refits still see consecutive frames.
    """
    if data.obs is not None and "episode" in data.obs:
        from ..models import bootstrap_episodes

        return bootstrap_episodes(data, rng)
    rows = [rng.choice(idx, size=idx.size, replace=True) for idx in _groups(data.intervention)]
    return np.sort(np.concatenate(rows))


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(labels, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


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
    Table ``source, target, weight, stability`` (the graph artifact), strongest edges first.
    """
    adjacency = model.get_adjacency()
    kept = np.zeros(adjacency.shape)
    rng = np.random.default_rng(seed)
    for r in tqdm(range(n_refits), desc="bootstrap refits", disable=not sys.stderr.isatty()):
        refit = type(model)(**model.params).fit(data.subset(bootstrap_rows(data, rng)), seed=seed + r)
        aligned = refit.get_adjacency().reindex(index=adjacency.index, columns=adjacency.columns, fill_value=0.0)
        kept += aligned.to_numpy() != 0
    stability = kept / n_refits if n_refits else np.full(adjacency.shape, np.nan)
    src, dst = np.nonzero(adjacency.to_numpy())
    edges = pd.DataFrame(
        {
            "source": adjacency.index[src].astype(str),
            "target": adjacency.columns[dst].astype(str),
            "weight": adjacency.to_numpy()[src, dst].astype(float),
            "stability": stability[src, dst].astype(float),
        }
    )
    return edges.sort_values(["stability", "weight"], key=lambda c: -c.abs(), kind="stable").reset_index(drop=True)
