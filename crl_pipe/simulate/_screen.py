"""A Perturb-seq screen with a known latent causal graph.

Generative model (one cell):
    eps ~ N(0, 1)^K;   eps_t += shift, eps_t *= noise_scale   for each targeted program t
    z = B z + eps       (linear SEM over K programs on a random DAG; weights standardised)
    log mu_g = b_g + sum_k A_gk h(z)_k          (h = identity, or a saturating nonlinearity)
    counts_g ~ NegBinom(mean = L * softmax(log mu)_g, dispersion)   with library size L ~ LogNormal
Each program has ``anchors_per_program`` anchor genes that load on it alone; "mixed" genes load on
one to three programs, except 30% of them, housekeeping genes that dominate the library
and depend on no program (so library-size normalisation barely couples programs); each perturbed ("regulator") gene is knocked down in its own cells and
shifts one program (CRISPRi-like soft intervention: the mechanism of every other program is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import ConfigError

CONTROL_LABEL = "non-targeting"


@dataclass
class SimulatedScreen:
    """The simulated counts plus everything a method should recover."""

    adata: ad.AnnData
    gene_sets: dict[str, list[str]]
    graph: pd.DataFrame  # source, target, weight (standardised units)
    targets: pd.DataFrame  # intervention, program
    latents: pd.DataFrame  # sample_id + one column per program


def simulate_screen(
    *,
    n_programs: int = 6,
    n_genes: int = 200,
    anchors_per_program: int = 8,
    n_control: int = 3000,
    cells_per_perturbation: int = 400,
    guides_per_program: int = 1,
    n_doubles: int = 3,
    edge_density: float = 0.5,
    mixing: str = "linear",
    shift: float = -2.0,
    noise_scale: float = 0.8,
    mean_library_size: float = 5000.0,
    dispersion: float = 10.0,
    min_edge_weight: float = 0.5,
    max_edge_weight: float = 1.5,
    seed: int = 0,
) -> SimulatedScreen:
    """Simulate a CRISPR screen whose latent programs follow a linear SEM on a random DAG.

    Parameters
    ----------
    n_programs
        Number of latent programs K.
    n_genes
        Total genes measured (anchors + regulators + mixed genes); must leave room for them.
    anchors_per_program
        Genes that depend on one program alone (>= 2 makes programs identifiable by anchors).
    n_control, cells_per_perturbation
        Cells with a non-targeting guide, and cells per perturbation (single and double).
    guides_per_program
        Perturbed genes per program; each is its own perturbation label.
    n_doubles
        Double perturbations ``A+B`` on two different programs.
    edge_density
        Probability of each forward edge of a random topological order.
    mixing
        ``"linear"`` (log-expression linear in the programs) or ``"nonlinear"`` (saturating
        programs and pairwise interactions on mixed genes).
    shift
        Mean shift of the targeted program's noise, in noise standard deviations.
    noise_scale
        Factor on the targeted program's noise standard deviation (knockdowns shrink variance).
    mean_library_size
        Mean UMIs per cell.
    dispersion
        Negative-binomial dispersion (larger = closer to Poisson).
    min_edge_weight, max_edge_weight
        Range of |edge weight| before standardisation.
    seed
        Seed of every random draw.
    """
    K = n_programs
    n_regulators = K * guides_per_program
    n_mixed = n_genes - K * anchors_per_program - n_regulators
    if K < 2:
        raise ConfigError(f"simulate: n_programs must be at least 2, got {K}")
    if anchors_per_program < 1 or n_mixed < 0:
        raise ConfigError(
            f"simulate: n_genes={n_genes} is too small for {K} programs x {anchors_per_program} anchors"
            f" + {n_regulators} perturbed genes"
        )
    if mixing not in ("linear", "nonlinear"):
        raise ConfigError(f"simulate: mixing must be 'linear' or 'nonlinear', got {mixing!r}")
    rng = np.random.default_rng(seed)
    programs = [f"P{k + 1}" for k in range(K)]

    B, scale = _random_dag(K, edge_density, min_edge_weight, max_edge_weight, rng)
    regulators = [f"REG{r + 1}" for r in range(n_regulators)]
    reg_program = {reg: r // guides_per_program for r, reg in enumerate(regulators)}
    conditions = _conditions(regulators, reg_program, n_doubles, rng)

    labels, target_sets = [CONTROL_LABEL] * n_control, [()] * n_control
    for label, regs in conditions:
        labels += [label] * cells_per_perturbation
        target_sets += [regs] * cells_per_perturbation
    n_cells = len(labels)

    eps = rng.standard_normal((n_cells, K))
    knocked = np.zeros((n_cells, n_regulators), dtype=bool)
    for c, regs in enumerate(target_sets):
        for reg in regs:
            k = reg_program[reg]
            eps[c, k] = eps[c, k] * noise_scale + shift
            knocked[c, regulators.index(reg)] = True
    # z = B z + eps  <=>  z = eps (I - B)^-T in row form; rescale so controls have unit variance.
    z = eps @ np.linalg.inv(np.eye(K) - B).T / scale

    genes, log_mu, gene_sets = _expression_program(z, programs, anchors_per_program, n_mixed, regulators, mixing, rng)
    log_mu[:, -n_regulators:] += np.log(np.where(knocked, 0.15, 1.0))  # CRISPRi knockdown of the guide's gene
    counts = _negative_binomial(log_mu, mean_library_size, dispersion, rng)

    order = rng.permutation(len(genes))  # no block structure for a method to lean on
    sample_ids = [f"cell{c:06d}" for c in range(n_cells)]
    adata = ad.AnnData(
        X=sp.csr_matrix(counts[:, order].astype(np.float32)),
        obs=pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=sample_ids),
        var=pd.DataFrame(index=[genes[i] for i in order]),
    )
    std_B = B * scale[None, :] / scale[:, None]  # weights between unit-variance programs
    graph = pd.DataFrame(
        [(programs[i], programs[j], float(std_B[j, i])) for j, i in zip(*np.nonzero(B), strict=True)],
        columns=["source", "target", "weight"],
    )
    targets = pd.DataFrame(
        [(label, programs[reg_program[r]]) for label, regs in conditions for r in regs],
        columns=["intervention", "program"],
    )
    latents = pd.DataFrame(z, columns=programs).assign(sample_id=sample_ids)[["sample_id", *programs]]
    return SimulatedScreen(adata=adata, gene_sets=gene_sets, graph=graph, targets=targets, latents=latents)


def _random_dag(K, density, lo, hi, rng):
    """Weighted DAG B (B[j, i] = effect of i on j) on a random order, plus each program's control SD."""
    order = rng.permutation(K)
    B = np.zeros((K, K))
    for a in range(K):
        for b in range(a + 1, K):
            if rng.random() < density:
                B[order[b], order[a]] = rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])
    inv = np.linalg.inv(np.eye(K) - B)
    scale = np.sqrt(np.sum(inv**2, axis=1))  # SD of each program under unit exogenous noise
    return B, scale


