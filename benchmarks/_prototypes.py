"""Prototypes of fixes for harder screens (issue 13), measured by ``benchmarks/harder_screens.py``.

Nothing here is used by the package: each prototype is a row of the benchmark, to be ported into
``crl_pipe.models`` once it has earned it (docs/benchmarks.md, "Harder screens").
"""

from __future__ import annotations

import numpy as np
import torch

from crl_pipe.models import CRLData, LinearSEM
from crl_pipe.models._shift_sem import SHIFT_SEM_DEFAULTS, _assign_targets, _fit_graph, alternate


# -- the current read-out, through one adapter (the models package is being restructured) ---------------
def group_shifts(scores: np.ndarray, data: CRLData) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels, mean shift of ``scores`` per perturbation against the controls, and cells per perturbation."""
    labels = data.perturbations
    base = scores[data.is_control].mean(axis=0)
    shifts = np.array([scores[data.intervention == lab].mean(axis=0) - base for lab in labels])
    counts = np.array([(data.intervention == lab).sum() for lab in labels], dtype=float)
    return labels, shifts, counts


def current_readout(shifts, counts, data: CRLData, labels, **params) -> tuple[np.ndarray, np.ndarray]:
    """``linear``'s targets and graph from mean shifts: sink-first peeling, graph equations, reassignment."""
    n_targets = [max(1, len(data.targets.get(lab, ()))) for lab in labels]
    kw = {k: SHIFT_SEM_DEFAULTS[k] for k in ("edge_threshold", "ridge", "max_iter")} | params
    return alternate(shifts, counts, n_targets, **kw)


def graph_equations(shifts, counts, targets, order, ridge: float = 1e-3, threshold: float = 0.15) -> np.ndarray:
    """``linear``'s graph equations given targets and a causal order (sources first): B[j, i], i -> j."""
    return _fit_graph(shifts, counts, targets, order, ridge, threshold)


PROTOTYPES: dict = {}


# -- prototype 1: a count factor model with an anchor-masked decoder, library composition modelled -------
def _masks(data: CRLData, features: list[str], programs: list[str]):

    index = {f: i for i, f in enumerate(features)}
    mask = torch.ones(len(features), len(programs), dtype=torch.float64)
    for k, p in enumerate(programs):
        rows = [index[g] for g in data.anchors[p] if g in index]
        mask[rows] = 0.0
        mask[rows, k] = 1.0
    return mask, mask.sum(1) == 1


def _nb_moments(C, eta, dispersion):
    """Score d loglik / d eta and Fisher weight of NB (Poisson when ``dispersion`` is None) counts."""
    mu = torch.exp(eta)
    if dispersion is None:
        return C - mu, mu
    return (C - mu) / (1 + mu / dispersion), mu / (1 + mu / dispersion)


def _damped(step):

    return step / torch.clamp(step.abs().max(1, keepdim=True).values, min=1.0)


def _gene_step(C, o, z, b, W, mask, pen, dispersion, sparsity=0.0, anchor=None):
    """One damped Newton step of every gene's (b_g, W_g) given the cells' offsets and latents; then
    non-anchor loadings soft-thresholded by ``sparsity`` standard errors (sparse mixing: most genes
    depend on few programs, so a loading every gene shares is a misplaced cell offset)."""

    ones_n = torch.ones(len(o), 1, dtype=torch.float64)
    m1 = torch.cat([torch.ones(len(b), 1, dtype=torch.float64), mask], dim=1)
    score, weight = _nb_moments(C, o[:, None] + b + z @ W.T, dispersion)
    X = torch.cat([ones_n, z], dim=1)
    grad = (score.T @ X - torch.cat([0 * b[:, None], pen * W], dim=1)) * m1
    H = torch.einsum("ng,nk,nl->gkl", weight, X, X)
    H = H + torch.diag_embed(torch.cat([1e-6 + 0 * b[:, None], pen], dim=1))
    H = H * m1[:, :, None] * m1[:, None, :] + torch.diag_embed(1 - m1)
    step = _damped(torch.linalg.solve(H, grad.unsqueeze(-1)).squeeze(-1))
    W = (W + step[:, 1:]) * mask
    if sparsity > 0:
        se = 1 / torch.sqrt(torch.diagonal(H, dim1=1, dim2=2)[:, 1:])
        shrunk = torch.sign(W) * torch.clamp(W.abs() - sparsity * se, min=0)
        W = torch.where(anchor[:, None], W, shrunk)
    return b + step[:, 0], W


