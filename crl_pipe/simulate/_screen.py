"""A Perturb-seq screen with a known latent causal graph.

Generative model (one cell):
    eps ~ N(0, 1)^K;   eps_t += shift, eps_t *= noise_scale   for each targeted program t
    z = B z + eps       (linear SEM over K programs on a random DAG; weights standardised)
    log mu_g = b_g + sum_k A_gk h(z)_k          (h = identity, or a saturating nonlinearity)
    counts_g ~ NegBinom(mean = L * softmax(log mu)_g, dispersion)   with library size L ~ LogNormal
Each program has ``anchors_per_program`` anchor genes that load on it alone; "mixed" genes load on
one to three programs, except 30% of them, housekeeping genes that dominate the library
and depend on no program (so library-size normalisation barely couples programs); each perturbed
("regulator") gene is knocked down in its own cells and shifts one program (CRISPRi-like soft
intervention: the mechanism of every other program is kept).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import CONTROL_TARGET
from .._errors import ConfigError

#: Label of the control cells (the target of control guides).
CONTROL_LABEL = CONTROL_TARGET


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
    isolated_programs: int = 0,
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
        programs and a pairwise interaction on the regulated mixed genes).
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
    isolated_programs
        How many of the ``n_programs`` (the last ones, ``P{K}``, ``P{K-1}`` ...) have no parent and no
        child: the DAG is drawn as without them and their edges are then removed (0 leaves every draw
        as it is). They are anchored and perturbed like the others.
    seed
        Seed of every random draw.
    """
    design = _design(
        n_programs=n_programs, n_genes=n_genes, anchors_per_program=anchors_per_program, n_control=n_control,
        cells_per_perturbation=cells_per_perturbation, guides_per_program=guides_per_program, n_doubles=n_doubles,
        edge_density=edge_density, mixing=mixing, shift=shift, noise_scale=noise_scale,
        min_edge_weight=min_edge_weight, max_edge_weight=max_edge_weight, isolated_programs=isolated_programs,
        seed=seed,
    )  # fmt: skip
    counts = _negative_binomial(design.log_mean(slice(None)), mean_library_size, dispersion, design.rng)
    order = design.rng.permutation(len(design.genes))  # no block structure for a method to lean on
    return design.screen(order, X=sp.csr_matrix(counts[:, order].astype(np.float32)))


def simulate_screen_chunks(
    *, chunk_cells: int = 5000, **params: Any
) -> tuple[SimulatedScreen, Iterator[sp.csr_matrix]]:
    """:func:`simulate_screen` for screens too large to hold as a dense matrix (a million cells).

    Same parameters and the same truth (graph, targets, latents, gene sets) and labels as
    :func:`simulate_screen` with the same seed; the counts come as an iterator of CSR float32
    blocks of ``chunk_cells`` cells (``screen.adata`` holds ``obs`` and ``var`` but no ``X``), each
    drawn from its own seeded stream, so they (and the gene order) differ from the in-memory draw.
    """
    p = inspect.signature(simulate_screen).bind(**params)
    p.apply_defaults()
    p = dict(p.arguments)
    library, dispersion = p.pop("mean_library_size"), p.pop("dispersion")
    design = _design(**p)
    order = design.rng.permutation(len(design.genes))
    n_cells = design.z.shape[0]

    def blocks() -> Iterator[sp.csr_matrix]:
        for i, start in enumerate(range(0, n_cells, chunk_cells)):
            rng = np.random.default_rng([p["seed"], i])
            log_mu = design.log_mean(slice(start, start + chunk_cells))
            counts = sp.csr_matrix(_negative_binomial(log_mu, library, dispersion, rng, float32=True), dtype=np.float32)
            block = counts[:, order]  # genes in file order (sparse: cheaper than permuting the dense draw)
            block.sort_indices()
            yield block

    return design.screen(order, X=None), blocks()


@dataclass
class _Design:
    """Everything of a simulated screen but its counts: the truth, the labels and the gene model."""

    rng: np.random.Generator
    programs: list[str]
    B: np.ndarray
    scale: np.ndarray
    reg_program: dict[str, int]
    conditions: list[tuple[str, tuple[str, ...]]]
    labels: list[str]
    z: np.ndarray  # cells x programs
    knocked: np.ndarray  # cells x regulators
    genes: list[str]
    gene_sets: dict[str, list[str]]
    A: np.ndarray  # genes x programs
    base: np.ndarray
    pair: np.ndarray | None  # programs interacting on mixed genes (nonlinear mixing)
    mixed: slice
    mixing: str

    def log_mean(self, cells: slice) -> np.ndarray:
        """Log mean expression of the cells ``cells`` (genes in model order), knockdowns included."""
        z = self.z[cells]
        h = z if self.mixing == "linear" else 1.5 * np.tanh(z / 1.5) + 0.3 * z**2 / (1 + z**2)
        log_mu = self.base + h @ self.A.T
        if self.pair is not None:
            # the interaction acts on regulated mixed genes; housekeeping genes depend on no program
            i, j = self.pair
            regulated = np.flatnonzero(np.abs(self.A).sum(axis=1) > 0)
            regulated = regulated[(regulated >= self.mixed.start) & (regulated < self.mixed.stop)]
            log_mu[:, regulated] += 0.3 * (h[:, [i]] * h[:, [j]])
        n_regulators = self.knocked.shape[1]
        log_mu[:, -n_regulators:] += np.log(np.where(self.knocked[cells], 0.15, 1.0))  # CRISPRi knockdown
        return log_mu

    def screen(self, order: np.ndarray, X: sp.csr_matrix | None) -> SimulatedScreen:
        n_cells = self.z.shape[0]
        sample_ids = [f"cell{c:06d}" for c in range(n_cells)]
        adata = ad.AnnData(
            X=X,
            obs=pd.DataFrame({"perturbation": pd.Categorical(self.labels)}, index=sample_ids),
            var=pd.DataFrame(index=[self.genes[i] for i in order]),
        )
        programs, B, scale = self.programs, self.B, self.scale
        std_B = B * scale[None, :] / scale[:, None]  # weights between unit-variance programs
        graph = pd.DataFrame(
            [(programs[i], programs[j], float(std_B[j, i])) for j, i in zip(*np.nonzero(B), strict=True)],
            columns=["source", "target", "weight"],
        )
        targets = pd.DataFrame(
            [(label, programs[self.reg_program[r]]) for label, regs in self.conditions for r in regs],
            columns=["intervention", "program"],
        )
        latents = pd.DataFrame(self.z, columns=programs).assign(sample_id=sample_ids)[["sample_id", *programs]]
        return SimulatedScreen(adata=adata, gene_sets=self.gene_sets, graph=graph, targets=targets, latents=latents)


