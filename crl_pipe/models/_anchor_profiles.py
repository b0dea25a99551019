"""Anchors that respond to the perturbations as their program does.

A gene set tied to a program is rarely all right: some members respond to other programs (or to
none). In a one-factor read-out such genes pull the program towards whatever drives them, and in a
dense screen, where downstream programs carry large variances, a few of them can outweigh the
right anchors. The perturbations tell them apart: every right anchor of program k shifts under
perturbation p by ``a_g d_p[k]``, so the anchors' mean-shift profiles over the perturbations are
proportional to one another (rank one), while a gene driven by other programs follows another
profile. :func:`consistent_anchors` fits the rank-one profile of each program's anchors by
weighted least squares (weights: the inverse variances of the mean shifts) and drops the minority
of anchors whose profile it explains poorly *and* significantly (misfit well beyond the sampling
noise of the means, so that a program no perturbation moves keeps all its anchors).
"""

from __future__ import annotations

import numpy as np

from ._data import CRLData, column_stats

#: Share of an anchor's profile (weighted sum of squares of its mean shifts) the program's rank-one
#: profile must explain. Right anchors: 0.8-1.0 on dense simulated screens (lower where anchors sit on
#: the log1p floor); genes driven by other programs: mostly 0-0.6.
MIN_EXPLAINED = 0.65
#: Mean squared standardised residual above which a misfit counts (about 1 for sampling noise alone).
MIN_MISFIT = 3.0
#: Fewest perturbations and anchors for the check; at most this share of a program's anchors is dropped.
MIN_PERTURBATIONS, MIN_ANCHORS, MAX_DROPPED_SHARE = 3, 3, 0.5
_ROUNDS = 5


def consistent_anchors(data: CRLData, programs: list[str]) -> dict[str, list[str]]:
    """Each program's anchors, less those whose perturbation profile disagrees with the program's.

    ``data.X``: log-scale expression (sized so that a program taking over the library does not move
    other genes). Programs with fewer than :data:`MIN_ANCHORS` anchors, and screens with fewer than
    :data:`MIN_PERTURBATIONS` perturbations, keep their anchors as listed.
    """
    labels = data.perturbations
    if len(labels) < MIN_PERTURBATIONS:
        return {p: list(data.anchors[p]) for p in programs}
    listed = sorted({g for p in programs for g in data.anchors[p]})
    index = {g: i for i, g in enumerate(listed)}
    position = {f: i for i, f in enumerate(data.features)}
    shifts, weights = _standardised_shifts(data.X[:, [position[g] for g in listed]], data, labels)
    kept = {}
    for program in programs:
        genes = list(data.anchors[program])
        if len(genes) < MIN_ANCHORS:
            kept[program] = genes
            continue
        cols = [index[g] for g in genes]
        w = weights[:, cols] * _untargeted(data, labels, genes)
        keep = _profile_consistent(shifts[:, cols], w)
        kept[program] = [g for g, k in zip(genes, keep, strict=True) if k]
    return kept


def _standardised_shifts(X, data: CRLData, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Perturbations x columns of ``X`` mean shifts from the controls in control SDs, and their inverse variances."""
    mean_c, sd_c = column_stats(X, data.is_control)
    sd_c = np.where(sd_c > 0, sd_c, 1.0)
    n_c = int(data.is_control.sum())
    shifts = np.zeros((len(labels), X.shape[1]))
    weights = np.zeros_like(shifts)
    for i, label in enumerate(labels):
        rows = data.intervention == label
        mean_p, sd_p = column_stats(X, rows)
        var = (sd_p**2 / rows.sum() + sd_c**2 / n_c) / sd_c**2
        shifts[i] = (mean_p - mean_c) / sd_c
        weights[i] = 1.0 / np.maximum(var, 1e-12)
    return shifts, weights


def _untargeted(data: CRLData, labels: list[str], genes: list[str]) -> np.ndarray:
    """Perturbations x genes: 0 where the perturbation targets the gene itself (its knockdown is not the program's)."""
    return np.array([[g not in data.targets.get(lab, ()) for g in genes] for lab in labels], dtype=float)


def _profile_consistent(D: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mask of the anchors (columns of ``D``) whose profile the rank-one fit ``u v^T`` explains.

    The common profile ``u`` is the leading direction of the kept anchors' profiles scaled to unit
    length, so every anchor has one vote: a few genes with large shifts (driven by a high-variance
    program) cannot set it. Each anchor's loading ``v`` and misfit are then weighted least squares.
    """
    n_genes = D.shape[1]
    max_dropped = min(int(MAX_DROPPED_SHARE * n_genes), n_genes - 2)  # never below two anchors
    unit = D / np.maximum(np.linalg.norm(D, axis=0), 1e-12)
    n_obs = np.maximum((W > 0).sum(axis=0), 1)
    keep = np.ones(n_genes, dtype=bool)
    for _ in range(_ROUNDS):
        u = np.linalg.svd(unit[:, keep], full_matrices=False)[0][:, 0]
        v = (W * D * u[:, None]).sum(axis=0) / np.maximum((W * u[:, None] ** 2).sum(axis=0), 1e-12)
        misfit = ((D - np.outer(u, v)) ** 2 * W).sum(axis=0) / n_obs
        explained = 1.0 - misfit / np.maximum((D**2 * W).sum(axis=0) / n_obs, 1e-12)
        worst = np.argsort(explained)[:max_dropped]
        bad = worst[(explained[worst] < MIN_EXPLAINED) & (misfit[worst] > MIN_MISFIT)]
        new = np.ones(n_genes, dtype=bool)
        new[bad] = False
        if np.array_equal(new, keep):
            break
        keep = new
    return keep