def _cell_step(C, o, z, b, W, prior_mean, prior_precision, dispersion, offsets_only=False, return_info=False):
    """One damped Newton step of every cell's (o_i, z_i) given the genes; prior N(prior_mean_i, P^-1) on z_i."""
    score, weight = _nb_moments(C, o[:, None] + b + z @ W.T, dispersion)
    if offsets_only:
        return o + (score.sum(1) / weight.sum(1)).clamp(-1, 1), z
    W1 = torch.cat([torch.ones(len(b), 1, dtype=torch.float64), W], dim=1)
    grad = score @ W1 - torch.cat([0 * o[:, None], (z - prior_mean) @ prior_precision], dim=1)
    H = torch.einsum("ng,gk,gl->nkl", weight, W1, W1)
    # information on z with the offset profiled out (Schur complement), for the prior's M-step
    info = H[:, 1:, 1:] - H[:, 1:, :1] @ H[:, :1, 1:] / H[:, :1, :1]
    H[:, 1:, 1:] += prior_precision
    step = _damped(torch.linalg.solve(H, grad.unsqueeze(-1)).squeeze(-1))
    if return_info:
        return o + step[:, 0], z + step[:, 1:], info
    return o + step[:, 0], z + step[:, 1:]


def _prior_update(z, info, P, m_old, onehot, is_ctrl_label):
    """Laplace-EM M-step of the label means and the shared covariance, solved at its fixed point.

    Per cell the posterior mean is z_i = S_i (I_i zhat_i + P m) with S_i = (I_i + P)^-1 (I_i: the
    information of its counts), so label means of posterior means move toward the truth only by
    the gain S_i I_i per round, slowly for weakly measured programs. Solving the fixed point,
    m_p = (sum_i S_i I_i)^-1 sum_i (z_i - S_i P m_old), removes that bias in one step; the
    covariance adds the posterior covariances S_i to the spread of the posterior means."""

    K = z.shape[1]
    S = torch.linalg.inv(info + P)
    gain = S @ info
    label = onehot.argmax(1)
    m = m_old.clone()
    for p in range(onehot.shape[1]):
        if bool(is_ctrl_label[p]):
            continue
        rows = label == p
        rhs = (z[rows] - (S[rows] @ (P @ m_old[p]).unsqueeze(-1)).squeeze(-1)).sum(0)
        m[p] = torch.linalg.solve(gain[rows].sum(0), rhs)
    resid = z - m[label]
    cov = (resid.T @ resid + S.sum(0)) / len(z) + 1e-4 * torch.eye(K, dtype=torch.float64)
    return m, torch.linalg.inv(cov)


def _label_prior(z, onehot, is_ctrl_label, full: bool):
    """Label means of z (controls at 0) and the precision of the pooled within-label covariance (or I)."""
    m = (onehot.T @ z) / onehot.sum(0)[:, None]
    m = torch.where(is_ctrl_label[:, None], torch.zeros_like(m), m)
    K = z.shape[1]
    if not full:
        return m, torch.eye(K, dtype=torch.float64)
    resid = z - (onehot.T @ z / onehot.sum(0)[:, None])[onehot.argmax(1)]
    cov = resid.T @ resid / len(z) + 1e-3 * torch.eye(K, dtype=torch.float64)
    return m, torch.linalg.inv(cov)


def _nll(C, o, z, b, W, dispersion):

    eta = o[:, None] + b + z @ W.T
    th = dispersion or 1e8
    return -float((C * eta - (C + th) * torch.log(th + torch.exp(eta))).sum()) / len(o)


