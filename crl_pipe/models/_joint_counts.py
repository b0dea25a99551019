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
counts do show, as the programs co-vary within perturbations. EM fits ``mu_p`` and ``Sigma`` with a
Laplace posterior per cell (a K-dimensional Newton search, whose curvature gives the posterior
covariance). The anchors' ``(b, a, theta)`` start from the per-program fits; with ``refit_anchors``
the M-step refits them too, on the log-likelihood expected under those posteriors. The per-program
fits read a program alone with the measured size factor, and where programs take over the library
they get its level against the other programs' and its dispersion wrong: on a K = 20 screen at 30 %
density (docs/benchmarks.md, tenth round) the simulator's own anchor models cut the error of the
perturbation means threefold, and the refit, from the per-program fits, twofold.

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
    refit_anchors: bool = False,
    iters: int = 40,
    tol: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, JointAnchors, np.ndarray]:
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
    refit_anchors
        Refit the anchors' ``(b, a, theta)`` in the M-step (module docstring). Each program's latent
        keeps the location and scale of the per-program model: the mean of its anchors' ``b`` and ``a``
        stays where it was.

    Returns
    -------
    The group means, and the mean and covariance of one normal over all cells' latents (the label-free
    prior of :func:`joint_posterior_means`), in the per-program models' units; with ``stable_total``
    the log size factor is their last entry. Then the anchors' models (refitted or as given), and per
    group and program the share of the program's variance that the group's cells resolve: one less
    their mean posterior variance over the latent's control variance (near 0 where a group's cells are
    read from the prior alone, as where another program took their whole library).
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
        if refit_anchors:
            parts, z, post_cov = _anchor_step(Y, log_size, parts, z, post_cov)
        new_mu = _group_mean(z, g, n)
        sigma = _covariance(z - new_mu[g], post_cov, sized=stable_total is not None)
        change = float((new_mu - mu).abs().max())
        mu = new_mu
        if change < tol:
            break
    control = g == 0
    # the control SD of the latent itself: of the posterior means plus the posterior variance
    post_var = torch.diagonal(post_cov, dim1=1, dim2=2)
    sd = torch.sqrt(z[control].var(0) + post_var[control].mean(0))
    K = init.shape[1]
    resolved = (1.0 - _group_mean(post_var, g, n) / sd**2).clamp(0.0, 1.0)[:, :K].numpy()
    means = ((mu - mu[0]) / sd)[:, :K].numpy()
    centre = z.mean(0)
    total = _covariance(z - centre, post_cov, sized=stable_total is not None)
    program, b, a, theta = (part.numpy() for part in parts[:4])
    return means, centre.numpy(), total.numpy(), JointAnchors(program, b, a, theta), resolved


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


