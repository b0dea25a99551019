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

The size factor ``s_c`` is each cell's total over its stable features (genes no program drives) plus
one. Where programs take over the whole library that total falls to a handful of counts or none (a
tenth of the cells of a K = 15 screen at 45 % density held 6 or fewer), and a plug-in size factor
from it is both noisy and biased up, which reads every program of the cell too low. With
``stable_total`` the log size factor ``u_c = log s_c`` is one more latent instead::

    u_c ~ N(nu_p, tau^2)                           its own mean per perturbation, apart from the programs
    T_c ~ NB(mean = e^u_c, 100)                    T_c: the cell's stable total (a sum of many genes)

and every anchor's log mean moves with ``u_c`` one for one, so where ``T_c`` says little the anchors
tell the size, from how their counts spread over the programs. The prior keeps ``u`` independent of
the programs: how the size moves with them differs from one perturbation to the next, as the program
that takes over the library does, and one pooled covariance biased the means on the reference screens.

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
    stable_total: np.ndarray | None = None,
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
    stable_total
        Each cell's total count over its stable features (the size factor less one). When given, the
        cell's log size factor is not taken as measured but is one more latent, with this total as its
        observation (module docstring); ``log_size`` is then where its search starts.

    Returns
    -------
    The group means, and the mean and covariance of one normal over all cells' latents (the label-free
    prior of :func:`joint_posterior_means`), in the per-program models' units; with ``stable_total``
    the log size factor is their last entry.
    """
    Y, log_size, parts = _tensors(Y, log_size, anchors, stable_total)
    g = torch.as_tensor(group, dtype=torch.long)
    n = torch.bincount(g, minlength=n_groups).to(_T)
    z = torch.as_tensor(init, dtype=_T).clone()
    if stable_total is not None:
        z = torch.cat([z, log_size[:, None]], 1)
    mu = _group_mean(z, g, n)
    sigma = _covariance(z - mu[g], torch.zeros(1, z.shape[1], z.shape[1], dtype=_T))
    for it in range(iters):
        z, post_cov = _laplace(Y, log_size, parts, z, mu[g], torch.linalg.inv(sigma), steps=12 if it == 0 else 3)
        new_mu = _group_mean(z, g, n)
        sigma = _covariance(z - new_mu[g], post_cov, sized=stable_total is not None)
        change = float((new_mu - mu).abs().max())
        mu = new_mu
        if change < tol:
            break
    control = g == 0
    # the control SD of the latent itself: of the posterior means plus the posterior variance
    sd = torch.sqrt(z[control].var(0) + torch.diagonal(post_cov[control].mean(0)))
    K = init.shape[1]
    means = ((mu - mu[0]) / sd)[:, :K].numpy()
    centre = z.mean(0)
    total = _covariance(z - centre, post_cov, sized=stable_total is not None)
    return means, centre.numpy(), total.numpy()


def joint_posterior_means(
    Y: np.ndarray | sp.spmatrix,
    log_size: np.ndarray,
    anchors: JointAnchors,
    prior_mean: np.ndarray,
    prior_cov: np.ndarray,
    start: np.ndarray,
    *,
    stable_total: np.ndarray | None = None,
    chunk: int = 50_000,
) -> np.ndarray:
    """Each cell's posterior mean of all modelled programs under one normal prior (no label), by Laplace.

    ``start``: a first guess of each cell's latents (cells x programs, the per-program models' units),
    where the Newton search begins. ``stable_total``: as in :func:`joint_group_means` (the prior then
    has the log size factor last). Cells go through in chunks of ``chunk`` (sparse ``Y`` is made dense
    a chunk at a time), so a large screen stays in memory.
    """
    precision = torch.linalg.inv(torch.as_tensor(prior_cov, dtype=_T))
    mean = torch.as_tensor(prior_mean, dtype=_T)
    out = np.empty(start.shape)
    for lo in range(0, Y.shape[0], chunk):
        rows = slice(lo, min(lo + chunk, Y.shape[0]))
        total = None if stable_total is None else stable_total[rows]
        y, ls, parts = _tensors(Y[rows], log_size[rows], anchors, total)
        z0 = torch.as_tensor(start[rows], dtype=_T)
        if total is not None:
            z0 = torch.cat([z0, ls[:, None]], 1)
        z, _ = _laplace(y, ls, parts, z0, mean.expand_as(z0), precision, steps=15)
        out[rows] = z[:, : start.shape[1]].numpy()
    return out


#: Dispersion of a cell's stable total given its size factor: a sum over many genes, so near Poisson.
_STABLE_THETA = 100.0


def _tensors(Y, log_size, anchors: JointAnchors, stable_total=None):
    parts = (
        torch.as_tensor(anchors.program, dtype=torch.long),
        torch.as_tensor(anchors.b, dtype=_T),
        torch.as_tensor(anchors.a, dtype=_T),
        torch.as_tensor(anchors.theta, dtype=_T),
        None if stable_total is None else torch.as_tensor(stable_total, dtype=_T),
    )
    Y = Y.toarray() if sp.issparse(Y) else Y
    return torch.as_tensor(Y, dtype=_T), torch.as_tensor(log_size, dtype=_T), parts


def _laplace(Y, log_size, parts, z, prior_mean, precision, steps):
    """Newton steps to each cell's posterior mode; returns the modes and the posterior covariances (the
    inverse curvature at the mode). With a stable total in ``parts`` the last column of ``z`` is the
    cell's log size factor: every anchor's log mean moves with it one for one, and the stable total
    is its own observation (a count with mean e^u)."""
    program, b, a, theta, stable_total = parts
    K = z.shape[1] - (stable_total is not None)
    member = torch.nn.functional.one_hot(program, K).to(_T)  # anchors x programs
    for _ in range(steps):
        offset = log_size[:, None] if stable_total is None else z[:, K:]
        score, weight = _nb_derivatives(Y, offset + b + z[:, program] * a, theta)
        grad = (score * a) @ member
        hessian = torch.diag_embed((weight * a**2) @ member)
        if stable_total is not None:
            grad, hessian = _with_size(grad, hessian, score, weight, a, member, stable_total, z[:, K])
        grad = grad - (z - prior_mean) @ precision
        hessian = hessian + precision
        z = z + torch.linalg.solve(hessian, grad[:, :, None])[:, :, 0].clamp(-2, 2)
    return z, torch.linalg.inv(hessian)


def _with_size(grad, hessian, score, weight, a, member, stable_total, u):
    """The likelihood's gradient and curvature (programs only) extended by the log size factor ``u``:
    the anchors' terms in u, and the stable total's."""
    t_score, t_weight = _nb_derivatives(stable_total, u, torch.as_tensor(_STABLE_THETA, dtype=_T))
    cross = (weight * a) @ member  # cells x programs
    corner = weight.sum(1) + t_weight
    grad = torch.cat([grad, (score.sum(1) + t_score)[:, None]], 1)
    top = torch.cat([hessian, cross[:, :, None]], 2)
    bottom = torch.cat([cross, corner[:, None]], 1)[:, None, :]
    return grad, torch.cat([top, bottom], 1)


def _covariance(residual, post_cov, sized=False):
    """Covariance of latents whose posterior means deviate by ``residual`` and whose posterior
    covariances are ``post_cov`` (the M-step of a normal prior). ``sized``: the last latent is the log
    size factor, kept independent of the programs in the prior (how it moves with them differs from
    one perturbation to the next, as the program that takes over the library does)."""
    cov = residual.T @ residual / len(residual) + post_cov.mean(0)
    if sized:
        cov[-1, :-1] = cov[:-1, -1] = 0.0
    return cov