def _reanchor(C, o, z, b, W, mask, anchor, pen, dispersion, data, features, programs, steps: int = 4):
    """Undo a linear mixing of the latents that the anchor mask only slowly corrects.

    If the latents are z = M z_true, program k's anchors, let free on every latent, load on the row
    k of M^-1 (times their own loading). So: fit the anchors' loadings without the mask, take each
    program's dominant loading direction r_k (scaled so r_kk = 1), and map z -> R z with R = [r_k];
    the other genes' loadings follow (W -> W R^-1) and keep their predictions."""

    free = torch.where(anchor[:, None], torch.ones_like(mask), mask)
    Wf = W.clone()
    for _ in range(steps):
        _, Wf = _gene_step(C, o, z, b, Wf, free, pen, dispersion)
    index = {f: i for i, f in enumerate(features)}
    R = torch.eye(len(programs), dtype=torch.float64)
    for k, p in enumerate(programs):
        rows = [index[g] for g in data.anchors[p] if g in index]
        _, _, vt = torch.linalg.svd(Wf[rows], full_matrices=False)
        r = vt[0] if vt[0, k] != 0 else R[k]
        R[k] = r / r[k]
    z_new = z @ R.T
    W_new = (W @ torch.linalg.inv(R)) * mask
    return z_new, W_new


def _sem_means(m, onehot, is_ctrl_label, data: CRLData, labels):
    """Label means projected on a latent SEM: m_p = (I - B)^-1 e_t s_p, one target t per single label.

    Targets, order and B come from the graph equations on the current means (in control SDs of the
    current latents); doubles keep their free means."""

    ctrl_rows = onehot[:, is_ctrl_label].sum(1) > 0
    sd = torch.ones(m.shape[1], dtype=torch.float64)
    pert = [i for i, lab in enumerate(labels) if not bool(is_ctrl_label[i])]
    plabels = [labels[i] for i in pert]
    shifts = (m[pert] / sd).numpy()
    counts = onehot.sum(0)[pert].numpy()
    n_targets = [max(1, len(data.targets.get(lab, ()))) for lab in plabels]
    B, targets = current_readout(shifts, counts, data, plabels)
    targets = _assign_targets(shifts, B, n_targets)
    T = np.linalg.inv(np.eye(B.shape[0]) - B)
    exo = shifts @ (np.eye(B.shape[0]) - B).T
    proj = (exo * targets) @ T.T
    out = m.clone()
    for row, i in enumerate(pert):
        if n_targets[row] == 1:
            out[i] = torch.from_numpy(proj[row])
    del ctrl_rows
    return out