def _conditions(regulators, reg_program, n_doubles, rng):
    """Perturbation labels with their targeted genes: every single, plus doubles on distinct programs."""
    conditions = [(reg, (reg,)) for reg in regulators]
    pairs = [(a, b) for i, a in enumerate(regulators) for b in regulators[i + 1 :] if reg_program[a] != reg_program[b]]
    for idx in rng.choice(len(pairs), size=min(n_doubles, len(pairs)), replace=False):
        a, b = pairs[idx]
        conditions.append((f"{a}+{b}", (a, b)))
    return conditions


def _expression_program(z, programs, n_anchor, n_mixed, regulators, mixing, rng):
    """Log mean expression of every gene (anchors, mixed, regulators last) and the anchor gene sets."""
    K, n_cells = len(programs), z.shape[0]
    h = z if mixing == "linear" else 1.5 * np.tanh(z / 1.5) + 0.3 * z**2 / (1 + z**2)
    A_anchor = np.zeros((K * n_anchor, K))
    for k in range(K):
        A_anchor[k * n_anchor : (k + 1) * n_anchor, k] = rng.uniform(0.4, 0.8, n_anchor)
    A_mixed = np.zeros((n_mixed, K))
    n_background = int(0.3 * n_mixed)  # housekeeping genes: unregulated, highly expressed
    for g in range(n_background, n_mixed):
        ks = rng.choice(K, size=rng.integers(1, min(3, K) + 1), replace=False)
        A_mixed[g, ks] = rng.uniform(-0.6, 0.6, len(ks))
    A = np.vstack([A_anchor, A_mixed, np.zeros((len(regulators), K))])
    base = rng.normal(0.0, 0.8, A.shape[0])
    base[K * n_anchor : K * n_anchor + n_background] += 2.0  # they dominate the library, as in real cells
    log_mu = base + h @ A.T
    if mixing == "nonlinear" and n_mixed:
        i, j = rng.choice(K, size=2, replace=False)
        log_mu[:, K * n_anchor : K * n_anchor + n_mixed] += 0.3 * (h[:, [i]] * h[:, [j]])
    width = len(str(A.shape[0]))
    genes = [f"GENE{g + 1:0{width}d}" for g in range(K * n_anchor + n_mixed)] + list(regulators)
    gene_sets = {p: genes[k * n_anchor : (k + 1) * n_anchor] for k, p in enumerate(programs)}
    assert log_mu.shape == (n_cells, len(genes))
    return genes, log_mu, gene_sets


def _negative_binomial(log_mu, mean_library_size, dispersion, rng):
    """NB counts with cell library sizes ~ LogNormal around ``mean_library_size``."""
    props = np.exp(log_mu - log_mu.max(axis=1, keepdims=True))
    props /= props.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(mean_library_size), 0.3, size=(log_mu.shape[0], 1))
    mean = library * props
    # NB as a Gamma-Poisson mixture (numpy's negative_binomial needs integer-friendly p near 1).
    return rng.poisson(rng.gamma(dispersion, mean / dispersion)).astype(np.int32)