def _design(
    *, n_programs, n_genes, anchors_per_program, n_control, cells_per_perturbation, guides_per_program, n_doubles,
    edge_density, mixing, shift, noise_scale, min_edge_weight, max_edge_weight, seed, isolated_programs=0,
) -> _Design:  # fmt: skip
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
    if not 0 <= isolated_programs < K:
        raise ConfigError(f"simulate: isolated_programs={isolated_programs}; expected 0 <= isolated_programs < {K}")
    rng = np.random.default_rng(seed)
    programs = [f"P{k + 1}" for k in range(K)]

    B, scale = _random_dag(K, edge_density, min_edge_weight, max_edge_weight, rng, isolated_programs)
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
    start = n_control
    for _, regs in conditions:  # cells of a condition are consecutive: shift their targets at once
        cells = slice(start, start + cells_per_perturbation)
        for reg in regs:
            k = reg_program[reg]
            eps[cells, k] = eps[cells, k] * noise_scale + shift
            knocked[cells, regulators.index(reg)] = True
        start += cells_per_perturbation
    # z = B z + eps  <=>  z = eps (I - B)^-T in row form; rescale so controls have unit variance.
    z = eps @ np.linalg.inv(np.eye(K) - B).T / scale

    genes, A, base, pair, gene_sets = _gene_model(programs, anchors_per_program, n_mixed, regulators, mixing, rng)
    mixed = slice(K * anchors_per_program, K * anchors_per_program + n_mixed)
    return _Design(
        rng=rng, programs=programs, B=B, scale=scale, reg_program=reg_program, conditions=conditions, labels=labels,
        z=z, knocked=knocked, genes=genes, gene_sets=gene_sets, A=A, base=base, pair=pair, mixed=mixed, mixing=mixing,
    )  # fmt: skip


def _random_dag(K, density, lo, hi, rng, isolated=0):
    """Weighted DAG B (B[j, i] = effect of i on j) on a random order, plus each program's control SD.

    The last ``isolated`` programs lose their edges after the draw (which stays the same).
    """
    order = rng.permutation(K)
    B = np.zeros((K, K))
    for a in range(K):
        for b in range(a + 1, K):
            if rng.random() < density:
                B[order[b], order[a]] = rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])
    if isolated:
        B[K - isolated :, :] = 0.0
        B[:, K - isolated :] = 0.0
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


def _gene_model(programs, n_anchor, n_mixed, regulators, mixing, rng):
    """Loadings and baseline of every gene (anchors, mixed, regulators last) and the anchor gene sets."""
    K = len(programs)
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
    pair = rng.choice(K, size=2, replace=False) if mixing == "nonlinear" and n_mixed else None
    width = len(str(A.shape[0]))
    genes = [f"GENE{g + 1:0{width}d}" for g in range(K * n_anchor + n_mixed)] + list(regulators)
    gene_sets = {p: genes[k * n_anchor : (k + 1) * n_anchor] for k, p in enumerate(programs)}
    return genes, A, base, pair, gene_sets


def _negative_binomial(log_mu, mean_library_size, dispersion, rng, float32=False):
    """NB counts with cell library sizes ~ LogNormal around ``mean_library_size``.

    ``float32``: compute the rates and draw the gamma variates in single precision (twice as fast;
    large screens).
    """
    dtype = np.float32 if float32 else np.float64
    log_mu = log_mu.astype(dtype, copy=False)
    props = np.exp(log_mu - log_mu.max(axis=1, keepdims=True))
    props /= props.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(mean_library_size), 0.3, size=(log_mu.shape[0], 1)).astype(dtype, copy=False)
    mean = library * props
    # NB as a Gamma-Poisson mixture (numpy's negative_binomial needs integer-friendly p near 1).
    if float32:
        rate = rng.standard_gamma(dispersion, size=mean.shape, dtype=np.float32) * (mean / dispersion)
    else:
        rate = rng.gamma(dispersion, mean / dispersion)
    return rng.poisson(rate).astype(np.int32)
