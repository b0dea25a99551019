"""Held-out single perturbations predicted from prior knowledge, beside the field's simple baselines.

A single held out of every fit (:func:`crl_pipe.tl.hold_out`) is predicted by steering: a knockdown
of its gene through a prior route only (gene-set membership or loading; never its own cells), at
the typical knockdown of the trained perturbations (:class:`~crl_pipe.tl._steer.Steerer`). Three
baselines are scored in the same call, as in Ahlmann-Eltze, Huber and Anders (Nature Methods 2025):

- ``no_change``: the control mean;
- ``mean_change``: the control mean plus the mean change of the training perturbations;
- ``linear_embedding``: a bilinear model ``Y = b + G W P'`` of the training changes ``Y`` (genes x
  perturbations) on gene embeddings ``G`` (the top principal components of the training cells, per
  gene) where a perturbation's embedding is its target gene's row of ``G``; ridge ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._steer_requests import SteerRequest
from ..models import CRLData, CRLModel
from ._prediction import _mmd, _r2, held_out_cells
from ._steer import Steerer

#: Predictors scored for each held-out single, the model first.
SINGLE_PREDICTORS = ("model", "no_change", "mean_change", "linear_embedding")
#: Principal components of the gene embedding, and the ridge penalty of the linear baseline.
_EMBEDDING_DIMS, _EMBEDDING_RIDGE = 10, 0.1
#: At most this many cells (seeded sample) enter the embedding's PCA, and each side of an MMD.
_MAX_EMBEDDING_CELLS, _MAX_CELLS = 20_000, 1000


def evaluate_singles(
    model: CRLModel,
    data: CRLData,
    held_out: Sequence[str],
    *,
    top_n: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Score predicted mean changes of held-out single perturbations against their observed cells.

    Parameters
    ----------
    model
        A fitted model that steers (``capabilities.steers``), trained without the ``held_out`` cells.
    data
        Every cell, the held-out ones included (their cells are used for scoring only).
    held_out
        Every held-out label of the dataset (singles are scored; combinations only leave the training data).
    top_n
        The most changed genes (largest |observed change|) of the ``_top`` metrics.
    seed
        Seed of the MMD subsamples (at most 1,000 cells a side) and of the embedding's sample of cells.

    Returns
    -------
    Long table ``intervention, predictor, metric, value`` (predictors :data:`SINGLE_PREDICTORS`),
    metrics ``pearson_delta_all`` and ``pearson_delta_top{top_n}`` (Pearson correlation of predicted
    and observed change from the control mean, over all genes / the top ones; NaN for a constant
    prediction), ``r2_delta_all`` and ``r2_delta_top{top_n}`` (R² of the changes) and ``mmd`` (of the
    control cells shifted by the predicted change against the observed cells).
    """
    singles = [label for label in held_out if "+" not in label]
    if not singles:
        return pd.DataFrame({"intervention": [], "predictor": [], "metric": [], "value": []}).astype(
            {"intervention": str, "predictor": str, "metric": str, "value": float}
        )
    train = data.subset(~held_out_cells(data, list(held_out)))
    steerer = Steerer(model, train, n_boot=0)
    features = steerer.features
    rng = np.random.default_rng(seed)
    ctrl_mean = _mean_rows(data.X, data.is_control)
    control = _dense(data.X[_sample(np.flatnonzero(data.is_control), _MAX_CELLS, rng)])  # for the MMD only
    trained = list(train.perturbations)
    train_deltas = np.array([_mean_rows(data.X, data.intervention == lab) - ctrl_mean for lab in trained])
    embedding = _gene_embedding(_dense(train.X[_sample(np.arange(train.n_cells), _MAX_EMBEDDING_CELLS, rng)]))
    rng = np.random.default_rng(seed)
    rows = []
    for label in singles:
        cells = np.flatnonzero(data.intervention == label)
        if not len(cells):
            raise InputError(f"evaluate_singles: held-out single {label!r} has no cells in the data")
        obs_delta = _mean_rows(data.X, data.intervention == label) - ctrl_mean
        observed = _dense(data.X[_sample(cells, _MAX_CELLS, rng)])
        genes = [g for g in data.targets.get(label, (label,)) if g in steerer.reachable_genes()]
        reference = steerer._typical_shift(steerer.point)[1] or 1.0
        request = SteerRequest(label, knockdown=dict.fromkeys(genes, reference))
        predictions = {
            "model": steerer.predict(request, prior_only=True)[1],
            "no_change": np.zeros(len(features)),
            "mean_change": train_deltas.mean(axis=0),
            "linear_embedding": _linear_embedding(embedding, features, trained, train.targets, train_deltas, genes),
        }
        for name, delta in predictions.items():
            if delta is None:
                continue
            for metric, value in _single_scores(delta, obs_delta, control, observed, top_n, rng).items():
                rows.append((label, name, metric, value))
    return pd.DataFrame(rows, columns=["intervention", "predictor", "metric", "value"])


def _single_scores(delta, obs_delta, control, observed, top_n, rng) -> dict[str, float]:
    top = np.argsort(-np.abs(obs_delta), kind="stable")[:top_n]
    return {
        "pearson_delta_all": _pearson(delta, obs_delta),
        f"pearson_delta_top{top_n}": _pearson(delta[top], obs_delta[top]),
        "r2_delta_all": _r2(delta, obs_delta),
        f"r2_delta_top{top_n}": _r2(delta[top], obs_delta[top]),
        "mmd": _mmd(control + delta, observed, rng),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (a no-change prediction)."""
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(a**2) * np.sum(b**2))
    return float(np.sum(a * b) / norm) if norm > 1e-12 else float("nan")


def _gene_embedding(X: np.ndarray) -> np.ndarray:
    """Genes x d: the top principal axes of the (centred) training cells, scaled by their SDs."""
    Xc = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    d = min(_EMBEDDING_DIMS, vt.shape[0])
    return (vt[:d] * (s[:d, None] / np.sqrt(max(len(X) - 1, 1)))).T


def _linear_embedding(G, features, trained, targets, deltas, genes) -> np.ndarray | None:
    """The linear gene-embedding baseline's change for a perturbation of ``genes`` (None: gene not measured)."""
    index = {f: i for i, f in enumerate(features)}
    rows = [i for i, lab in enumerate(trained) if all(t in index for t in targets.get(lab, ()))]
    if not genes or any(g not in index for g in genes) or not rows:
        return None
    P = np.array([G[[index[t] for t in targets[trained[i]]]].sum(axis=0) for i in rows])  # perturbations x d
    Y = deltas[rows].T  # genes x perturbations
    b = Y.mean(axis=1, keepdims=True)
    d = G.shape[1]
    left = np.linalg.solve(G.T @ G + _EMBEDDING_RIDGE * np.eye(d), G.T @ (Y - b))
    W = np.linalg.solve(P.T @ P + _EMBEDDING_RIDGE * np.eye(d), (left @ P).T).T  # d x d
    p = G[[index[g] for g in genes]].sum(axis=0)
    return b.ravel() + G @ W @ p


def _mean_rows(X, rows: np.ndarray) -> np.ndarray:
    """Mean of the ``rows`` (mask) of a dense or sparse matrix, as a float64 vector."""
    return np.asarray(X[rows].mean(axis=0), dtype=np.float64).ravel()


def _sample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``rows``, or a sorted seeded sample of ``n`` of them."""
    return rows if len(rows) <= n else np.sort(rng.choice(rows, size=n, replace=False))


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
