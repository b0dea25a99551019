"""Bootstrap resamples of CRLData for refits: cells within intervention groups, or whole episodes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import ModelError
from ..models import CRLData


def bootstrap_rows(data: CRLData, rng: np.random.Generator) -> np.ndarray:
    """Resample cells with replacement within each intervention group (group sizes are kept).

    Time series (``data.obs`` with an ``episode`` column) are resampled by whole episodes instead
    (:func:`bootstrap_episodes`), so that refits still see consecutive frames.
    """
    if data.obs is not None and "episode" in data.obs:
        return bootstrap_episodes(data, rng)
    rows = [rng.choice(idx, size=idx.size, replace=True) for idx in _groups(data.intervention)]
    return np.sort(np.concatenate(rows))


def bootstrap_episodes(data: CRLData, rng: np.random.Generator) -> np.ndarray:
    """Rows of a bootstrap resample of whole episodes (drawn with replacement, each kept in time order).

    Time-series rows are not exchangeable; episodes are. Row order is not sorted, so each drawn copy
    of an episode stays a contiguous series (a new segment starts where the frame resets).
    """
    if data.obs is None or "episode" not in data.obs:
        raise ModelError("bootstrap over episodes needs CRLData.obs with an 'episode' column")
    codes, uniques = pd.factorize(data.obs["episode"])
    groups = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    return np.concatenate([groups[g] for g in rng.integers(len(groups), size=len(groups))])


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(labels, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def complementary_halves(data: CRLData, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the rows (complementary pairs of Shah & Samworth 2013, for stability selection).

    Cells are split within each intervention group (each half keeps about half of every group);
    time series (``data.obs`` with an ``episode`` column) are split by whole episodes, each kept in
    time order. A group (or a log) of one cell (episode) goes to the first half.
    """
    if data.obs is not None and "episode" in data.obs:
        codes, uniques = pd.factorize(data.obs["episode"])
        order = rng.permutation(len(uniques))
        cut = (len(order) + 1) // 2
        return tuple(np.concatenate([np.flatnonzero(codes == g) for g in part]) for part in (order[:cut], order[cut:]))
    first, second = [], []
    for idx in _groups(data.intervention):
        shuffled = rng.permutation(idx)
        cut = (len(shuffled) + 1) // 2
        first.append(shuffled[:cut])
        second.append(shuffled[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
