"""A Perturb-seq screen with a known latent causal graph.

Generative model (one cell):
    eps ~ N(0, 1)^K;   eps_t <- eps_t * noise_scale + shift   for each targeted program t
    z = B z + eps       (linear SEM over K programs on a random DAG; by default each program is then
                         rescaled to unit variance in controls, otherwise it keeps the SEM's units)
    log mu_g = b_g + sum_k A_gk h(z)_k          (h = identity, or a saturating nonlinearity)
    counts_g ~ NegBinom(mean = L * softmax(log mu)_g, dispersion)   with library size L ~ LogNormal
Each program has ``anchors_per_program`` anchor genes that load on it alone; "mixed" genes load on
one to three programs, except 30% of them, housekeeping genes that dominate the library
and depend on no program (so library-size normalisation barely couples programs); each perturbed
("regulator") gene is knocked down in its own cells and shifts one program (CRISPRi-like soft
intervention: the mechanism of every other program is kept). The gene sets handed to a method list
each program's anchors, of which a chosen share can be wrong (genes driven by other programs).

With ``n_modules`` > 0 the programs form a second level: hidden module drivers
``m = B_mod m + e`` (a DAG over modules), each program belonging to one module with a non-negative
loading ``C``, enter the programs' noise (``eps += C m``), so the programs of a module co-vary;
one perturbed gene per module (``MREG<m>``) shifts its module's noise. With ``n_modules`` = 0 (the
default) nothing of this is drawn and the screen is the one-level screen, draw for draw.
With ``n_supermodules`` > 0 the modules form a third level the same way: hidden supermodule drivers
``s`` (independent), each module belonging to one supermodule with a non-negative loading, enter the
modules' noise (no perturbation targets a supermodule: level 3 shows only in the modules'
co-variation); drawn from a stream of their own, so a screen with supermodules has the same
program and module draws.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    hierarchy: pd.DataFrame | None = None  # level, parent (module), child (program), weight (loading)
    module_graph: pd.DataFrame | None = None  # source, target, weight among modules (standardised)
    module_targets: pd.DataFrame | None = None  # intervention, module
    modules: pd.DataFrame | None = None  # sample_id + one column per module (control SD units)


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
    regulators_in_programs: bool = False,
    n_modules: int = 0,
    module_edge_density: float = 0.0,
    module_loading: float = 0.8,
    n_supermodules: int = 0,
    n_edges: int | None = None,
    standardise_latents: bool = True,
    shift_unit: str = "noise",
    wrong_anchor_fraction: float = 0.0,
    isolated_programs: int = 0,
    knockdown: float = 0.85,
    off_target_fraction: float = 0.0,
    mislabelled_fraction: float = 0.0,
    unintervened_programs: int = 0,
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
        Probability of each forward edge of a random topological order (ignored when ``n_edges`` is set).
    mixing
        ``"linear"`` (log-expression linear in the programs) or ``"nonlinear"`` (saturating
        programs and a pairwise interaction on the regulated mixed genes).
    shift
        Mean shift of the targeted program's noise: in noise standard deviations (``shift_unit="noise"``),
        or in the targeted program's control standard deviations (``shift_unit="latent"``).
    noise_scale
        Factor on the targeted program's noise standard deviation (knockdowns shrink variance).
    mean_library_size
        Mean UMIs per cell.
    dispersion
        Negative-binomial dispersion (larger = closer to Poisson).
    min_edge_weight, max_edge_weight
        Range of |edge weight| before standardisation.
    regulators_in_programs
        Each perturbed gene is also a member of the program it acts on: its expression loads on
        that program (as an anchor does) and it is listed in the program's gene set, prior
        knowledge that maps a knockdown never seen in training to its program (steering).
    n_modules
        Hidden modules over the programs (0: none, a one-level screen). Programs are split into
        ``n_modules`` groups of at least two (needs ``n_programs >= 2 * n_modules``).
    module_edge_density
        Probability of each forward edge of a random order of the modules (the module graph).
    module_loading
        Mean non-negative loading of a program on its module (drawn within +-0.2), in SDs of the
        program's own noise per module SD.
        Range of |edge weight| in the SEM's units (unit exogenous noise), before any standardisation.
    n_supermodules
        Hidden supermodules over the modules, a third level (0: none). Modules are split into groups of
        at least two (needs ``n_modules >= 2 * n_supermodules``); each module loads non-negatively
        (``module_loading`` +-0.2, in SDs of the module's own noise) on its supermodule's driver. No
        perturbation targets a supermodule (a hit on one would move several modules at once, which
        level 2 reads as one merged module).
    n_edges
        Exact number of edges of the latent DAG, drawn uniformly among the K (K - 1) / 2 forward pairs
        of a random order; ``None``: each pair is an edge with probability ``edge_density``.
    standardise_latents
        Rescale each program to unit variance in control cells (then the truth's edge weights are
        in control SDs of the child per control SD of the parent). ``False``: programs keep the
        SEM's units, so downstream programs pile up their ancestors' variance (and saturate the
        counts of their genes), and the truth's weights are the raw SEM weights.
    shift_unit
        ``"noise"``: ``shift`` is in SDs of the targeted program's exogenous noise (its mean moves by
        less than ``shift`` of its own SD when it has parents); ``"latent"``: in control SDs of the
        targeted program itself.
    wrong_anchor_fraction
        Share of each program's listed anchors (``gene_sets``) that are wrong: genes that do not
        load on the program but on others (mis-annotated gene-set members). The counts do not
        change with it, only the gene sets.
    isolated_programs
        How many of the ``n_programs`` (the last ones, ``P{K}``, ``P{K-1}`` ...) have no parent and no
        child: the DAG is drawn as without them and their edges are then removed (0 leaves every draw
        as it is). They are anchored and perturbed like the others.
    knockdown
        Share of a perturbed gene's expression removed in its cells (0.85: 15% remains). The shift of
        its program scales with it (``shift * knockdown / 0.85``): a weaker knockdown, a softer
        intervention.
    off_target_fraction
        Share of the perturbed genes whose perturbation also shifts one other program (drawn at
        random), by half the shift of the intended one (an off-target hit). The truth's ``targets``
        list the intended program only. Drawn from its own stream: 0 leaves every draw as it is.
    mislabelled_fraction
        Share of the perturbed cells whose label is wrong: replaced by another label of the screen
        (another perturbation or the control), drawn from its own stream. Their counts are those
        of the perturbation they really carry.
    unintervened_programs
        How many programs (the first ones, ``P1``, ``P2`` ...) no perturbation targets: their
        perturbed genes are measured but never knocked down, and doubles involving them are dropped.
    seed
        Seed of every random draw.
    """
    design = _design(
        n_programs=n_programs, n_genes=n_genes, anchors_per_program=anchors_per_program, n_control=n_control,
        cells_per_perturbation=cells_per_perturbation, guides_per_program=guides_per_program, n_doubles=n_doubles,
        edge_density=edge_density, mixing=mixing, shift=shift, noise_scale=noise_scale,
        min_edge_weight=min_edge_weight, max_edge_weight=max_edge_weight, n_edges=n_edges,
        standardise_latents=standardise_latents, shift_unit=shift_unit, wrong_anchor_fraction=wrong_anchor_fraction,
        n_modules=n_modules, module_edge_density=module_edge_density, module_loading=module_loading,
        n_supermodules=n_supermodules, regulators_in_programs=regulators_in_programs,
        isolated_programs=isolated_programs, knockdown=knockdown,
        off_target_fraction=off_target_fraction, mislabelled_fraction=mislabelled_fraction,
        unintervened_programs=unintervened_programs, seed=seed,
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
    modules: _Modules | None = None
    standardised: bool = True
    remaining: float = 0.15  # share of a perturbed gene's expression left in its cells

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
        log_mu[:, -n_regulators:] += np.log(np.where(self.knocked[cells], self.remaining, 1.0))  # CRISPRi knockdown
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
        std_B = (
            B * scale[None, :] / scale[:, None] if self.standardised else B
        )  # weights between unit-variance programs
        graph = pd.DataFrame(
            [(programs[i], programs[j], float(std_B[j, i])) for j, i in zip(*np.nonzero(B), strict=True)],
            columns=["source", "target", "weight"],
        )
        targets = pd.DataFrame(
            [
                (label, programs[self.reg_program[r]])
                for label, regs in self.conditions
                for r in regs
                if r in self.reg_program  # module regulators: in module_targets
            ],
            columns=["intervention", "program"],
        )
        latents = pd.DataFrame(self.z, columns=programs).assign(sample_id=sample_ids)[["sample_id", *programs]]
        screen = SimulatedScreen(adata=adata, gene_sets=self.gene_sets, graph=graph, targets=targets, latents=latents)
        if self.modules is not None:
            self.modules.truth_into(screen, programs, scale, sample_ids)
        return screen


def _design(
    *, n_programs, n_genes, anchors_per_program, n_control, cells_per_perturbation, guides_per_program, n_doubles,
    edge_density, mixing, shift, noise_scale, min_edge_weight, max_edge_weight, seed, n_edges=None,
    standardise_latents=True, shift_unit="noise", wrong_anchor_fraction=0.0, regulators_in_programs=False,
    n_modules=0, module_edge_density=0.0, module_loading=0.8, n_supermodules=0, isolated_programs=0, knockdown=0.85,
    off_target_fraction=0.0, mislabelled_fraction=0.0, unintervened_programs=0,
) -> _Design:  # fmt: skip
    K = n_programs
    n_regulators = K * guides_per_program + n_modules
    n_mixed = n_genes - K * anchors_per_program - n_regulators
    if K < 2:
        raise ConfigError(f"simulate: n_programs must be at least 2, got {K}")
    if anchors_per_program < 1 or n_mixed < 0:
        raise ConfigError(
            f"simulate: n_genes={n_genes} is too small for {K} programs x {anchors_per_program} anchors"
            f" + {n_regulators} perturbed genes"
        )
    if n_modules < 0 or K < 2 * n_modules:
        raise ConfigError(f"simulate: n_modules={n_modules} needs n_programs >= 2 * n_modules, got n_programs={K}")
    if n_supermodules < 0 or n_modules < 2 * n_supermodules:
        raise ConfigError(
            f"simulate: n_supermodules={n_supermodules} needs n_modules >= 2 * n_supermodules,"
            f" got n_modules={n_modules}"
        )
    if mixing not in ("linear", "nonlinear"):
        raise ConfigError(f"simulate: mixing must be 'linear' or 'nonlinear', got {mixing!r}")
    _check_knobs(K, n_edges, shift_unit, wrong_anchor_fraction)
    if not 0 <= isolated_programs < K:
        raise ConfigError(f"simulate: isolated_programs={isolated_programs}; expected 0 <= isolated_programs < {K}")
    _check_weakening(K, knockdown, off_target_fraction, mislabelled_fraction, unintervened_programs)
    rng = np.random.default_rng(seed)
    programs = [f"P{k + 1}" for k in range(K)]

    B, scale = _random_dag(K, edge_density, min_edge_weight, max_edge_weight, rng, n_edges, isolated_programs)
    unit = (
        scale if shift_unit == "latent" else np.ones(K)
    )  # eps_t moves z_t one for one: (I - B)^-1 has a unit diagonal
    regulators = [f"REG{r + 1}" for r in range(K * guides_per_program)]
    reg_program = {reg: r // guides_per_program for r, reg in enumerate(regulators)}
    conditions = _conditions(regulators, reg_program, n_doubles, rng)
    if unintervened_programs:
        conditions = [
            (lab, regs) for lab, regs in conditions if min(reg_program[r] for r in regs) >= unintervened_programs
        ]
    off_target = _off_targets(regulators, reg_program, K, off_target_fraction, seed)
    strength = knockdown / 0.85  # 1.0 at the default: the shift as given
    modules = None
    if n_modules:  # drawn from its own stream, after the one-level design
        modules = _draw_modules(
            K, n_modules, module_edge_density, module_loading, min_edge_weight, max_edge_weight, seed
        )
        if n_supermodules:  # a stream of their own: the modules' draws stay those without supermodules
            modules.add_supermodules(n_supermodules, module_loading, seed)
        regulators += modules.regulators
        conditions += [(reg, (reg,)) for reg in modules.regulators]

    labels, target_sets = [CONTROL_LABEL] * n_control, [()] * n_control
    for label, regs in conditions:
        labels += [label] * cells_per_perturbation
        target_sets += [regs] * cells_per_perturbation
    n_cells = len(labels)
    if mislabelled_fraction > 0:
        labels = _mislabel(labels, mislabelled_fraction, seed)

    eps = rng.standard_normal((n_cells, K))
    if modules is not None:
        modules.draw_noise(n_cells)
    knocked = np.zeros((n_cells, n_regulators), dtype=bool)
    start = n_control
    for _, regs in conditions:  # cells of a condition are consecutive: shift their targets at once
        cells = slice(start, start + cells_per_perturbation)
        for reg in regs:
            if reg in reg_program:
                k = reg_program[reg]
                eps[cells, k] = eps[cells, k] * noise_scale + shift * strength * unit[k]
                if reg in off_target:
                    k = off_target[reg]
                    eps[cells, k] = eps[cells, k] + 0.5 * shift * strength * unit[k]
            else:
                modules.knock(reg, cells, shift, noise_scale)
            knocked[cells, regulators.index(reg)] = True
        start += cells_per_perturbation
    if modules is not None:  # hidden drivers enter the programs' noise; controls keep unit variance
        eps = eps + modules.drive()
        scale = modules.program_scale(B)
    # z = B z + eps  <=>  z = eps (I - B)^-T in row form; rescale so controls have unit variance.
    z = eps @ np.linalg.inv(np.eye(K) - B).T
    if standardise_latents:
        z = z / scale

    genes, A, base, pair, gene_sets = _gene_model(programs, anchors_per_program, n_mixed, regulators, mixing, rng)
    if regulators_in_programs:  # drawn after the gene model, so that every other draw stays as without it
        for r, reg in enumerate(regulators):
            if reg not in reg_program:  # a module's regulator belongs to no program
                continue
            A[len(genes) - len(regulators) + r, reg_program[reg]] = rng.uniform(0.4, 0.8)
            gene_sets[programs[reg_program[reg]]].append(reg)
    mixed = slice(K * anchors_per_program, K * anchors_per_program + n_mixed)
    if wrong_anchor_fraction > 0:
        # its own stream: the counts (drawn next from ``rng``) stay those of the screen with right anchors
        wrong_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        gene_sets = _wrong_anchors(gene_sets, genes, A, mixed, anchors_per_program, wrong_anchor_fraction, wrong_rng)
    return _Design(
        rng=rng, programs=programs, B=B, scale=scale, reg_program=reg_program, conditions=conditions, labels=labels,
        z=z, knocked=knocked, genes=genes, gene_sets=gene_sets, A=A, base=base, pair=pair, mixed=mixed, mixing=mixing,
        modules=modules,
        standardised=standardise_latents, remaining=round(1.0 - knockdown, 12),
    )  # fmt: skip


@dataclass
class _Modules:
    """The second level of a simulated screen: module drivers, their graph and the programs' loadings."""

    names: list[str]
    members: list[np.ndarray]  # program indices of each module
    C: np.ndarray  # programs x modules, non-negative loadings
    B: np.ndarray  # modules x modules, B[j, i] = effect of module i on module j
    scale: np.ndarray  # control SD of each module under unit noise
    regulators: list[str]
    rng: np.random.Generator
    noise: np.ndarray | None = None  # cells x modules: module noise (shifted where knocked down)
    m: np.ndarray | None = None  # cells x modules: module values, control SD units
    # a third level (n_supermodules > 0): independent unit drivers entering the modules' noise
    super_names: list[str] = field(default_factory=list)
    super_C: np.ndarray | None = None  # modules x supermodules, non-negative loadings
    super_rng: np.random.Generator | None = None
    super_noise: np.ndarray | None = None  # cells x supermodules

    def add_supermodules(self, n_super: int, loading: float, seed: int) -> None:
        """Supermodules over the modules from their own stream (``[seed, 4]``): groups of >= 2 modules."""
        rng = np.random.default_rng([seed, 4])
        M = len(self.names)
        self.super_C = np.zeros((M, n_super))
        for s, ms in enumerate(np.array_split(rng.permutation(M), n_super)):
            self.super_C[ms, s] = rng.uniform(max(loading - 0.2, 0.05), loading + 0.2, len(ms))
        self.super_names = [f"S{s + 1}" for s in range(n_super)]
        self.super_rng = rng
        inv = np.linalg.inv(np.eye(M) - self.B)  # module SDs under their unit noise plus the supermodules' drive
        self.scale = np.sqrt(np.diag(inv @ self._noise_cov() @ inv.T))

    def _noise_cov(self) -> np.ndarray:
        extra = 0.0 if self.super_C is None else self.super_C @ self.super_C.T
        return np.eye(len(self.names)) + extra

    def knock(self, reg: str, cells: slice, shift: float, noise_scale: float) -> None:
        """Shift the noise of the module ``reg`` regulates in ``cells``."""
        m = self.regulators.index(reg)
        self.noise[cells, m] = self.noise[cells, m] * noise_scale + shift

    def draw_noise(self, n_cells: int) -> None:
        self.noise = self.rng.standard_normal((n_cells, len(self.names)))
        if self.super_rng is not None:
            self.super_noise = self.super_rng.standard_normal((n_cells, len(self.super_names)))

    def drive(self) -> np.ndarray:
        """Each cell's module drive of every program's noise (cells x programs)."""
        M = len(self.names)
        noise = self.noise if self.super_C is None else self.noise + self.super_noise @ self.super_C.T
        self.m = noise @ np.linalg.inv(np.eye(M) - self.B).T / self.scale
        return self.m @ self.C.T

    def program_scale(self, B: np.ndarray) -> np.ndarray:
        """Control SD of each program with its own unit noise and its module's drive."""
        M = len(self.names)
        inv_m = np.linalg.inv(np.eye(M) - self.B) / self.scale[:, None]
        cov_eps = np.eye(B.shape[0]) + self.C @ (inv_m @ self._noise_cov() @ inv_m.T) @ self.C.T
        inv = np.linalg.inv(np.eye(B.shape[0]) - B)
        return np.sqrt(np.diag(inv @ cov_eps @ inv.T))

    def truth_into(self, screen: SimulatedScreen, programs: list[str], scale: np.ndarray, sample_ids: list) -> None:
        """Fill ``screen``'s module truth: membership (loadings in control SDs), module graph, targets, values."""
        screen.hierarchy = pd.DataFrame(
            [
                (2, self.names[m], programs[k], float(self.C[k, m] / scale[k]), 1.0)
                for m, ks in enumerate(self.members)
                for k in ks
            ],
            columns=["level", "parent", "child", "weight", "stability"],
        )
        if self.super_C is not None:  # level 3: supermodule -> module (loadings in the module's control SDs)
            rows = [
                (3, self.super_names[s], self.names[m], float(self.super_C[m, s] / self.scale[m]), 1.0)
                for s, m in sorted(zip(*np.nonzero(self.super_C.T), strict=True))
            ]
            screen.hierarchy = pd.concat(
                [screen.hierarchy, pd.DataFrame(rows, columns=screen.hierarchy.columns)], ignore_index=True
            )
        std_B = self.B * self.scale[None, :] / self.scale[:, None]
        screen.module_graph = pd.DataFrame(
            [(self.names[i], self.names[j], float(std_B[j, i])) for j, i in zip(*np.nonzero(self.B), strict=True)],
            columns=["source", "target", "weight"],
        )
        screen.module_targets = pd.DataFrame(
            {"intervention": self.regulators, "module": self.names}, columns=["intervention", "module"]
        )
        screen.modules = pd.DataFrame(self.m, columns=self.names).assign(sample_id=sample_ids)[
            ["sample_id", *self.names]
        ]


def _draw_modules(K, n_modules, density, loading, lo, hi, seed) -> _Modules:
    """Modules over ``K`` programs from their own random stream (``[seed, 1]``): groups of >= 2 programs."""
    rng = np.random.default_rng([seed, 1])
    members = [np.sort(g) for g in np.array_split(rng.permutation(K), n_modules)]
    C = np.zeros((K, n_modules))
    for m, ks in enumerate(members):
        C[ks, m] = rng.uniform(max(loading - 0.2, 0.05), loading + 0.2, len(ks))
    B, scale = _random_dag(n_modules, density, lo, hi, rng)
    names = [f"M{m + 1}" for m in range(n_modules)]
    return _Modules(names, members, C, B, scale, [f"MREG{m + 1}" for m in range(n_modules)], rng)


def _check_knobs(K, n_edges, shift_unit, wrong_anchor_fraction) -> None:
    max_edges = K * (K - 1) // 2
    if n_edges is not None and not 0 <= n_edges <= max_edges:
        raise ConfigError(f"simulate: n_edges must be between 0 and {max_edges} for {K} programs, got {n_edges}")
    if shift_unit not in ("noise", "latent"):
        raise ConfigError(f"simulate: shift_unit must be 'noise' or 'latent', got {shift_unit!r}")
    if not 0 <= wrong_anchor_fraction <= 1:
        raise ConfigError(f"simulate: wrong_anchor_fraction must be in [0, 1], got {wrong_anchor_fraction}")


def _check_weakening(K, knockdown, off_target_fraction, mislabelled_fraction, unintervened_programs) -> None:
    if not 0 < knockdown < 1:
        raise ConfigError(f"simulate: knockdown must be in (0, 1), got {knockdown}")
    for name, value in (("off_target_fraction", off_target_fraction), ("mislabelled_fraction", mislabelled_fraction)):
        if not 0 <= value <= 1:
            raise ConfigError(f"simulate: {name} must be in [0, 1], got {value}")
    if not 0 <= unintervened_programs < K:
        raise ConfigError(f"simulate: unintervened_programs={unintervened_programs}; expected 0 <= it < {K}")


def _off_targets(regulators, reg_program, K, fraction, seed) -> dict[str, int]:
    """Perturbed gene -> the other program it also hits, for ``round(fraction * n)`` of them (own stream)."""
    n_hit = int(round(fraction * len(regulators)))
    if not n_hit:
        return {}
    rng = np.random.default_rng([seed, 2])
    hit = rng.choice(len(regulators), size=n_hit, replace=False)
    out = {}
    for r in np.sort(hit):
        others = [k for k in range(K) if k != reg_program[regulators[r]]]
        out[regulators[r]] = int(rng.choice(others))
    return out


def _mislabel(labels: list[str], fraction: float, seed: int) -> list[str]:
    """``labels`` with ``round(fraction * n)`` of the n perturbed cells relabelled as another label (own stream)."""
    rng = np.random.default_rng([seed, 3])
    labels = list(labels)
    names = sorted(set(labels))
    perturbed = np.flatnonzero(np.asarray(labels) != CONTROL_LABEL)
    for c in rng.choice(perturbed, size=int(round(fraction * perturbed.size)), replace=False):
        others = [n for n in names if n != labels[c]]
        labels[c] = others[rng.integers(len(others))]
    return labels


def _random_dag(K, density, lo, hi, rng, n_edges=None, isolated=0):
    """Weighted DAG B (B[j, i] = effect of i on j) on a random order, plus each program's control SD.

    ``n_edges``: exactly that many edges, a uniform draw of the forward pairs; else each with
    probability ``density``. The last ``isolated`` programs lose their edges after the draw (which
    stays the same)."""
    order = rng.permutation(K)
    B = np.zeros((K, K))
    pairs = [(a, b) for a in range(K) for b in range(a + 1, K)]
    chosen = set() if n_edges is None else {pairs[i] for i in rng.choice(len(pairs), size=n_edges, replace=False)}
    for a, b in pairs:  # the draw per pair interleaves coin and weight: keep it (same DAG per seed as ever)
        is_edge = (a, b) in chosen if n_edges is not None else rng.random() < density
        if is_edge:
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


def _wrong_anchors(gene_sets, genes, A, mixed, n_anchor, fraction, rng):
    """Gene sets with ``round(fraction * n_anchor)`` anchors of each program swapped for regulated mixed
    genes that do not load on it (each used once, so the sets stay disjoint)."""
    n_wrong = int(round(fraction * n_anchor))
    regulated = [g for g in range(mixed.start, mixed.stop) if np.abs(A[g]).sum() > 0]
    if n_wrong * len(gene_sets) > len(regulated):
        raise ConfigError(
            f"simulate: wrong_anchor_fraction={fraction} needs {n_wrong * len(gene_sets)} regulated mixed genes,"
            f" only {len(regulated)}; expected more n_genes or a smaller fraction"
        )
    pool = list(rng.permutation(regulated))
    out = {}
    for k, (program, members) in enumerate(gene_sets.items()):
        wrong = [g for g in pool if A[g, k] == 0][:n_wrong]
        pool = [g for g in pool if g not in wrong]
        kept = rng.choice(len(members), size=n_anchor - n_wrong, replace=False)
        out[program] = [members[i] for i in np.sort(kept)] + [genes[g] for g in wrong]
    if any(len(v) < n_anchor for v in out.values()):
        raise ConfigError(f"simulate: too few mixed genes to make {fraction:.0%} of the anchors wrong")
    return out


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