def count_factor_latents(
    data: CRLData,
    *,
    seed: int = 0,
    rounds: int = 30,
    warmup: int = 10,
    final_steps: int = 12,
    fit_cells: int = 3000,
    ridge: float = 1.0,
    dispersion: float | None = 10.0,
    prior: str = "full",
    init: np.ndarray | None = None,
    decoder: tuple | None = None,
    anchors_only: bool = False,
    sparsity: float = 0.0,
    sem_prior: bool = False,
    em: bool = True,
    reanchor_every: int = 10,
    verbose: bool = False,
    return_nll: bool = False,
):
    """Per-cell latents (control SDs) of a negative-binomial factor model with a free offset per cell.

    c_ig ~ NB(exp(o_i + b_g + W_g z_i), dispersion)      genes that no guide targets
    z_i ~ N(m_label(i), S),  m_control = 0;  o_i free
    The free offset o_i carries the library size *and* its composition (when a program's genes
    take over a cell's counts every other gene drops): estimated from all genes together rather
    than divided out of each, it cannot leak into one program's anchors. Zeros are counts, not
    log1p floors. W[g, k] = 0 where g is an anchor of a program other than k (anchors load on
    their program alone, which pins latent k to program k); a ridge on non-anchor loadings.
    ``prior="full"``: S is the pooled within-label covariance of the current latents (empirical
    Bayes; an identity S pulls correlated programs apart and mixes them through the free
    loadings), ``"identity"``: S = I.
    Fit: the decoder of the starting latents (``linear``'s anchor scores) over ``warmup`` Newton
    steps, then ``rounds`` of alternating Newton steps (genes | cells, both concave) on a
    label-stratified sample of ``fit_cells`` cells, then ``final_steps`` per-cell steps for every
    cell with the decoder fixed. ``decoder``: (b, W) given (an oracle).
    """

    rng = np.random.default_rng(seed)
    targeted = {g for genes in data.targets.values() for g in genes}
    anchor_set = {g for genes in data.anchors.values() for g in genes}
    keep = [i for i, f in enumerate(data.features) if f not in targeted and (not anchors_only or f in anchor_set)]
    C_all = torch.tensor(data.counts[:, keep].toarray(), dtype=torch.float64)
    features = [data.features[i] for i in keep]
    programs = list(data.anchors)
    mask, anchor = _masks(data, features, programs)
    pen = ridge * min(fit_cells, len(data.intervention)) * (~anchor).double()[:, None] * mask  # per cell
    if init is None:
        init = LinearSEM().fit(data, seed=seed).get_latent_representation(data)[programs].to_numpy()
    labels = sorted(set(data.intervention))
    group = np.array([labels.index(lab) for lab in data.intervention])
    is_ctrl_label = torch.tensor([lab in set(data.intervention[data.is_control]) for lab in labels])
    share = min(1.0, fit_cells / len(group))
    fit = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(group == g), max(2, int(round(share * (group == g).sum()))), replace=False)
        for g in range(len(labels))
    ]))  # fmt: skip
    onehot_all = torch.nn.functional.one_hot(torch.tensor(group), len(labels)).double()
    z_all = torch.tensor(init, dtype=torch.float64)

    C, z, onehot = C_all[fit], z_all[fit], onehot_all[fit]
    if decoder is None:
        b = torch.log((C.sum(0) + 1) / (C.sum() + C.shape[1]))
        W = torch.zeros(C.shape[1], len(programs), dtype=torch.float64)
    else:
        b, W = (torch.as_tensor(a, dtype=torch.float64) for a in decoder)
    o = torch.log(C.sum(1) + 1) - torch.logsumexp(b + z @ W.T, dim=1)
    for r in range(warmup + rounds if decoder is None else 0):
        for _ in range(2 if r < warmup else 1):
            o, _ = _cell_step(C, o, z, b, W, None, None, dispersion, offsets_only=True)
            b, W = _gene_step(C, o, z, b, W, mask, pen, dispersion, sparsity if r >= warmup else 0.0, anchor)
        if r >= warmup:
            m, P = _label_prior(z, onehot, is_ctrl_label, prior == "full")
            if sem_prior:
                m = _sem_means(m, onehot, is_ctrl_label, data, labels)
            o, z = _cell_step(C, o, z, b, W, m[onehot.argmax(1)], P, dispersion)
        if reanchor_every and r >= warmup and (r - warmup) % reanchor_every == reanchor_every - 1:
            z, W = _reanchor(C, o, z, b, W, mask, anchor, pen, dispersion, data, features, programs)
        if verbose and r % 5 == 4:
            print(r, round(_nll(C, o, z, b, W, dispersion), 2), flush=True)
    # every cell starts from the linear map that took the sample's starting latents to its fit
    X0 = torch.cat([torch.ones(len(fit), 1, dtype=torch.float64), z_all[fit]], dim=1)
    coef = torch.linalg.lstsq(X0, z).solution
    z_fit = z
    z = torch.cat([torch.ones(len(z_all), 1, dtype=torch.float64), z_all], dim=1) @ coef
    z[fit] = z_fit
    C = C_all
    o = torch.log(C.sum(1) + 1) - torch.logsumexp(b + z @ W.T, dim=1)
    for _ in range(3):  # cells toward their modes under the sample's prior before the prior moves
        o, z = _cell_step(C, o, z, b, W, m[onehot_all.argmax(1)], P, dispersion)
    m, P = _label_prior(z, onehot_all, is_ctrl_label, prior == "full")
    for step in range(final_steps):
        if not em:
            m, P = _label_prior(z, onehot_all, is_ctrl_label, prior == "full")
        if sem_prior:
            m = _sem_means(m, onehot_all, is_ctrl_label, data, labels)
        o, z, info = _cell_step(C, o, z, b, W, m[onehot_all.argmax(1)], P, dispersion, return_info=True)
        if em and step >= 2 and step % 2 == 0:  # cells near their modes: update the prior
            m, P = _prior_update(z, info, P, m, onehot_all, is_ctrl_label)
    eta = o[:, None] + b + z @ W.T
    th = dispersion or 1e8
    nll = -float((C * eta - (C + th) * torch.log(th + torch.exp(eta))).sum()) / len(o)
    out = z.numpy()
    ctrl = data.is_control
    sd = out[ctrl].std(axis=0)
    out = (out - out[ctrl].mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if verbose:
        print(f"count factor model: NLL per cell {nll:.2f}", flush=True)
    return (out, nll) if return_nll else out


# -- prototype 2: targets and causal order that minimise the graph equations' residual --------------------
def _node_cost(shifts, weights, free, j, parents, ridge):
    """Weighted residual of d[j] = B[j, parents] d[parents] over perturbations that do not target j, and B[j]."""
    rows = free[:, j]
    y = shifts[rows, j] * weights[rows]
    if parents.size == 0 or not rows.any():
        return float(y @ y), np.zeros(0)
    X = shifts[rows][:, parents] * weights[rows, None]
    lam = ridge * max(float(np.sum(weights[rows] ** 2)), 1.0)
    beta = np.linalg.solve(X.T @ X + lam * np.eye(parents.size), X.T @ y)
    r = y - X @ beta
    return float(r @ r), beta


def best_order(shifts, counts, targets, ridge: float = 1e-3, exact_up_to: int = 12) -> list[int]:
    """Causal order (sources first) minimising the summed residual of the graph equations, given targets.

    Exact by dynamic programming over subsets (placing j after the set S costs j's residual with
    parents S) for up to ``exact_up_to`` programs; beyond, sink-first greedy: the last place goes
    to the program whose equation on all the others fits best, and so on.
    """
    K = shifts.shape[1]
    w, free = np.sqrt(counts), ~targets
    if K > exact_up_to:
        rest, sinks = list(range(K)), []
        while rest:
            costs = [_node_cost(shifts, w, free, j, np.array([i for i in rest if i != j]), ridge)[0] for j in rest]
            sinks.append(rest.pop(int(np.argmin(costs))))
        return sinks[::-1]
    full = (1 << K) - 1
    cost = np.full(1 << K, np.inf)
    cost[0] = 0.0
    last = np.zeros(1 << K, dtype=int)
    for S in range(full):
        if not np.isfinite(cost[S]):
            continue
        parents = np.array([i for i in range(K) if S >> i & 1], dtype=int)
        for j in range(K):
            if S >> j & 1:
                continue
            T = S | (1 << j)
            c = cost[S] + _node_cost(shifts, w, free, j, parents, ridge)[0]
            if c < cost[T]:
                cost[T], last[T] = c, j
    order, S = [], full
    while S:
        order.append(int(last[S]))
        S ^= 1 << int(last[S])
    return order[::-1]


def order_readout(shifts, counts, data: CRLData, labels, *, ridge=1e-3, threshold=0.15, max_iter=10, init="peel"):
    """Targets, order and graph by alternating: order by :func:`best_order` given the targets, B by the
    graph equations on it, targets = largest exogenous shift |(I - B) d|. Starts from ``linear``'s targets."""
    n_targets = [max(1, len(data.targets.get(lab, ()))) for lab in labels]
    _, targets = current_readout(shifts, counts, data, labels)
    seen = []
    for _ in range(max_iter):
        order = best_order(shifts, counts, targets, ridge)
        B = _fit_graph(shifts, counts, targets, order, ridge, threshold)
        new = _assign_targets(shifts, B, n_targets)
        if any(np.array_equal(new, s) for s in seen) or np.array_equal(new, targets):
            break
        seen.append(targets)
        targets = new
    return B, targets
