"""Perturbation mean shifts and per-cell latents of each program read from its anchors' raw counts.

The mean-shift equations of :mod:`._shift_sem` need each perturbation's mean latent shift. Read
from ``log1p`` of normalised counts, that mean is biased when a program's anchors have about one
count per cell or fewer: zeros sit on the log floor, so the mean bends, and in dense screens where
some programs take over the library the other programs' anchors fall to near zero counts in whole
perturbations (docs/benchmarks.md, "Harder screens"). Here the counts are modelled instead, one
program at a time::

    z_c ~ N(mu_p, sd_p^2)                            cell c of perturbation p; controls: mu 0, sd 1
    y_cg ~ NB(mean = s_c exp(b_g + a_g z_c), theta)  the program's anchors g; s_c: size factor

and fit by EM over the cells (a stratified sample of at most 200,000 in larger screens): an
E-step per cell with adaptive Gauss-Hermite quadrature (nodes placed at the cell's posterior
mode, scaled by its curvature), an M-step of the perturbation means and SDs in closed form, and
Newton steps of the anchors' (b_g, a_g). The dispersion
``theta`` of each program is chosen from a grid on the expected log-likelihood. A cell with few
counts then tells its perturbation's mean only what its counts hold (a likelihood, not a floored
log), and ``mu_p`` is in the controls' SD units, as the readout wants.

With ``covariates`` (the cells' latents of every program, from a first fit) the prior of program k
regresses on the other programs' latents ``x_c``: ``z_c ~ N(alpha_p + beta . x_c, sd_p^2)``, one slope
``beta`` for all groups (a mean-shift intervention moves the intercept, not how programs co-vary) and
``mu_p`` the group's mean of the cells' posterior means. This matters where a cell's library, and so
how much its anchors tell, follows another program it moves with: in dense screens a program that
takes over the library leaves the others' anchors nearly empty exactly in the cells where it is high.
One normal per group then lets the informative cells alone set the mean (a selection bias); the
regression tells the uninformative cells where they lie from the programs they move with.

With ``size_slopes`` the prior regresses also on the cell's log size factor (centred within its
group), with a slope per group, shrunk toward the pooled slope: ``z_c ~ N(alpha_p + beta . x_c +
gamma_p (log s_c - mean_p log s), sd_p^2)``. The size factor is measured in every cell, however few
anchor counts it has, and in a dense screen it follows the programs that take over the library, so
it tells an uninformative cell where it lies even when those programs' own latents are poorly read.
The slope differs by group because which program takes the library differs by perturbation (within
one of them a root program's latent and the log size factor correlated at +0.85, within another at
-0.79; docs/benchmarks.md, "Sixth round").

``linear``'s default (``count_prior: joint``) takes only the anchors' models of a fit with one normal
per group from here, and reads the means and latents of all programs at once (:mod:`._joint_counts`):
a full covariance between programs does what the regressions above do, one program at a time.

The fitted model also gives each cell's latent (:func:`count_posterior_means`): its posterior mean
under one normal prior with the mean and variance of all the fitted cells. The prior uses no label,
so a cell of a new perturbation gets its latent the same way; labelled priors (``N(mu_p, sd_p^2)``)
track the truth slightly better on the simulator but would pull a mislabelled cell to its label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

_T = torch.float64
#: Dispersions tried for each program (NB ``theta``; large is near Poisson).
_THETAS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 200.0)
#: Cells the model is fit on, at most (a seeded sample stratified by group): means of groups of a
#: few hundred cells or more are as precise from a sample, and a million-cell screen stays in memory.
_MAX_CELLS = 200_000


@dataclass
class ProgramCounts:
    """One program's fitted count model: its anchors' ``b``, ``a`` and dispersion, and the prior a new
    cell's latent gets (a normal with the mean and variance of the fitted cells' latents)."""

    b: np.ndarray
    a: np.ndarray
    theta: float
    prior_mean: float
    prior_var: float


def count_group_shifts(
    counts: sp.csr_matrix | np.ndarray,
    size_factors: np.ndarray,
    anchor_columns: list[list[int]],
    group: np.ndarray,
    n_groups: int,
    init: np.ndarray,
    *,
    covariates: np.ndarray | None = None,
    size_slopes: bool = False,
    iters: int = 60,
    n_nodes: int = 9,
    tol: float = 1e-3,
) -> tuple[np.ndarray, list[ProgramCounts | None]]:
    """Mean latent of every group (groups x programs), in control SDs, and each program's fitted model.

    Group 0 is the controls (all 0).

    Parameters
    ----------
    counts
        Raw counts, cells x features.
    size_factors
        Each cell's size factor (any scale; the anchors' baselines absorb it).
    anchor_columns
        Per program, the columns of its anchors; a program with fewer than 2 gets the mean of
        ``init`` instead, and None for its model.
    group
        Each cell's group, 0 = controls, 1 .. n_groups - 1 = perturbations.
    init
        Starting latents (cells x programs, control SDs), e.g. the anchor scores. Each fitted
        program is oriented so that its anchors' slopes sum to a positive number (the anchors rise
        with it).
    covariates
        Each cell's latents of every program (cells x programs, e.g. from a first fit): program k's prior
        then regresses on the other programs' columns within each group (see the module docstring).
    size_slopes
        Regress each program's prior also on the cell's log size factor, with a slope per group
        (see the module docstring).
    """
    keep = stratified_sample(group, n_groups)
    counts, size_factors, group, init = sp.csr_matrix(counts)[keep], size_factors[keep], group[keep], init[keep]
    covariates = None if covariates is None else torch.as_tensor(covariates[keep], dtype=_T)
    counts = sp.csc_matrix(counts)
    log_size = torch.as_tensor(np.log(size_factors), dtype=_T)
    g = torch.as_tensor(group, dtype=torch.long)
    out = np.zeros((n_groups, len(anchor_columns)))
    models: list[ProgramCounts | None] = []
    for k, cols in enumerate(anchor_columns):
        if len(cols) < 2:
            sums = np.bincount(group, weights=init[:, k], minlength=n_groups) / np.bincount(group, minlength=n_groups)
            out[:, k] = sums - sums[0]
            models.append(None)
            continue
        Y = torch.as_tensor(counts[:, cols].toarray(), dtype=_T)
        others = None
        if covariates is not None and covariates.shape[1] > 1:
            others = torch.cat([covariates[:, :k], covariates[:, k + 1 :]], 1)
        out[:, k], model = _program_means(
            Y, log_size, g, n_groups, torch.as_tensor(init[:, k], dtype=_T), iters, n_nodes, tol, others, size_slopes
        )
        models.append(model)
    return out, models


def count_posterior_means(
    counts: sp.csr_matrix | np.ndarray,
    size_factors: np.ndarray,
    columns: list[int],
    model: ProgramCounts,
    start: np.ndarray,
    *,
    n_nodes: int = 9,
    chunk: int = 50_000,
) -> np.ndarray:
    """Each cell's posterior mean latent of one program under its fitted count model (label-free prior).

    ``start``: a first guess of each cell's latent (its anchor score), where the search for the
    posterior mode begins. Cells go through in chunks of ``chunk``, so a large screen stays in memory.
    """
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    x, log_w = torch.as_tensor(x, dtype=_T), torch.log(torch.as_tensor(w, dtype=_T))
    b, a = torch.as_tensor(model.b, dtype=_T), torch.as_tensor(model.a, dtype=_T)
    counts = sp.csr_matrix(counts)
    out = np.empty(counts.shape[0])
    for lo in range(0, counts.shape[0], chunk):
        rows = slice(lo, min(lo + chunk, counts.shape[0]))
        Y = torch.as_tensor(counts[rows][:, columns].toarray(), dtype=_T)
        n = Y.shape[0]
        prior_mean = torch.full((n,), model.prior_mean, dtype=_T)
        prior_var = torch.full((n,), model.prior_var, dtype=_T)
        log_size = torch.as_tensor(np.log(size_factors[rows]), dtype=_T)
        mode = torch.as_tensor(start[rows], dtype=_T)
        nodes, post = _posterior_nodes(Y, log_size, b, a, model.theta, prior_mean, prior_var, mode, x, log_w)
        out[rows] = (post * nodes).sum(1).numpy()
    return out


def stratified_sample(group: np.ndarray, n_groups: int, max_cells: int = _MAX_CELLS) -> np.ndarray:
    """Rows to fit on: every cell, or at most an equal share of ``max_cells`` per group (seeded)."""
    if len(group) <= max_cells:
        return np.arange(len(group))
    rng = np.random.default_rng(0)
    share = max(max_cells // n_groups, 200)
    rows = [np.flatnonzero(group == k) for k in range(n_groups)]
    return np.sort(np.concatenate([r if len(r) <= share else rng.choice(r, share, replace=False) for r in rows]))


def _program_means(
    Y, log_size, g, n_groups, z, iters, n_nodes, tol, covariates, size_slopes=False
) -> tuple[np.ndarray, ProgramCounts]:
    """EM of one program's count model (module docstring); returns the group means and the model."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    x, log_w = torch.as_tensor(x, dtype=_T), torch.log(torch.as_tensor(w, dtype=_T))
    theta = 10.0
    b, a = _start_genes(Y, log_size, z, theta)
    n = torch.bincount(g, minlength=n_groups).to(_T)
    within = None if covariates is None else covariates - _group_mean(covariates, g, n)[g]
    size_within = log_size - _group_mean(log_size, g, n)[g] if size_slopes else None
    mu, prior_mean, _ = _prior_step(g, n, z - z[g == 0].mean(), z**2, within, size_within)
    prior_var = torch.ones_like(z)
    mode = z.clone()
    for it in range(iters):
        nodes, post = _posterior_nodes(Y, log_size, b, a, theta, prior_mean, prior_var, mode, x, log_w)
        mode = nodes[:, n_nodes // 2]  # the middle node (x = 0) is the cell's mode
        mean = (post * nodes).sum(1)
        second = (post * nodes**2).sum(1)
        # controls define the unit: mean 0, SD 1; the anchors' (b, a) and every node follow
        shift = mean[g == 0].mean()
        scale = torch.sqrt(torch.clamp(second[g == 0].mean() - shift**2, min=1e-4))
        second = (second - 2 * shift * mean + shift**2) / scale**2
        mean, nodes, mode = (mean - shift) / scale, (nodes - shift) / scale, (mode - shift) / scale
        b, a = b + a * shift, a * scale
        new_mu, prior_mean, group_var = _prior_step(g, n, mean, second, within, size_within)
        prior_var = group_var[g]
        if it % 10 == 0:
            theta = _best_theta(Y, log_size, b, a, nodes, post)
        for _ in range(2):
            b, a = _gene_newton(Y, log_size, nodes, post, b, a, theta)
        change = float((new_mu - mu).abs().max())
        mu = new_mu
        if change < tol:
            break
    # the model is symmetric in (z, a) -> (-z, -a), and with a poor start the EM can settle on the
    # mirror image: orient the program so that its anchors rise with it, as the gene set says they do
    sign = -1.0 if float(a.sum()) < 0 else 1.0
    # the prior of a new cell: the fitted cells' latents, as one normal
    centre = float(mean.mean())
    return sign * (mu - mu[0]).numpy(), ProgramCounts(
        b.numpy(), sign * a.numpy(), float(theta), sign * centre, float(second.mean()) - centre**2
    )


def _group_mean(values, g, n):
    """Mean of ``values`` (cells, or cells x columns) within each group."""
    if values.ndim == 1:
        return torch.bincount(g, weights=values, minlength=len(n)) / n
    return torch.stack([torch.bincount(g, weights=col, minlength=len(n)) for col in values.T], 1) / n[:, None]


def _prior_step(g, n, mean, second, others, size):
    """M-step of the prior from the cells' posterior moments: the group means, each cell's prior mean and
    each group's residual variance. ``others``: covariates centred within groups (or None), on which the
    prior regresses with one slope for all groups (a mean-shift intervention moves the intercept only);
    ``size``: the log size factor centred within groups (or None), with a slope per group
    (:func:`_size_slopes`)."""
    group_mean = _group_mean(mean, g, n)
    prior_mean = group_mean[g]
    target = mean - prior_mean
    fit_others, fit_size = torch.zeros_like(mean), torch.zeros_like(mean)
    for _ in range(1 if size is None or others is None else 3):  # backfitting of the two terms
        if others is not None:
            fit_others = others @ torch.linalg.lstsq(others, (target - fit_size)[:, None]).solution[:, 0]
        if size is not None:
            fit_size = _size_slopes(g, n, size, target - fit_others)[g] * size
    prior_mean = prior_mean + fit_others + fit_size
    residual = _group_mean(second - 2 * mean * prior_mean + prior_mean**2, g, n)
    return group_mean, prior_mean, torch.clamp(residual, min=1e-4)


def _size_slopes(g, n, size, target, prior_cells: float = 30.0):
    """Each group's least-squares slope of ``target`` on ``size`` (both centred within groups), shrunk
    toward the pooled slope by ``prior_cells`` cells' worth of the pooled data."""
    sxy, sxx = (
        torch.bincount(g, weights=size * target, minlength=len(n)),
        torch.bincount(g, weights=size**2, minlength=len(n)),
    )
    pooled = sxy.sum() / torch.clamp(sxx.sum(), min=1e-12)
    weight = prior_cells * sxx.sum() / n.sum()
    return (sxy + weight * pooled) / (sxx + weight)


def _posterior_nodes(Y, log_size, b, a, theta, prior_mean, prior_var, mode, x, log_w):
    """Quadrature nodes (cells x nodes) around each cell's posterior mode and their posterior weights."""
    for _ in range(8):  # Newton on the (log-concave) posterior of each cell
        score, weight = _nb_derivatives(Y, log_size[:, None] + b + mode[:, None] * a, theta)
        grad = (score * a).sum(1) - (mode - prior_mean) / prior_var
        curvature = (weight * a**2).sum(1) + 1 / prior_var
        mode = mode + (grad / curvature).clamp(-2, 2)
    spread = np.sqrt(2) / torch.sqrt(curvature)
    nodes = mode[:, None] + spread[:, None] * x
    eta = log_size[:, None, None] + b + nodes[:, :, None] * a
    log_post = _nb_loglik(Y[:, None, :], eta, theta).sum(2) - (nodes - prior_mean[:, None]) ** 2 / (
        2 * prior_var[:, None]
    )
    return nodes, torch.softmax(log_post + log_w + x**2, dim=1)


def _start_genes(Y, log_size, z, theta):
    """Anchors' (b, a) by a Poisson/NB regression on the starting latents."""
    b = torch.log((Y.sum(0) + 0.5) / torch.exp(log_size).sum())
    a = torch.zeros(Y.shape[1], dtype=_T)
    ones = torch.ones(len(z), 1, dtype=_T)
    for _ in range(20):
        b, a = _gene_newton(Y, log_size, z[:, None], ones, b, a, theta)
    return b, a


def _gene_newton(Y, log_size, nodes, post, b, a, theta):
    """One damped Newton step of each anchor's (b_g, a_g) on the posterior-weighted nodes."""
    score, weight = _nb_derivatives(Y[:, None, :], log_size[:, None, None] + b + nodes[:, :, None] * a, theta)
    score, weight, z = score * post[:, :, None], weight * post[:, :, None], nodes[:, :, None]
    gb, ga = score.sum((0, 1)), (score * z).sum((0, 1))
    hbb, hba, haa = weight.sum((0, 1)), (weight * z).sum((0, 1)), (weight * z**2).sum((0, 1)) + 1e-6
    det = hbb * haa - hba**2
    return b + ((haa * gb - hba * ga) / det).clamp(-1, 1), a + ((hbb * ga - hba * gb) / det).clamp(-1, 1)


def _best_theta(Y, log_size, b, a, nodes, post) -> float:
    """The dispersion of :data:`_THETAS` with the highest expected log-likelihood of the anchors."""
    eta = log_size[:, None, None] + b + nodes[:, :, None] * a
    Yn = Y[:, None, :]
    scores = []
    for theta in _THETAS:
        t = torch.as_tensor(theta, dtype=_T)
        full = torch.lgamma(Yn + t) - torch.lgamma(t) + t * torch.log(t) + _nb_loglik(Yn, eta, theta)
        scores.append(float((full.sum(2) * post).sum()))
    return _THETAS[int(np.argmax(scores))]


def _nb_loglik(y, eta, theta):
    """log NB(y | mean e^eta, theta), up to terms free of eta and theta."""
    return y * eta - (y + theta) * torch.logaddexp(torch.log(torch.as_tensor(theta, dtype=_T)), eta)


def _nb_derivatives(y, eta, theta):
    """First and (minus) second derivative of the NB log-likelihood in eta."""
    mu = torch.exp(eta)
    return (y - mu) * theta / (theta + mu), (y + theta) * theta * mu / (theta + mu) ** 2
