"""``linear``: a linear latent SEM identified from anchors and interventions.

Assumptions (said in the docs too):
1. Each program k has >= 2 anchor genes whose (log) expression depends on program k alone, so
   the anchors measure z_k up to scale and noise: a one-factor analysis of them gives a score.
   An observed variable that anchors itself (program name = its one feature, e.g. a protein of
   an observed-variable table) is its own score.
2. Programs follow z = B z + eps on a DAG; a perturbation shifts the noise of its target
   program(s) (soft intervention; it need not be perfect) and leaves every other mechanism as is.
3. Then the mean shift of the scores under perturbation p obeys d_p = (I - B)^-1 s_p with
   s_p non-zero only on p's targets. For each program j, every perturbation that does not target j
   gives one linear equation d_p[j] = sum_i B[j, i] d_p[i]; B follows by least squares on those
   equations, restricted to a causal order. Means are unbiased under measurement noise of the
   scores, which is why mean shifts (not the noisy per-cell regressions) carry the graph.
Targets and B are estimated alternately: targets = largest exogenous shift (I - B) d_p.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.decomposition import FactorAnalysis

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData, column_stats, crossprod, dense_columns, matmul


class LinearSEM(CRLModel):
    """Linear latent SEM from anchor genes and intervention mean shifts (closed form).

    Parameters
    ----------
    edge_threshold
        Smallest |weight| kept as an edge, in control standard deviations of the child per
        control standard deviation of the parent.
    ridge
        Ridge penalty on the least-squares fit of B (guards against too few perturbations).
    max_iter
        Rounds of alternating target assignment and graph fitting.
    min_target_z
        z-score of the exogenous shift above which an intervention counts as hitting a latent.
    """

    name = "linear"
    #: Fits on the log data alone: the workflow need not load raw counts for it.
    uses_counts = False

    def __init__(
        self, edge_threshold: float = 0.15, ridge: float = 1e-3, max_iter: int = 20, min_target_z: float = 3.0
    ) -> None:
        super().__init__(edge_threshold=edge_threshold, ridge=ridge, max_iter=max_iter, min_target_z=min_target_z)
        self.features: list[str] = []
        self.assigned: dict[str, list[str]] = {}

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0) -> LinearSEM:
        programs = [p for p, genes in data.anchors.items() if len(genes) >= 2 or genes == [p]]
        if not programs:
            raise ModelError(
                "model linear: needs at least one program with >= 2 anchor features, or a variable anchoring "
                "itself (anchors.parquet)"
            )
        if not data.is_control.any():
            raise ModelError("model linear: needs control cells to measure intervention shifts against")
        self.latent_names, self.features = programs, list(data.features)
        self._fit_scores(data, programs, seed)
        scores = self._scores(data.X)
        labels, shifts, counts = _group_shifts(scores, data)
        self.intervention_names = labels
        n_targets = [max(1, len(data.targets.get(lab, ()))) for lab in labels]
        B, targets = self._alternate(shifts, counts, n_targets)
        exo = shifts @ (np.eye(len(programs)) - B).T
        se = np.sqrt(1.0 / counts + 1.0 / data.is_control.sum())
        self.register_buffer("B", torch.tensor(B))
        self.register_buffer("exogenous_shift", torch.tensor(exo))
        self.register_buffer("shift_se", torch.tensor(se))
        self.register_buffer("target_mask", torch.tensor(targets))
        self.register_buffer("loadings", torch.tensor(_loadings(data.X, scores)))
        self.history = pd.DataFrame(
            {"epoch": [0], "split": ["train"], "loss": [float(_residual(shifts, counts, targets, B))]}
        )
        return self

    def _fit_scores(self, data: CRLData, programs: list[str], seed: int) -> None:
        """One-factor model per program on its standardised anchors -> score weights over all features.

        The factor model is fit on every cell, or on a seeded sample of 50,000 in larger screens."""
        X = data.X
        mean, sd = _control_stats(X, data.is_control)
        sd = np.where(sd > 0, sd, 1.0)
        weights = np.zeros((X.shape[1], len(programs)))
        index = {f: i for i, f in enumerate(data.features)}
        fit_X = X if X.shape[0] <= _MAX_FA_CELLS else X[_fa_sample(X.shape[0], seed)]
        for k, program in enumerate(programs):
            cols = [index[g] for g in data.anchors[program]]
            if len(cols) == 1:  # an observed variable: the score is the variable itself
                weights[cols, k] = 1.0
                continue
            block = (dense_columns(fit_X, cols) - mean[cols]) / sd[cols]
            fa = FactorAnalysis(n_components=1, random_state=seed).fit(block)
            loading = fa.components_[0]
            w = loading / np.maximum(fa.noise_variance_, 1e-6)  # Bartlett weights: trust reliable anchors more
            weights[cols, k] = w * np.sign(loading.sum() or 1.0)
        self.register_buffer("feature_mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("feature_sd", torch.tensor(sd, dtype=torch.float64))
        self.register_buffer("score_weights", torch.tensor(weights))
        raw = _standardised_matmul(X, mean, sd, weights)
        ctrl = raw[data.is_control]
        self.register_buffer("score_mean", torch.tensor(ctrl.mean(axis=0)))
        self.register_buffer("score_sd", torch.tensor(np.where(ctrl.std(axis=0) > 0, ctrl.std(axis=0), 1.0)))

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """Program scores in control standard deviations (controls: mean 0, SD 1)."""
        mean, sd = self.feature_mean.numpy(), self.feature_sd.numpy()
        raw = _standardised_matmul(X, mean, sd, self.score_weights.numpy())
        return (raw - self.score_mean.numpy()) / self.score_sd.numpy()

    def _alternate(self, shifts: np.ndarray, counts: np.ndarray, n_targets: list[int]):
        """Order and single targets by sink-first peeling, then B on that order, then targets from B."""
        single = np.array([n == 1 for n in n_targets])
        order, single_targets = _peel_order(shifts[single])
        # perturbations without a confident target yet (doubles, ambiguous singles) stay out of the
        # first fit: marking every latent as targeted removes them from every equation
        targets = np.ones_like(shifts, dtype=bool)
        rows = np.flatnonzero(single)[single_targets >= 0]
        targets[rows] = False
        targets[rows, single_targets[single_targets >= 0]] = True
        B = np.zeros((shifts.shape[1],) * 2)
        for _ in range(self.params["max_iter"]):
            B = _fit_graph(shifts, counts, targets, order, self.params["ridge"], self.params["edge_threshold"])
            new = _assign_targets(shifts, B, n_targets)
            if np.array_equal(new, targets):
                break
            targets = new
        return B, targets

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        X = _align(data, self.features)
        scores = self._scores(X)
        frame = pd.DataFrame(scores, columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_targets(self) -> pd.DataFrame:
        exo = self.exogenous_shift.numpy()
        z = exo / self.shift_se.numpy()[:, None]
        mask = self.target_mask.numpy() & (np.abs(z) >= self.params["min_target_z"])
        rows = [
            (lab, lat, float(exo[i, k]), float(z[i, k]), bool(mask[i, k]))
            for i, lab in enumerate(self.intervention_names)
            for k, lat in enumerate(self.latent_names)
        ]
        return pd.DataFrame(rows, columns=["intervention", "latent", "score", "z_score", "is_target"])

    def get_adjacency(self) -> pd.DataFrame:
        # B[j, i] is the effect of i on j; the adjacency is indexed source x target.
        return pd.DataFrame(self.B.numpy().T, index=self.latent_names, columns=self.latent_names)

    def get_loadings(self) -> pd.DataFrame:
        L = self.loadings.numpy()
        frame = pd.DataFrame(L, index=self.features, columns=self.latent_names)
        return (
            frame.rename_axis("feature")
            .reset_index()
            .melt("feature", var_name="latent", value_name="loading")[["latent", "feature", "loading"]]
        )

    def _extra_state_json(self) -> dict[str, Any]:
        return {"features": self.features}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.features = list(extra["features"])


def _align(data: CRLData, features: list[str]) -> np.ndarray | sp.csr_matrix:
    index = {f: i for i, f in enumerate(data.features)}
    missing = [f for f in features if f not in index]
    if missing:
        raise ModelError(f"model linear: features missing from the data: {missing[:5]}")
    if sp.issparse(data.X) and features == data.features:
        return data.X  # selecting every column would copy a large sparse matrix
    return data.X[:, [index[f] for f in features]]


#: The one-factor model of a program's anchors is fit on a seeded sample of at most this many cells
#: (it has 2 parameters per anchor; scores are then computed for every cell).
_MAX_FA_CELLS = 50_000


def _fa_sample(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, _MAX_FA_CELLS, replace=False))


def _control_stats(X: np.ndarray | sp.csr_matrix, is_control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and SD of the control cells."""
    if sp.issparse(X):
        return column_stats(X, is_control)
    return X[is_control].mean(axis=0), X[is_control].std(axis=0)