def _anchor_step(Y, log_size, parts, z, post_cov):
    """The M-step of the anchor models: one Newton step of every anchor's ``(b, a)`` and of each program's
    dispersion on the log-likelihood expected under the cells' (Laplace) posteriors, then each program's
    latent moved by the affine map that keeps the mean of its anchors' ``b`` and ``a`` where they were.

    Expected, not at the posterior modes: where a program's anchors hold no counts its cells' modes sit
    near the prior, and slopes fitted to them would come out steep; over the posterior each anchor's
    log mean ``eta`` is normal, and a few Gauss-Hermite nodes take the expectation. ``(b, a)`` and a
    program's location and scale trade off one for one; the map pins them, so the latents stay in the
    per-program models' units."""
    program, b, a, theta, stable_total = parts
    K = z.shape[1] - (stable_total is not None)
    var_z = torch.diagonal(post_cov, dim1=1, dim2=2)[:, program]  # cells x anchors
    if stable_total is None:
        offset, var_u, cov_zu = log_size[:, None], 0.0, 0.0
    else:
        offset, var_u, cov_zu = z[:, K:], post_cov[:, K, K][:, None], post_cov[:, K, :K][:, program]
    x = z[:, program]
    eta = offset + b + x * a
    sd = torch.sqrt(a**2 * var_z + var_u + 2 * a * cov_zu).clamp_min(1e-9)
    slope = (a * var_z + cov_zu) / sd  # E[z | eta] = x + slope * node
    spread = (var_z - slope**2).clamp_min(0.0)  # Var(z | eta)
    y_theta = Y + theta
    # the dispersion's derivatives in log theta: the digamma terms do not depend on the mean (and are 0 at y = 0)
    g_t = theta * (torch.digamma(y_theta) - torch.digamma(theta)).sum(0)
    h_t = g_t + theta**2 * (torch.polygamma(1, y_theta) - torch.polygamma(1, theta)).sum(0)
    g_b = g_a = h_bb = h_ba = h_aa = 0.0
    for node, w in zip(_HERMITE_NODES, _HERMITE_WEIGHTS, strict=True):
        score, weight = _nb_derivatives(Y, eta + sd * node, theta)
        mu = torch.exp(eta + sd * node)
        inv = 1.0 / (theta + mu)
        z_node = x + slope * node
        g_b, g_a = g_b + w * score.sum(0), g_a + w * (score * z_node).sum(0)
        h_bb, h_ba = h_bb + w * weight.sum(0), h_ba + w * (weight * z_node).sum(0)
        h_aa = h_aa + w * (weight * (z_node**2 + spread)).sum(0)
        d_theta = (torch.log(theta * inv) + (mu - Y) * inv).sum(0)
        g_t = g_t + w * theta * d_theta
        h_t = h_t + w * (theta * d_theta + theta**2 * (1 / theta - 2 * inv + y_theta * inv**2).sum(0))
    det = h_bb * h_aa - h_ba**2
    new_b = b + ((h_aa * g_b - h_ba * g_a) / det).clamp(-1, 1)
    new_a = a + ((h_bb * g_a - h_ba * g_b) / det).clamp(-0.5, 0.5)

    def sum_k(v):  # over each program's anchors
        return torch.bincount(program, weights=v, minlength=K)

    step = (sum_k(g_t) / sum_k(-h_t).clamp_min(1e-9)).clamp(-0.5, 0.5)  # one dispersion per program
    theta = torch.exp((torch.log(theta) + step[program]).clamp(np.log(0.5), np.log(1e4)))
    alpha = sum_k(new_a) / sum_k(a)  # z'' = alpha z + beta, a'' = a' / alpha, b'' = b' - a'' beta
    new_a = new_a / alpha[program]
    beta = (sum_k(new_b) - sum_k(b)) / sum_k(new_a)
    new_b = new_b - new_a * beta[program]
    if not all(torch.isfinite(v).all() for v in (new_b, new_a, theta, alpha, beta)):
        return parts, z, post_cov  # a degenerate step (a program whose cells all sit at one value): keep the last
    scale = torch.cat([alpha, torch.ones(z.shape[1] - K, dtype=_T)])
    shift = torch.cat([beta, torch.zeros(z.shape[1] - K, dtype=_T)])
    z = z * scale + shift
    post_cov = post_cov * scale[:, None] * scale[None, :]
    return (program, new_b, new_a, theta, stable_total), z, post_cov


#: Gauss-Hermite nodes and weights for an expectation over a standard normal (three: with five, the
#: error of the means on the tenth round's K = 20 dense seed 6 was 0.101 instead of 0.103; docs/benchmarks.md).
_HERMITE_NODES, _HERMITE_WEIGHTS = (torch.as_tensor(v, dtype=_T) for v in np.polynomial.hermite_e.hermegauss(3))
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()


def _covariance(residual, post_cov, sized=False):
    """Covariance of latents whose posterior means deviate by ``residual`` and whose posterior
    covariances are ``post_cov`` (the M-step of a normal prior). ``sized``: the last latent is the log
    size factor, kept independent of the programs in the prior (how it moves with them differs from
    one perturbation to the next, as the program that takes over the library does)."""
    cov = residual.T @ residual / len(residual) + post_cov.mean(0)
    if sized:
        cov[-1, :-1] = cov[:-1, -1] = 0.0
    return cov
