"""All programs' latents at once from their anchors' counts, with a full covariance between programs.

The per-program count models of :mod:`._count_means` read each program from its own anchors. In
dense screens that is not enough: where a downstream program takes over the library, an upstream
program's anchors hold no counts at all in most cells of a perturbation (up to 89 % zeros on reference
seed 0 of docs/benchmarks.md), and its latent there can only be told from the programs it moves
with. Here the programs share one prior::

    z_c ~ N(mu_p, Sigma)                           cell c of perturbation p (all programs at once)
    y_cg ~ NB(mean = s_c exp(b_g + a_g z_ck(g)), theta_k(g))   anchor g of program k(g)

with one ``Sigma`` for all perturbations (a mean-shift intervention moves the means, not how the
programs co-vary), so a cell whose program-k anchors are empty gets its z_k from the programs its
counts do show, as the programs co-vary within perturbations. The anchors' ``(b, a, theta)`` come
from the per-program fits and stay fixed; EM fits ``mu_p`` and ``Sigma`` with a Laplace posterior
per cell (a K-dimensional Newton search, whose curvature gives the posterior covariance).

Each cell's latent (:func:`joint_posterior_means`) uses one normal over all cells instead of its
perturbation's, so it needs no label (as the per-program latents).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ._count_means import _group_mean, _nb_derivatives

_T = torch.float64


@dataclass
class JointAnchors:
    """The anchors of the modelled programs: the program each one reads (an index into the modelled
    programs) and its fitted ``b``, ``a`` and dispersion ``theta`` (per-program, :mod:`._count_means`)."""

    program: np.ndarray
    b: np.ndarray
    a: np.ndarray
    theta: np.ndarray


def joint_group_means(
    Y: np.ndarray | sp.spmatrix,
    log_size: np.ndarray,
    anchors: JointAnchors,
    group: np.ndarray,
    n_groups: int,
    init: np.ndarray,
    *,
    iters: int = 40,
    tol: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean latent of every group (groups x programs, control SDs; group 0 = controls, all 0) by EM.

    Parameters
    ----------
    Y
        The anchors' raw counts (cells x anchors, in ``anchors`` order; dense or sparse).
    log_size
        Each cell's log size factor.
    group
        Each cell's group, 0 = controls.
    init
        Starting latents (cells x programs) in the units of the per-program models.

    Returns
    -------
    The group means, and the mean and covariance of one normal over all cells' latents (the label-free
    prior of :func:`joint_posterior_means`), in the per-program models' units.
    """
    Y, log_size, parts = _tensors(Y, log_size, anchors)
    g = torch.as_tensor(group, dtype=torch.long)
    n = torch.bincount(g, minlength=n_groups).to(_T)
    z = torch.as_tensor(init, dtype=_T).clone()
    mu = _group_mean(z, g, n)
    sigma = _covariance(z - mu[g], torch.zeros(1, z.shape[1], z.shape[1], dtype=_T))
    for it in range(iters):
        z, post_cov = _laplace(Y, log_size, parts, z, mu[g], torch.linalg.inv(sigma), steps=12 if it == 0 else 3)
        new_mu = _group_mean(z, g, n)
        sigma = _covariance(z - new_mu[g], post_cov)
        change = float((new_mu - mu).abs().max())
        mu = new_mu
        if change < tol:
            break
    control = g == 0
    # the control SD of the latent itself: of the posterior means plus the posterior variance
    sd = torch.sqrt(z[control].var(0) + torch.diagonal(post_cov[control].mean(0)))
    means = ((mu - mu[0]) / sd).numpy()
    centre = z.mean(0)
    total = _covariance(z - centre, post_cov)
    return means, centre.numpy(), total.numpy()


def joint_posterior_means(
    Y: np.ndarray | sp.spmatrix,
    log_size: np.ndarray,
    anchors: JointAnchors,
    prior_mean: np.ndarray,
    prior_cov: np.ndarray,
    start: np.ndarray,
    *,
    chunk: int = 50_000,
) -> np.ndarray:
    """Each cell's posterior mean of all modelled programs under one normal prior (no label), by Laplace.

    ``start``: a first guess of each cell's latents (cells x programs, the per-program models' units),
    where the Newton search begins. Cells go through in chunks of ``chunk`` (sparse ``Y`` is made dense
    a chunk at a time), so a large screen stays in memory.
    """
    precision = torch.linalg.inv(torch.as_tensor(prior_cov, dtype=_T))
    mean = torch.as_tensor(prior_mean, dtype=_T)
    out = np.empty(start.shape)
    for lo in range(0, Y.shape[0], chunk):
        rows = slice(lo, min(lo + chunk, Y.shape[0]))
        y, ls, parts = _tensors(Y[rows], log_size[rows], anchors)
        z0 = torch.as_tensor(start[rows], dtype=_T)
        z, _ = _laplace(y, ls, parts, z0, mean.expand_as(z0), precision, steps=15)
        out[rows] = z.numpy()
    return out


def _tensors(Y, log_size, anchors: JointAnchors):
    parts = (
        torch.as_tensor(anchors.program, dtype=torch.long),
        torch.as_tensor(anchors.b, dtype=_T),
        torch.as_tensor(anchors.a, dtype=_T),
        torch.as_tensor(anchors.theta, dtype=_T),
    )
    Y = Y.toarray() if sp.issparse(Y) else Y
    return torch.as_tensor(Y, dtype=_T), torch.as_tensor(log_size, dtype=_T), parts


def _laplace(Y, log_size, parts, z, prior_mean, precision, steps):
    """Newton steps to each cell's posterior mode; returns the modes and the posterior covariances (the
    inverse curvature at the mode)."""
    program, b, a, theta = parts
    member = torch.nn.functional.one_hot(program, z.shape[1]).to(_T)  # anchors x programs
    for _ in range(steps):
        score, weight = _nb_derivatives(Y, log_size[:, None] + b + z[:, program] * a, theta)
        grad = (score * a) @ member - (z - prior_mean) @ precision
        hessian = torch.diag_embed((weight * a**2) @ member) + precision
        z = z + torch.linalg.solve(hessian, grad[:, :, None])[:, :, 0].clamp(-2, 2)
    return z, torch.linalg.inv(hessian)


def _covariance(residual, post_cov):
    """Covariance of latents whose posterior means deviate by ``residual`` and whose posterior
    covariances are ``post_cov`` (the M-step of a normal prior)."""
    return residual.T @ residual / len(residual) + post_cov.mean(0)