def _standardised_matmul(X, mean: np.ndarray, sd: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``((X - mean) / sd) @ weights``; for a sparse ``X`` as ``X @ (weights / sd) - mean @ (weights / sd)``,
    which never forms the dense standardised matrix."""
    if not sp.issparse(X):
        return ((X - mean) / sd) @ weights
    scaled = weights / sd[:, None]
    return matmul(X, scaled) - mean @ scaled


def _group_shifts(scores: np.ndarray, data: CRLData):
    """Mean score shift of each perturbation relative to controls, and its cell count."""
    labels = data.perturbations
    base = scores[data.is_control].mean(axis=0)
    shifts = np.array([scores[data.intervention == lab].mean(axis=0) - base for lab in labels])
    counts = np.array([(data.intervention == lab).sum() for lab in labels], dtype=float)
    return labels, shifts.reshape(len(labels), scores.shape[1]), counts


def _assign_targets(shifts: np.ndarray, B: np.ndarray, n_targets: list[int]) -> np.ndarray:
    """Each perturbation's n largest exogenous shifts |(I - B) d| are its targets."""
    exo = np.abs(shifts @ (np.eye(B.shape[0]) - B).T)
    mask = np.zeros_like(exo, dtype=bool)
    for p, n in enumerate(n_targets):
        mask[p, np.argsort(-exo[p], kind="stable")[: min(n, exo.shape[1])]] = True
    return mask


def _fit_graph(shifts, counts, targets, order, ridge, threshold):
    """B from the mean-shift equations of non-targeting perturbations, on a causal order, thresholded."""
    K = shifts.shape[1]
    rank = np.empty(K, dtype=int)
    rank[order] = np.arange(K)
    allowed = rank[None, :] < rank[:, None]  # allowed[j, i]: i precedes j
    B = _solve(shifts, counts, targets, allowed, ridge)
    support = allowed & (np.abs(B) >= threshold)
    return _solve(shifts, counts, targets, support, ridge)  # refit on the kept edges


def _peel_order(shifts: np.ndarray, max_leak: float = 0.25) -> tuple[list[int], np.ndarray]:
    """Causal order and target of each single perturbation from its mean-shift pattern.

    Perturbing a sink of the remaining programs shifts that program alone, so the pair
    (perturbation, program) whose shift leaks least onto the other remaining programs names a
    sink; remove it and repeat. Other perturbations join that sink only if their shift stays on it
    too (leak < ``max_leak``). Returns the order (sources first) and each row's target (-1: open).
    """
    n, K = shifts.shape
    remaining, sinks = list(range(K)), []
    target = np.full(n, -1)
    power = shifts**2
    while remaining:
        open_rows = np.flatnonzero(target < 0)
        if open_rows.size == 0:
            sinks.extend(sorted(remaining, reverse=True))  # unperturbed programs: order unidentified
            break
        sub = power[np.ix_(open_rows, remaining)]
        leak = (sub.sum(axis=1, keepdims=True) - sub) / np.maximum(sub, 1e-12)
        best_row, best_col = np.unravel_index(np.argmin(leak), leak.shape)
        target[open_rows[best_row]] = remaining[best_col]
        target[open_rows[(leak[:, best_col] < max_leak) & (np.argmin(leak, axis=1) == best_col)]] = remaining[best_col]
        sinks.append(remaining.pop(best_col))
    return sinks[::-1], target


def _solve(shifts, counts, targets, allowed, ridge):
    K = shifts.shape[1]
    B = np.zeros((K, K))
    w = np.sqrt(counts)
    for j in range(K):
        parents = np.flatnonzero(allowed[j])
        rows = ~targets[:, j]
        if parents.size == 0 or rows.sum() == 0:
            continue
        X = shifts[rows][:, parents] * w[rows, None]
        y = shifts[rows, j] * w[rows]
        lam = ridge * max(float(np.sum(w[rows] ** 2)), 1.0)
        B[j, parents] = np.linalg.solve(X.T @ X + lam * np.eye(parents.size), X.T @ y)
    return B


def _residual(shifts, counts, targets, B) -> float:
    resid = (shifts - shifts @ B.T) * ~targets
    return float(np.average(np.sum(resid**2, axis=1), weights=counts))


def _loadings(X: np.ndarray | sp.csr_matrix, scores: np.ndarray) -> np.ndarray:
    """Least-squares loadings of every standardised feature on the program scores (features x programs)."""
    Z = scores - scores.mean(axis=0)
    if sp.issparse(X):
        # Z is centred, so Z' (X - mean) / sd = (Z' X) / sd: the normal equations need no dense X
        _, sd = column_stats(X)
        rhs = crossprod(X, Z).T / np.where(sd > 0, sd, 1.0)
        return np.linalg.lstsq(Z.T @ Z, rhs, rcond=None)[0].T
    Xs = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    return np.linalg.lstsq(Z, Xs, rcond=None)[0].T
