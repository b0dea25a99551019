"""Level 2 (and deeper) of the concept graph: modules of programs, chosen by minimality, and the program graph re-read.

Programs (level 1) that share a hidden driver co-vary beyond what the program graph explains, and a
perturbation of that driver moves all of them at once. A one-level readout can only draw
program -> program edges for both. A module is the smaller explanation: one node with a
non-negative loading on each of its programs instead of many edges.

The steps (:func:`hierarchy`), on latents in control SDs (controls at mean 0, SD 1):

1. One-level shift readout (:func:`crl_pipe.models._shift_sem.alternate`): graph ``B1``; and a trimmed
   readout ``B0`` without the perturbations that no single program hit explains (:func:`_trimmed`).
2. Modules from the co-variation the graph leaves: the controls' residual noise ``e = z - B z`` is
   fit by a non-negative one-factor-per-module model, ``cov(e) = W Phi W^T + Psi (+ (I - B) D (I - B)^T``
   for measurement noise in the latents), with ``W >= 0`` and each program in at most one module (the
   level-2 analogue of an anchor). Candidate partitions are the groups the trimmed perturbations move
   together and the cuts of an average-linkage tree on ``1 - corr(e)``; the chosen one has the least
   description length: BIC (Gaussian fit plus ``log(n)/2`` per parameter) plus the squared exogenous
   shifts (SEs) of the trimmed perturbations that their best single target leaves unexplained. So a
   module is kept only when it explains more than its loadings cost. When the runner-up differs by
   less than ``tolerance``, minimality cannot choose and it says so.
3. The program graph re-read given the modules: a perturbation whose exogenous shift
   ``(I - B) d_p`` moves every member of a module significantly, with the same sign and in
   proportion to the loadings, is read as hitting the module; its shifts on the members of every
   module it moves leave the program equations (as a program's own target does), and ``B`` is
   refit. Edges that only those shifts supported disappear: the module explains them.
4. Module scores (Bartlett factor scores of the residual noise), the module graph from the module
   scores' shifts under module-hitting perturbations, and stability of every membership and edge
   over bootstrap resamples of the cells within intervention groups.
5. Deeper levels (up to ``max_level``): steps 1-4 again with the module scores in the programs' place;
   a level is kept only where the least description length has a module of two or more members.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment, nnls
from scipy.spatial.distance import squareform

from .._errors import ConfigError, InputError
from ..models._shift_sem import SHIFT_SEM_DEFAULTS, _peel_order, alternate, solve_graph
from ._evaluate import graph_metrics

log = logging.getLogger("crl_pipe")

#: Smallest loading that keeps a program in a module (control SDs of its noise per module SD).
MIN_LOADING = 0.05


@dataclass
class HierarchyResult:
    """What :func:`hierarchy` found (the tables the stage writes, and what the report reads).

    Attributes
    ----------
    membership
        ``level, parent, child, weight, stability``: level 2 = module -> program (weight: loading,
        stability: fraction of resamples that keep exactly this program's co-members), level 3 =
        module -> module for a given nested hierarchy.
    scores
        ``sample_id`` plus one column per module (control SDs).
    module_graph
        ``source, target, weight, stability, lag`` among modules.
    program_graph
        ``source, target, weight, stability, lag, status, explained_by``: ``status`` ``kept`` (in the
        one-level readout and given the modules), ``added`` (given the modules only), ``explained``
        (one-level only: the module in ``explained_by`` explains it).
    module_targets
        ``intervention, module``: perturbations read as hitting a module.
    selection
        ``n_modules, partition, description_length, chosen``: each candidate decomposition
        (programs by name) and its description length (BIC + unexplained shifts).
    identifiability
        Per module: ``module, n_members, n_exclusive, identifiable, reason`` (learned level-3 modules
        and deeper too: their members are modules).
    notes
        Sentences on what minimality could not decide.
    upper
        The learned levels above level 2, lowest first: each the result of the same search run on the
        module scores of the level below (its ``membership`` at level 2, ids renamed ``L3M1`` ...; its
        ``scores``, ``module_graph`` and ``program_graph``, the latter among the level's members).
    """

    membership: pd.DataFrame
    scores: pd.DataFrame
    module_graph: pd.DataFrame
    program_graph: pd.DataFrame
    module_targets: pd.DataFrame
    selection: pd.DataFrame
    identifiability: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    upper: list[HierarchyResult] = field(default_factory=list)


@dataclass
class _Fit:
    """One fit of the hierarchy on one set of cells (the full data or a resample)."""

    modules: list[np.ndarray]  # program indices per module
    loadings: list[np.ndarray]  # non-negative loading per member
    psi: np.ndarray  # unique variance of every program's residual noise
    B1: np.ndarray  # one-level graph
    B: np.ndarray  # graph given the modules
    module_rows: dict[int, list[int]]  # perturbation row -> modules it moves
    B_mod: np.ndarray  # module graph
    module_target: dict[int, int]  # perturbation row -> module it hits
    selection: pd.DataFrame


def check_given_hierarchy(given: Mapping[str, Sequence[str]], programs: Sequence[str], where: str = "hierarchy"):
    """Raise a one-line :class:`ConfigError` unless ``given`` (module -> members) is a valid hierarchy.

    Members are programs or other modules (a deeper level); every module needs a member, every name
    must exist, and no module may contain itself through any chain of members.
    """
    programs = set(programs)
    graph = nx.DiGraph()
    for module, members in given.items():
        if module in programs:
            raise ConfigError(f"{where}.{module}: a module cannot have the name of a program")
        if not members:
            raise ConfigError(f"{where}.{module}: module has no member; expected at least one program")
        for member in members:
            if member not in programs and member not in given:
                raise ConfigError(
                    f"{where}.{module}: member {member!r} is neither a program ({', '.join(sorted(programs))})"
                    " nor a module"
                )
            graph.add_edge(module, member)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    raise ConfigError(f"{where}: cycle across levels {' -> '.join([u for u, _ in cycle] + [cycle[0][0]])}")


def hierarchy(
    latents: pd.DataFrame,
    interventions: pd.DataFrame,
    *,
    given: Mapping[str, Sequence[str]] | None = None,
    max_modules: int | None = None,
    tolerance: float = 2.0,
    min_target_z: float = 3.0,
    min_cosine: float = 0.9,
    n_resamples: int = 20,
    seed: int = 0,
    edge_threshold: float = SHIFT_SEM_DEFAULTS["edge_threshold"],
    ridge: float = SHIFT_SEM_DEFAULTS["ridge"],
    max_level: int = 3,
) -> HierarchyResult:
    """Modules over the program latents, the module graph, and the program graph given the modules.

    Parameters
    ----------
    latents
        ``latents.parquet``: ``sample_id`` plus one column per program.
    interventions
        ``interventions.parquet``: ``sample_id, intervention, n_targets, is_control``.
    given
        Module -> member programs (or modules, a deeper level), from the config: the partition is
        then taken as given (anchors one level up), only the loadings are fit.
    max_modules
        Most modules a decomposition may have (default: half the programs).
    tolerance
        Description-length (BIC) units: a runner-up decomposition closer than this to the chosen one is reported as
        one minimality cannot rule out (2: "not worth more than a bare mention", Kass & Raftery 1995).
    min_target_z
        Shift (in standard errors) a program needs to count as moved by a perturbation.
    min_cosine
        Smallest cosine between a perturbation's exogenous shifts on a module's members and the
        module's loadings for the perturbation to be read as hitting the module.
    n_resamples
        Bootstrap resamples of the cells (within intervention groups) for the stabilities (0: none).
    seed
        Seed of the resampling.
    edge_threshold, ridge
        Of the shift readout (:func:`crl_pipe.models._shift_sem.alternate`).
    max_level
        Deepest level to learn (2: modules only). Level ``l + 1`` is the same search run on the module
        scores of level ``l`` (:func:`_learn_upper`), kept only where minimality chooses a module of at
        least two members; without a given hierarchy only.
    """
    if max_level < 2:
        raise ConfigError(f"hierarchy: max_level must be at least 2, got {max_level}")
    search = dict(max_modules=max_modules, tolerance=tolerance, min_target_z=min_target_z, min_cosine=min_cosine,
                  n_resamples=n_resamples, seed=seed, edge_threshold=edge_threshold, ridge=ridge)  # fmt: skip
    result = _one_level(latents, interventions, given=given, prefix="M", **search)
    if given is None and max_level > 2:
        _learn_upper(result, interventions, max_level, search)
    return result


def _one_level(
    latents, interventions, *, given, prefix, max_modules, tolerance, min_target_z, min_cosine, n_resamples, seed,
    edge_threshold, ridge,
) -> HierarchyResult:  # fmt: skip
    """Modules over the columns of ``latents`` (:func:`hierarchy` without the levels above), named ``<prefix>1`` ..."""
    programs = [c for c in latents.columns if c != "sample_id"]
    if given is not None:
        check_given_hierarchy(given, programs)
    table = _aligned(latents, interventions)
    Z, labels, is_control, n_targets = _standardised(table, programs)
    opts = dict(
        given=_given_indices(given, programs), max_modules=max_modules or max(1, len(programs) // 2),
        min_target_z=min_target_z, min_cosine=min_cosine, edge_threshold=edge_threshold, ridge=ridge,
    )  # fmt: skip
    fit = _fit(Z, labels, is_control, n_targets, **opts)
    names = _module_names(fit.modules, given, programs, prefix)
    perts = sorted(set(labels[~is_control])) if is_control.sum() > 2 else []
    stability = _stabilities(fit, Z, labels, is_control, n_targets, n_resamples, seed, opts)
    scores = _module_scores(Z, fit, is_control)
    result = HierarchyResult(
        membership=_membership_table(fit, names, programs, stability, given),
        scores=pd.DataFrame(scores, columns=names).assign(sample_id=table["sample_id"].to_numpy())[
            ["sample_id", *names]
        ],
        module_graph=_edge_table(fit.B_mod, names, stability["module_edges"]),
        program_graph=_program_graph(fit, programs, names, stability["program_edges"]),
        module_targets=pd.DataFrame(
            [(perts[p], names[m]) for p, m in sorted(fit.module_target.items())], columns=["intervention", "module"]
        ),
        selection=fit.selection,
        identifiability=_identifiability(fit, names, programs),
    )
    result.notes = _notes(fit, names, programs, tolerance, given is not None)
    for name, g in zip(names, fit.modules, strict=True):
        kept = float(np.mean(stability["members"][g])) if n_resamples and given is None else np.nan
        if kept < 0.5:
            result.notes.append(
                f"{name}: resamples keep its membership only {kept:.0%} of the time; do not read it as a module"
            )
    result.selection = fit.selection.assign(partition=[_named(p, programs) for p in fit.selection["partition"]])
    return result


def _learn_upper(result: HierarchyResult, interventions: pd.DataFrame, max_level: int, search: dict) -> None:
    """Levels 3 .. ``max_level`` into ``result``: each the level-2 search run on the module scores below.

    The module scores play the programs' part (their graph from the perturbations' shifts, their
    residual co-variation, the description length of each partition); a level is kept only where
    minimality chooses at least one module of two or more members (its anchors: every member is its
    own), and the search stops at the first level it does not keep or with fewer than 3 units below.
    ``max_modules`` is taken as given or half the units of each level.
    """
    lower = result
    for level in range(3, max_level + 1):
        units = [c for c in lower.scores.columns if c != "sample_id"]
        if len(units) < 3:
            if level == 3 and len(units) == 2:
                result.notes.append("level 3: 2 modules are too few to learn a module over modules (3 needed)")
            return
        upper = _one_level(lower.scores, interventions, given=None, prefix=f"L{level}M", **search)
        if upper.membership.empty:
            result.notes.append(
                f"level {level}: minimality keeps no module over the {len(units)} level-{level - 1} modules"
                " (one node per module costs more than it explains)"
            )
            return
        result.membership = pd.concat([result.membership, upper.membership.assign(level=level)], ignore_index=True)
        ident = upper.identifiability.assign(
            reason=[f"level {level}: {r.replace('programs', 'modules')}" for r in upper.identifiability["reason"]]
        )
        result.identifiability = pd.concat([result.identifiability, ident], ignore_index=True)
        result.notes += [f"level {level}: {n.replace('program', 'module')}" for n in upper.notes]
        result.upper.append(upper)
        lower = upper


# ---- data -----------------------------------------------------------------------------------------
def _aligned(latents: pd.DataFrame, interventions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("sample_id", "intervention", "is_control") if c not in interventions]
    if missing:
        raise InputError(f"interventions table: missing column(s) {missing} needed for the hierarchy")
    keep = ["sample_id", "intervention", "is_control"] + (["n_targets"] if "n_targets" in interventions else [])
    table = latents.merge(interventions[keep], on="sample_id", how="inner")
    if table.empty:
        raise InputError("latents and interventions share no sample_id")
    return table


def _standardised(table: pd.DataFrame, programs: list[str]):
    """Latents in control SDs, labels, control flags and each label's number of targets."""
    Z = table[programs].to_numpy(dtype=float)
    is_control = table["is_control"].to_numpy(dtype=bool)
    ref = Z[is_control] if is_control.sum() > 2 else Z  # no controls (logs): all samples are the reference
    sd = ref.std(axis=0)
    Z = (Z - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    labels = table["intervention"].astype(str).to_numpy()
    if "n_targets" in table:
        n_targets = table.groupby("intervention")["n_targets"].max().astype(int).to_dict()
    else:
        n_targets = {}
    return Z, labels, is_control, n_targets


def _shifts(Z, labels, is_control, n_targets):
    """Mean shift of every perturbation from the controls (control SDs), its cell count, SE and number of targets."""
    perts = sorted(set(labels[~is_control]))
    base = Z[is_control].mean(axis=0)
    D = np.array([Z[labels == p].mean(axis=0) - base for p in perts]).reshape(len(perts), Z.shape[1])
    counts = np.array([(labels == p).sum() for p in perts], dtype=float)
    se = np.sqrt(1.0 / counts + 1.0 / max(is_control.sum(), 1))
    return perts, D, counts, se, [max(1, int(n_targets.get(p, 1))) for p in perts]


def _given_indices(given, programs):
    """Level-2 modules of a given hierarchy as program index arrays (nested modules are level 3)."""
    if given is None:
        return None
    index = {p: k for k, p in enumerate(programs)}
    return [np.array(sorted(index[m] for m in members if m in index)) for members in given.values()]


# ---- one fit --------------------------------------------------------------------------------------
def _fit(Z, labels, is_control, n_targets, *, given, max_modules, min_target_z, min_cosine, edge_threshold, ridge):
    K = Z.shape[1]
    reread = is_control.sum() > 2 and (~is_control).any()  # without controls (logs): modules only, no re-read
    perts, D, counts, se, n_tg = _shifts(Z, labels, is_control, n_targets) if reread else ([], None, None, None, [])
    B1 = (
        alternate(D, counts, n_tg, edge_threshold=edge_threshold, ridge=ridge, max_iter=20)[0]
        if reread
        else np.zeros((K, K))
    )
    B, module_rows, selection, moved = B1, {}, None, np.zeros((0, K))
    if reread:
        B, out = _trimmed(D, counts, se, n_tg, min_target_z, ridge, edge_threshold)
        # exogenous shifts (SEs) of the perturbations no single program hit explains: module evidence
        moved = (D @ (np.eye(K) - B).T / se[:, None])[sorted(out)]
    B0 = B
    controls = Z[is_control] if is_control.sum() > 2 else Z
    for _ in range(3):  # modules from what the graph leaves, then the graph given the modules
        E = controls - controls @ B.T
        if given is not None:
            modules, selection = [g for g in given if g.size], _given_selection(E, given)
        else:
            modules, selection = _choose_modules(E, max_modules, moved, min_target_z, np.eye(K) - B)
        # the chosen (or given) membership stays whole: a member the controls barely load is kept at MIN_LOADING
        loadings, psi = _loadings(np.corrcoef(E.T), modules)
        loadings = [np.maximum(w, MIN_LOADING) for w in loadings]
        if not reread or not modules:
            break
        new_B, new_rows = _reread(D, counts, se, n_tg, modules, loadings, B0, min_target_z, min_cosine, ridge,
                                  edge_threshold, support=B1 != 0)  # fmt: skip
        if new_rows == module_rows and np.allclose(new_B, B):
            break
        B, module_rows = new_B, new_rows
    fit = _Fit(modules, loadings, psi, B1, B, module_rows, np.zeros((len(modules),) * 2), {}, selection)
    if reread and module_rows:
        fit.B_mod, fit.module_target = _module_graph(Z, labels, is_control, fit, perts, edge_threshold, ridge)
    return fit


def _choose_modules(
    E: np.ndarray, max_modules: int, moved: np.ndarray | None = None, z_min: float = 3.0, A: np.ndarray | None = None
) -> tuple[list[np.ndarray], pd.DataFrame]:
    """The partition of least description length among the cuts of an average-linkage tree on
    ``1 - corr(E)`` and the groups of programs that perturbations move together.

    Description length = BIC of the controls' residual noise ``E`` + the squared exogenous shifts (in
    SEs, beyond ``z_min``) of the ``moved`` perturbations that their best single target, program or
    module, leaves unexplained (the Gaussian fit of their mean shifts). With ``A`` (``I - B``), the
    controls' fit allows for noise in the latents themselves (:func:`_bic_noisy`).
    """
    K = E.shape[1]
    R = np.corrcoef(E.T)
    moved = np.zeros((0, K)) if moved is None else moved
    candidates = {(): []}  # no module at all
    proposed = _moved_partitions(moved, z_min, max_modules)  # kept whole: perturbations moved every member
    if K > 2:
        dist = np.clip(1.0 - R, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        for n_clusters in range(1, K + 1):
            cut = fcluster(tree, t=n_clusters, criterion="maxclust")
            groups = [np.flatnonzero(cut == c) for c in np.unique(cut)]
            groups = sorted((g for g in groups if g.size >= 2), key=lambda g: g[0])
            if len(groups) <= max_modules:
                candidates[tuple(tuple(g) for g in groups)] = groups
    rows, seen = [], set()
    pruned = [_non_negative(groups, _loadings(R, groups)[0])[0] for groups in candidates.values()]
    for groups in proposed + pruned:
        key = _partition_text(groups)
        if key in seen:  # two cuts that differ only by members without loading: one candidate
            continue
        seen.add(key)
        loadings = _loadings(R, groups)[0]  # refit without the dropped members
        fit = _bic(R, groups, loadings, E.shape[0]) if A is None else _bic_noisy(np.cov(E.T), A, groups, E.shape[0])
        cost = fit + _shift_cost(moved, groups, z_min)
        rows.append((len(groups), key, cost, groups))
    rows.sort(key=lambda r: r[2])
    best = rows[0][3]
    selection = pd.DataFrame(
        [(n, _partition_text(g), bic, i == 0) for i, (n, _, bic, g) in enumerate(rows)],
        columns=["n_modules", "partition", "description_length", "chosen"],
    )
    return best, selection


def _moved_partitions(moved: np.ndarray, z_min: float, max_modules: int) -> list[list[np.ndarray]]:
    """Partitions whose modules are the programs each perturbation moves together (>= 2, one sign),
    taken in order of shift size, each program in the first module that claims it."""
    groups = []
    for row in moved:
        sign = np.sign(row[np.argmax(np.abs(row))])
        g = np.flatnonzero(sign * row >= z_min)
        if g.size >= 2:
            groups.append((float(np.abs(row[g]).sum()), g))
    groups.sort(key=lambda t: -t[0])
    out, taken = [], set()
    for _, g in groups:
        g = np.array([k for k in g if k not in taken])
        if g.size >= 2:
            out.append(g)
            taken |= set(g.tolist())
    partitions = [sorted(out[:n], key=lambda g: g[0]) for n in range(1, min(len(out), max_modules) + 1)]
    return partitions


def _shift_cost(moved: np.ndarray, groups: list[np.ndarray], z_min: float) -> float:
    """Squared exogenous shift (SEs beyond ``z_min``) that the best single target of each moved
    perturbation leaves unexplained: one program, or one module (its members)."""
    cost = 0.0
    excess = np.maximum(np.abs(moved) - z_min, 0.0) ** 2
    for row in excess:
        total = row.sum()
        best = max([row.max(initial=0.0)] + [row[g].sum() for g in groups])
        cost += total - best
    return float(cost)


def _given_selection(E, given):
    R = np.corrcoef(E.T)
    groups = [g for g in given if g.size]
    loadings, _ = _loadings(R, groups)
    found, table = _choose_modules(E, max(1, len(given)))
    given_row = pd.DataFrame(
        [(len(groups), _partition_text(groups), _bic(R, groups, loadings, E.shape[0]), True)],
        columns=["n_modules", "partition", "description_length", "chosen"],
    )
    return pd.concat([given_row, table.assign(chosen=False)], ignore_index=True)


def _partition_text(groups) -> str:
    return " | ".join(",".join(str(k) for k in g) for g in groups) or "-"


def _loadings(R: np.ndarray, groups: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """One non-negative factor per module by principal-axis factoring of its block of ``R``."""
    K = R.shape[0]
    loadings = []
    for g in groups:
        block = R[np.ix_(g, g)]
        if g.size == 2:  # one correlation: only the product of the loadings is identified; split it evenly
            w = np.full(2, np.sqrt(max(block[0, 1], 0.0)))
        else:
            h = np.max(np.abs(block - np.eye(g.size)), axis=1)
            for _ in range(50):
                vals, vecs = np.linalg.eigh(block - np.diag(1.0 - h))
                w = vecs[:, -1] * np.sqrt(max(vals[-1], 0.0))
                w = w if w.sum() >= 0 else -w
                h = np.clip(w**2, 0.0, 0.995)
        loadings.append(np.clip(w, 0.0, np.sqrt(0.995)))
    psi = np.ones(K)
    for g, w in zip(groups, loadings, strict=True):
        psi[g] = np.maximum(1.0 - w**2, 0.005)
    return loadings, psi


def _non_negative(groups, loadings):
    """Drop members whose loading is (almost) zero; a module needs two members left."""
    kept_g, kept_w = [], []
    for g, w in zip(groups, loadings, strict=True):
        keep = w > MIN_LOADING
        if keep.sum() >= 2:
            kept_g.append(g[keep])
            kept_w.append(w[keep])
    return kept_g, kept_w


def _bic(R: np.ndarray, groups, loadings, n: int) -> float:
    """-2 log-likelihood of standardised residuals under ``W Phi W^T + Psi``, plus ``log(n)`` per parameter.

    ``Phi``: correlations between modules (a module graph makes modules co-vary), each the least-squares
    fit of the cross-module correlations; the parameters are the loadings and these correlations.
    """
    M = len(groups)
    S = _module_cov(R, groups, loadings)
    np.fill_diagonal(S, 1.0)  # psi fills the diagonal (standardised noise)
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0 or np.linalg.eigvalsh(S).min() <= 1e-6:
        return np.inf
    nll = n * (logdet + np.trace(np.linalg.solve(S, R)))
    return float(nll + np.log(n) * (sum(g.size for g in groups) + M * (M - 1) / 2))


def _trimmed(D, counts, se, n_tg, z_min, ridge, threshold) -> tuple[np.ndarray, set[int]]:
    """Program graph from the perturbations a single program hit explains.

    One perturbation at a time, the single whose untargeted equations fit worst (root mean square
    residual in SEs above ``z_min``) leaves the fit: a module hit moves several programs in a way no
    single target and its descendants reproduce, and kept in the fit it bends the graph.
    """
    out: set[int] = set()
    single = [p for p, n in enumerate(n_tg) if n == 1]
    for _ in range(len(single)):
        masked = {p: np.arange(D.shape[1]) for p in out}
        B, targets = _fit_given(D, counts, n_tg, masked, ridge, threshold)
        resid = (D - D @ B.T) / se[:, None]
        score = {p: float(np.sqrt(np.mean(resid[p, ~targets[p]] ** 2))) for p in single if p not in out}
        if not score or max(score.values()) < z_min:
            break
        out.add(max(score, key=score.get))
    return _fit_given(D, counts, n_tg, {p: np.arange(D.shape[1]) for p in out}, ridge, threshold)[0], out


def _bic_noisy(C: np.ndarray, A: np.ndarray, groups, n: int, rounds: int = 5) -> float:
    """BIC of the residual covariance ``C`` under ``W Phi W^T + Psi + A D A^T``.

    A model's latents are the programs plus measurement noise ``u`` (variances ``D``); the residual
    ``A (z + u)`` then carries ``A D A^T``, which correlates programs joined by strong edges and would
    pass for a module. ``D >= 0`` (non-negative least squares on the off-diagonal entries) and the
    module loadings are fit in turn; ``D`` costs one parameter per program.
    """

    K = C.shape[0]
    off = ~np.eye(K, dtype=bool)
    basis = np.stack([np.outer(A[:, k], A[:, k])[off] for k in range(K)], axis=1)
    sd = np.sqrt(np.diag(C))
    d = np.zeros(K)
    module = np.zeros((K, K))
    for _ in range(rounds):
        noise = (A * d) @ A.T
        Rm = (C - noise) / np.outer(sd, sd)
        np.fill_diagonal(Rm, 1.0)
        loadings, _ = _loadings(Rm, groups)
        module = _module_cov(Rm, groups, loadings) * np.outer(sd, sd)
        d, _ = nnls(basis, (C - module)[off])
    communality = np.zeros(K)
    for g, w in zip(groups, loadings, strict=True):
        communality[g] = w**2 * sd[g] ** 2
    S = module + (A * d) @ A.T
    np.fill_diagonal(S, 0.0)
    # psi >= 0 fills the diagonal: the variance neither the modules nor the noise explain
    explained = communality + (A**2) @ d
    S[np.diag_indices(K)] = explained + np.maximum(np.diag(C) - explained, 1e-3 * np.diag(C))
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return np.inf
    nll = n * (logdet + np.trace(np.linalg.solve(S, C)))
    M = len(groups)
    return float(nll + np.log(n) * (sum(g.size for g in groups) + M * (M - 1) / 2 + K))


def _module_cov(R: np.ndarray, groups, loadings) -> np.ndarray:
    """``W Phi W^T`` (zero diagonal) with ``Phi`` the least-squares correlations between modules."""
    K, M = R.shape[0], len(groups)
    W = np.zeros((K, max(M, 1)))
    for m, (g, w) in enumerate(zip(groups, loadings, strict=True)):
        W[g, m] = w
    Phi = np.eye(max(M, 1))
    for a in range(M):
        for b in range(a + 1, M):
            ww = np.outer(W[groups[a], a], W[groups[b], b])
            cross = np.sum(R[np.ix_(groups[a], groups[b])] * ww) / max(np.sum(ww**2), 1e-12)
            Phi[a, b] = Phi[b, a] = np.clip(cross, -1, 1)
    S = W @ Phi @ W.T
    np.fill_diagonal(S, 0.0)
    return S


def _reread(D, counts, se, n_tg, modules, loadings, B0, z_min, min_cosine, ridge, threshold, support):
    """Program graph given the modules, and the perturbation rows read as moving modules.

    A single perturbation moves a module when its exogenous shifts on the module's members (under the
    current graph, starting from the trimmed one) pass :func:`_moves`; its shifts on the members of
    every module it moves leave the program equations and the graph is refit, until the rows settle.
    The refit keeps to ``support`` (the one-level edges): a module can explain an edge away, never add one.
    """
    K = D.shape[1]
    single = np.flatnonzero([n == 1 for n in n_tg])
    B, module_rows = B0, None
    for _ in range(10):
        exo = D @ (np.eye(K) - B).T / se[:, None]
        new_rows = {}
        for p in single:
            moved = [
                m
                for m, (g, w) in enumerate(zip(modules, loadings, strict=True))
                if _moves(exo[p, g], w, z_min, min_cosine)
            ]
            if moved:
                new_rows[int(p)] = moved
        if new_rows == module_rows:
            break
        module_rows = new_rows
        masked = {p: np.concatenate([modules[m] for m in ms]) for p, ms in module_rows.items()}
        B = _fit_given(D, counts, n_tg, masked, ridge, threshold, support=support)[0]
    return B, module_rows or {}


def _moves(shift_z: np.ndarray, w: np.ndarray, z_min: float, min_cosine: float) -> bool:
    """Every member moved by at least ``z_min`` SEs, all the same way, in proportion to the loadings."""
    if not (np.all(shift_z >= z_min) or np.all(shift_z <= -z_min)):
        return False
    cos = abs(shift_z @ w) / max(np.linalg.norm(shift_z) * np.linalg.norm(w), 1e-12)
    return cos >= min_cosine


def _fit_given(D, counts, n_tg, masked, ridge, threshold, support=None):
    """Shift-SEM graph (and targets) where each row ``p`` of ``masked`` leaves the equations of the programs
    ``masked[p]`` (a module it moves; all programs: out of the fit)."""
    K = D.shape[1]
    targets = np.zeros_like(D, dtype=bool)
    program_rows = np.array([p not in masked and n == 1 for p, n in enumerate(n_tg)])
    order, single_target = _peel_order(D[program_rows]) if program_rows.any() else (list(range(K)), np.array([]))
    for r, t in zip(np.flatnonzero(program_rows), single_target, strict=True):
        targets[r] = True if t < 0 else np.eye(K, dtype=bool)[t]
    for p, ks in masked.items():
        targets[p, ks] = True
    rank = np.empty(K, dtype=int)
    rank[order] = np.arange(K)
    allowed = rank[None, :] < rank[:, None]
    if support is not None:  # given the modules, edges can only go: a module explains, it adds nothing
        allowed &= support
    multi = np.array([n > 1 and p not in masked for p, n in enumerate(n_tg)])
    held = targets | multi[:, None]  # doubles join once the graph names their targets
    for _ in range(5):
        B = solve_graph(D, counts, held, allowed, ridge)
        B = solve_graph(D, counts, held, allowed & (np.abs(B) >= threshold), ridge)
        exo = np.abs(D @ (np.eye(K) - B).T)
        new = targets.copy()
        for p in np.flatnonzero(multi):
            new[p] = False
            new[p, np.argsort(-exo[p], kind="stable")[: n_tg[p]]] = True
        if np.array_equal(new, held):
            break
        held = new
    return B, held


def _module_scores(Z, fit: _Fit, is_control) -> np.ndarray:
    """Bartlett factor score of every module from the residual noise ``z - B z``, in control SDs."""
    E = Z - Z @ fit.B.T
    S = np.zeros((Z.shape[0], len(fit.modules)))
    for m, (g, w) in enumerate(zip(fit.modules, fit.loadings, strict=True)):
        a = w / fit.psi[g]
        S[:, m] = E[:, g] @ a / max(float(a @ w), 1e-12)
    ref = S[is_control] if is_control.sum() > 2 else S
    sd = ref.std(axis=0)
    return (S - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _module_graph(Z, labels, is_control, fit: _Fit, perts, threshold, ridge):
    """Module graph from the module scores' shifts under the perturbations that move modules."""
    S = _module_scores(Z, fit, is_control)
    rows = sorted(fit.module_rows)
    base = S[is_control].mean(axis=0)
    D = np.array([S[labels == perts[p]].mean(axis=0) - base for p in rows])
    counts = np.array([(labels == perts[p]).sum() for p in rows], dtype=float)
    B_mod, targets = alternate(D, counts, [1] * len(rows), edge_threshold=threshold, ridge=ridge, max_iter=20)
    return B_mod, {p: int(np.flatnonzero(targets[i])[0]) for i, p in enumerate(rows) if targets[i].any()}


# ---- stability ------------------------------------------------------------------------------------
def _stabilities(fit: _Fit, Z, labels, is_control, n_targets, n_resamples, seed, opts):
    """Fraction of bootstrap refits keeping each program's co-members, each module edge and each program edge."""
    K, M = Z.shape[1], len(fit.modules)
    members = _comembers(fit.modules, K)
    kept_members, kept_mod, kept_prog = np.zeros(K), np.zeros((M, M)), np.zeros((K, K))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]
    for _ in range(n_resamples):
        rows = np.sort(np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups]))
        refit = _fit(Z[rows], labels[rows], is_control[rows], n_targets, **opts)
        kept_members += [members[k] == c for k, c in enumerate(_comembers(refit.modules, K))]
        kept_prog += refit.B != 0
        match = _match_modules(fit.modules, refit.modules)
        for j in range(M):
            for i in range(M):
                if i in match and j in match:
                    kept_mod[j, i] += refit.B_mod[match[j], match[i]] != 0
    n = max(n_resamples, 1)
    nan = n_resamples == 0
    return {
        "members": np.full(K, np.nan) if nan else kept_members / n,
        "module_edges": np.full((M, M), np.nan) if nan else kept_mod / n,
        "program_edges": np.full((K, K), np.nan) if nan else kept_prog / n,
    }


def _comembers(modules, K) -> list[frozenset]:
    out = [frozenset() for _ in range(K)]
    for g in modules:
        for k in g:
            out[k] = frozenset(int(x) for x in g) - {int(k)}
    return out


def _match_modules(reference, other) -> dict[int, int]:
    """Reference module -> module of ``other`` with the most shared members (one to one)."""
    if not reference or not other:
        return {}
    overlap = np.array([[len(set(a.tolist()) & set(b.tolist())) for b in other] for a in reference])
    rows, cols = linear_sum_assignment(-overlap)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0}


# ---- tables ---------------------------------------------------------------------------------------
def _module_names(modules, given=None, programs=(), prefix="M") -> list[str]:
    """``M1``, ``M2`` ... (``<prefix>1`` ...) in order of their first member; a given hierarchy's own names
    (its modules with programs)."""
    if given is not None:
        return [name for name, members in given.items() if any(x in programs for x in members)]
    return [f"{prefix}{m + 1}" for m in range(len(modules))]


def _membership_table(fit, names, programs, stability, given) -> pd.DataFrame:
    rows = [
        (2, names[m], programs[k], float(w), float(stability["members"][k]) if given is None else np.nan)
        for m, (g, ws) in enumerate(zip(fit.modules, fit.loadings, strict=True))
        for k, w in zip(g, ws, strict=True)
    ]
    if given is not None:  # given names replace M1.. ; nested modules form level 3
        rows += [
            (3, module, member, np.nan, np.nan)
            for module, members in given.items()
            for member in members
            if member in given
        ]
    return pd.DataFrame(rows, columns=["level", "parent", "child", "weight", "stability"])


def _edge_table(B: np.ndarray, names: list[str], stability: np.ndarray) -> pd.DataFrame:
    rows = [(names[i], names[j], float(B[j, i]), float(stability[j, i])) for j, i in zip(*np.nonzero(B), strict=True)]
    edges = pd.DataFrame(rows, columns=["source", "target", "weight", "stability"])
    return edges.assign(lag=pd.array([pd.NA] * len(edges), dtype="Int64"))


def _program_graph(fit: _Fit, programs, names, stability) -> pd.DataFrame:
    """Edges given the modules (kept, added) and the one-level edges a module explains."""
    module_of = {int(k): names[m] for m, g in enumerate(fit.modules) for k in g}
    rows = []
    for j, i in zip(*np.nonzero((fit.B != 0) | (fit.B1 != 0)), strict=True):
        if fit.B[j, i] != 0:
            status, weight, by = ("kept" if fit.B1[j, i] != 0 else "added"), fit.B[j, i], None
        else:
            status, weight = "explained", fit.B1[j, i]
            by = module_of.get(int(j)) or module_of.get(int(i))
        rows.append((programs[i], programs[j], float(weight), float(stability[j, i]), status, by))
    edges = pd.DataFrame(rows, columns=["source", "target", "weight", "stability", "status", "explained_by"])
    return edges.assign(lag=pd.array([pd.NA] * len(edges), dtype="Int64"))[
        ["source", "target", "weight", "stability", "lag", "status", "explained_by"]
    ]


def _identifiability(fit: _Fit, names, programs) -> pd.DataFrame:
    """Level-2 anchors: each module needs >= 2 programs that belong to it alone (here: every member)."""
    rows = []
    for name, g in zip(names, fit.modules, strict=True):
        n = int(g.size)
        if n >= 3:
            ok, reason = True, "3 or more exclusive programs: loadings and module hits identified"
        else:
            ok, reason = True, "2 exclusive programs: membership identified; loadings only as a product"
        rows.append((name, n, n, ok, reason))
    return pd.DataFrame(rows, columns=["module", "n_members", "n_exclusive", "identifiable", "reason"])


def _notes(fit: _Fit, names, programs, tolerance, given) -> list[str]:
    notes = []
    sel = fit.selection
    if sel is not None and len(sel) > 1:
        best, runner = sel.iloc[0], sel.iloc[1]
        if not given and runner["description_length"] - best["description_length"] < tolerance:
            notes.append(
                f"minimality cannot choose: {_named(runner['partition'], programs)} is within {tolerance:g} BIC"
                f" of the chosen {_named(best['partition'], programs)}"
            )
        if given:
            found = sel[~sel["chosen"]].iloc[0]
            if (
                found["partition"] != best["partition"]
                and found["description_length"] < best["description_length"] - tolerance
            ):
                notes.append(
                    f"the data prefer {_named(found['partition'], programs)} to the given hierarchy"
                    f" (description length {found['description_length']:.1f} < {best['description_length']:.1f})"
                )
    for name, g in zip(names, fit.modules, strict=True):
        hit = any(m == names.index(name) for ms in fit.module_rows.values() for m in ms)
        if g.size == 2 and hit:
            notes.append(
                f"{name} has 2 programs: a perturbation moving both is read as hitting {name} (no edge), though"
                " one program plus an edge fits its mean shifts as well"
            )
    if fit.modules and not fit.module_rows:
        notes.append("no perturbation moves a whole module: the module graph is not identified from interventions")
    return notes


def _named(partition: str, programs) -> str:
    if partition == "-":
        return "no module"
    return " | ".join("{" + ", ".join(programs[int(k)] for k in g.split(",")) + "}" for g in partition.split(" | "))


#: Collection prefixes of MSigDB-style gene-set names, left out of a module's readable name.
_SET_PREFIXES = ("HALLMARK_", "REACTOME_", "KEGG_", "WP_", "BIOCARTA_", "PID_", "GOBP_", "GOMF_", "GOCC_", "GO_")


def module_names(
    membership: pd.DataFrame, named_programs: Collection[str] = (), *, max_programs: int = 3
) -> dict[str, str]:
    """A readable name for every module: its id plus its programs' gene-set names, largest loading first.

    ``M1: INTERFERON ALPHA RESPONSE + INTERFERON GAMMA RESPONSE`` for a module whose programs come
    from those hallmark gene sets (a collection prefix such as ``HALLMARK_`` dropped, and then the
    underscores); other names as they are (``M2: joint_0 + joint_5``).
    A module none of whose programs comes from a gene set keeps its bare id.

    Parameters
    ----------
    membership
        ``hierarchy.parquet`` rows (``level, parent, child, weight``); level-2 rows are read.
    named_programs
        Programs named after a gene set (or another prior grouping of features: a robot's channels),
        e.g. the ``program`` column of ``anchors.parquet``. Other programs (unnamed latents) are only counted.
    max_programs
        At most this many programs are named; the rest are counted ("+ 2 more").
    """
    named = set(named_programs)
    level2 = membership[membership["level"] == 2].sort_values("weight", ascending=False, kind="stable")
    out = {}
    for module, group in level2.groupby("parent", sort=False):
        labels = [_set_label(p) for p in group["child"] if p in named]
        rest = len(group) - min(len(labels), max_programs)
        if not labels:
            out[str(module)] = str(module)
            continue
        more = f" + {rest} more" if rest else ""
        out[str(module)] = f"{module}: {' + '.join(labels[:max_programs])}{more}"
    return out


def _set_label(name: str) -> str:
    """A gene-set name as a reader says it: a collection's name (``HALLMARK_...``) without its prefix and
    with spaces for underscores; any other name (``P3``, ``joint_2``) as it is."""
    text = str(name)
    for prefix in _SET_PREFIXES:
        if text.upper().startswith(prefix) and len(text) > len(prefix):
            return text[len(prefix) :].replace("_", " ")
    return text


# ---- evaluation -----------------------------------------------------------------------------------
def module_metrics(
    membership: pd.DataFrame,
    module_graph: pd.DataFrame,
    program_graph: pd.DataFrame,
    *,
    true_hierarchy: pd.DataFrame,
    true_module_graph: pd.DataFrame | None,
    true_graph: pd.DataFrame | None,
    mapping: Mapping[str, str],
) -> dict[str, float]:
    """Module recovery against the truth of a two-level simulation.

    ``module_ari``: adjusted Rand index of the programs' module labels (a program in no module is its
    own label); ``module_shd``: SHD of the module graph after matching modules by shared programs;
    ``program_shd_one_level`` / ``program_shd_given_modules``: SHD of the program graph of the
    one-level readout and given the modules (``program_graph`` statuses; left out where no program graph
    was re-read, as on robot logs). ``mapping``: latent -> true program. With level-3 rows in the truth,
    ``level3_ari``: adjusted Rand index of the true modules' level-3 labels against the learned level 3
    (each learned module stands for the true module most of its programs belong to; a module in no
    learned level-3 module is its own label).
    """
    from sklearn.metrics import adjusted_rand_score  # deferred: scikit-learn loads only to score modules

    est = membership[membership["level"] == 2]
    true = true_hierarchy[true_hierarchy["level"] == 2]
    est_of = {mapping.get(c, c): p for p, c in zip(est["parent"], est["child"], strict=True)}
    true_of = dict(zip(true["child"], true["parent"], strict=True))
    programs = sorted(set(true_of) | set(mapping.values()))
    ari = adjusted_rand_score([true_of.get(p, f"-{p}") for p in programs], [est_of.get(p, f"-{p}") for p in programs])
    out = {"module_ari": float(ari), "n_modules": float(est["parent"].nunique())}
    if (true_hierarchy["level"] == 3).any():  # a three-level truth: the modules' supermodules too
        out["level3_ari"] = _level3_ari(membership, true_hierarchy, est_of, true_of)
    if true_module_graph is not None:
        est_modules = sorted(est["parent"].unique())
        true_modules = sorted(true["parent"].unique())
        overlap = np.array(
            [
                [sum(est_of.get(p) == a and true_of.get(p) == b for p in programs) for b in true_modules]
                for a in est_modules
            ]
        ).reshape(len(est_modules), len(true_modules))
        rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
        module_map = {est_modules[r]: true_modules[c] for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0}
        out["module_shd"] = graph_metrics(module_graph, true_module_graph, module_map)["shd"]
    if true_graph is not None and len(program_graph):  # none re-read (robot logs): no program SHD to give
        one = program_graph[program_graph["status"] != "added"]
        given = program_graph[program_graph["status"] != "explained"]
        out["program_shd_one_level"] = graph_metrics(one, true_graph, dict(mapping))["shd"]
        out["program_shd_given_modules"] = graph_metrics(given, true_graph, dict(mapping))["shd"]
    return out


def _level3_ari(membership, true_hierarchy, est_of, true_of) -> float:
    from sklearn.metrics import adjusted_rand_score  # deferred: scikit-learn loads only to score modules

    to_true = {}
    for module in {m for m in est_of.values()}:
        owners = pd.Series([true_of[p] for p, m in est_of.items() if m == module and p in true_of])
        if len(owners):
            to_true[module] = owners.mode().iloc[0]
    est3, true3 = membership[membership["level"] == 3], true_hierarchy[true_hierarchy["level"] == 3]
    learned = {to_true[c]: p for c, p in zip(est3["child"], est3["parent"], strict=True) if c in to_true}
    parent_of = dict(zip(true3["child"], true3["parent"], strict=True))
    modules = sorted(parent_of)
    return float(adjusted_rand_score([parent_of[m] for m in modules], [learned.get(m, f"-{m}") for m in modules]))
