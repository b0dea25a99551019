"""Steering by concept: what setting, shifting or knocking down does to every feature, with intervals.

The model's latents are programs in control standard deviations (controls: mean 0, SD 1) that
follow a linear SEM ``z = B z + eps`` (:meth:`~crl_pipe.models.CRLModel.get_adjacency`). A request
becomes exogenous shifts ``s`` and a set of programs held fixed (``do``):

- ``shift: {P: v}``: ``s_P = v``; P's parents still act on it.
- ``do: {P: v}``: P's incoming edges are cut and ``z_P = v``.
- ``knockdown: {G: f}``: shifts the program(s) G acts on, by one of three routes, recorded in ``route``:
  ``trained`` (G was perturbed in training: its exogenous shifts, scaled by ``f`` over the knockdown
  measured in its cells), ``gene_set`` (G belongs to a program's anchors / gene set: the typical
  training shift per unit knockdown, times ``f``) or ``loading`` (G loads most on a program: the same,
  signed by its loading).

The change of the programs is ``dz = (I - B_cut)^-1 e`` and the change of every feature
``L dz``, with ``L`` the least-squares decoder of the features on the model's latents (change in
log-normalised expression per control SD of a program; for ``linear`` this is its loadings in
expression units), an anchor feature decoded from its own program alone. A nonlinear decoder
(the VAEs') is thus taken to first order around the controls.

Intervals come from refits of the SEM on bootstrap resamples of the cells (within intervention
groups): each refit reads ``B``, the training shifts and ``L`` again from the resampled latents with
the shift readout every model uses (:func:`crl_pipe.models._shift_sem.fit_shift_sem`), the encoder
staying fixed (a refit is not a new training run); ``lower``/``upper`` are the model's prediction
plus the quantiles of the refits' deviations from the same readout on every cell (for ``linear``,
whose fit is that readout, simply the refits' quantiles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import ModelError
from .._steer_requests import SteerRequest, check_names, parse_requests
from ..io import empty_table
from ..models import CRLData, CRLModel
from ..models._shift_sem import fit_shift_sem, graph_settings
from ._resample import bootstrap_rows
from ._rollout import STEERING_COLUMNS, steer_commands

#: A gene knocked down by less than this fraction in its training cells is taken as not measurable.
_MIN_MEASURED_KNOCKDOWN = 0.05


@dataclass
class _Fit:
    """One version of the steering model: graph, training shifts and decoder."""

    B: np.ndarray  # K x K, B[j, i] = effect of i on j
    shifts: dict[str, np.ndarray]  # trained label -> exogenous shift (K), control SDs
    targets: dict[str, np.ndarray]  # trained label -> bool mask of its targets (K)
    L: np.ndarray  # features x K: change of each feature per control SD of each program


class Steerer:
    """A fitted model ready to answer steering requests (:func:`steer` is the one-call form).

    Parameters
    ----------
    model
        A fitted model whose latents follow a linear SEM (``capabilities.steers``).
    data
        The cells it was fit on (without held-out labels): decoder and bootstrap refits use them.
    n_boot
        Bootstrap refits of the SEM and decoder behind the intervals (0: no intervals).
    seed
        Seed of the bootstrap resamples.
    modules
        The modules of the dataset's concept hierarchy (:func:`crl_pipe.tl.hierarchy`), module -> {member
        program: loading in control SDs}: a request may then set or shift a module, which sets or shifts
        each member program by its loading times the value. None: the dataset has no hierarchy.
    """

    def __init__(
        self,
        model: CRLModel,
        data: CRLData,
        *,
        n_boot: int = 50,
        seed: int = 0,
        modules: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if not model.capabilities.steers:
            raise ModelError(f"model {model.name}: cannot be steered (no latent linear SEM over programs)")
        self.model, self.data = model, data
        self.modules = None if modules is None else {str(m): dict(members) for m, members in modules.items()}
        self.programs = list(model.latent_names)
        self.features = list(data.features)
        latents = model.get_latent_representation(data)
        self.Z = latents[self.programs].to_numpy(dtype=np.float64)
        self.knocked = _measured_knockdowns(data)
        self.anchor_mask = np.array(
            [[f in data.anchors.get(p, ()) for p in self.programs] for f in self.features], dtype=bool
        ).reshape(len(self.features), len(self.programs))
        self.point = self._model_fit()
        self.boot: list[_Fit] = []
        self.bootstrap(n_boot, seed)

    def bootstrap(self, n_boot: int, seed: int = 0) -> None:
        """Refit the SEM and decoder on ``n_boot`` bootstrap resamples of the cells (the intervals)."""
        self.boot = [self._refit(rows) for rows in _resamples(self.data, n_boot, seed)]
        # the readout on every cell: the refits' spread is taken around it (see _interval)
        self.readout = self._refit(np.arange(self.data.n_cells)) if n_boot else None

    # -- the fits ----------------------------------------------------------------------------------
    def _model_fit(self) -> _Fit:
        adjacency = self.model.get_adjacency().loc[self.programs, self.programs].to_numpy(dtype=np.float64)
        targets = self.model.get_targets()
        wide = targets.pivot(index="intervention", columns="latent", values="score")[self.programs]
        mask = targets.pivot(index="intervention", columns="latent", values="is_target")[self.programs]
        return _Fit(
            B=adjacency.T,
            shifts={str(k): v.to_numpy(dtype=np.float64) for k, v in wide.iterrows()},
            targets={str(k): v.to_numpy(dtype=bool) for k, v in mask.iterrows()},
            L=_decoder(self.data.X, self.Z, self.anchor_mask),
        )

    def _refit(self, rows: np.ndarray) -> _Fit:
        sub = _labels_only(self.data, rows, self.Z)
        sem = fit_shift_sem(self.Z[rows], sub, **graph_settings(self.model.params))  # as the model was fit
        return _Fit(
            B=sem.B,
            shifts={lab: sem.exogenous_shift[i] for i, lab in enumerate(sem.labels)},
            targets={lab: sem.target_mask[i] for i, lab in enumerate(sem.labels)},
            L=_decoder(self.data.X[rows], self.Z[rows], self.anchor_mask),
        )

    # -- requests ----------------------------------------------------------------------------------
    def reachable_genes(self) -> set[str]:
        """Genes a knockdown can name: measured features, trained single-target perturbations, anchors."""
        genes = set(self.features) | set(_trained_singles(self.data).values())
        return genes | {g for members in self.data.anchors.values() for g in members}

    def check(self, requests: Sequence[Mapping] | Mapping, *, where: str = "steer") -> list[SteerRequest]:
        """Parse and check ``requests`` against the model's programs and the genes it can reach."""
        parsed = parse_requests(requests, where=where)
        modules = None if self.modules is None else list(self.modules)
        check_names(parsed, programs=self.programs, genes=self.reachable_genes(), modules=modules, where=where)
        return parsed

    def _levers(self, request: SteerRequest) -> tuple[dict[str, float], dict[str, float]]:
        """The request's ``shift`` and ``do`` over programs: a module becomes its member programs, each
        moved by its loading times the module's value (shifts of one program add up)."""
        shift: dict[str, float] = {}
        do: dict[str, float] = {}
        for action, out in (("shift", shift), ("do", do)):
            for name, value in getattr(request, action).items():
                members = (self.modules or {}).get(name, {name: 1.0}) if name not in self.programs else {name: 1.0}
                for program, loading in members.items():
                    if program in self.programs:  # a nested module's members are modules: not programs
                        out[program] = out.get(program, 0.0) + loading * value
        return shift, do

    def predict(
        self, request: SteerRequest, *, prior_only: bool = False, fit: _Fit | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Change of every program (K) and feature, and the routes of its knockdowns, under ``fit``
        (the model's own by default). ``prior_only``: knockdowns never use a trained perturbation."""
        fit = fit or self.point
        K = len(self.programs)
        index = {p: k for k, p in enumerate(self.programs)}
        e, routes = np.zeros(K), []
        for gene, fraction in request.knockdown.items():
            shift, route = self._knockdown(gene, fraction, fit, prior_only)
            e += shift
            routes.append(route)
        shift, do = self._levers(request)
        routes += self._module_routes(request)
        for program, value in shift.items():
            e[index[program]] += value
        fixed = [index[p] for p in do]
        B = fit.B.copy()
        B[fixed, :] = 0.0  # do: the set programs no longer listen to their parents
        for program, value in do.items():
            e[index[program]] = value
        dz = np.linalg.solve(np.eye(K) - B, e)
        return dz, fit.L @ dz, routes

    def _module_routes(self, request: SteerRequest) -> list[str]:
        """``module M1: P1 x 0.59, P3 x 0.55`` for each module the request sets or shifts."""
        named = [n for n in [*request.do, *request.shift] if n not in self.programs and n in (self.modules or {})]
        return [
            f"module {n}: " + ", ".join(f"{p} x {w:.2f}" for p, w in self.modules[n].items() if p in self.programs)
            for n in named
        ]

    def _knockdown(self, gene: str, fraction: float, fit: _Fit, prior_only: bool) -> tuple[np.ndarray, str]:
        """Exogenous shifts (K) of knocking ``gene`` down by ``fraction``, and the route that maps it."""
        K = len(self.programs)
        label = None if prior_only else _trained_label(self.data, gene, fit)
        if label is not None:
            measured = self.knocked.get(label)
            if measured is not None:
                scale, note = fraction / measured, f"x {fraction:g}/{measured:.2f} measured"
            else:
                scale, note = 1.0, "as trained; knockdown not measured"
            return fit.shifts[label] * scale, f"knockdown {gene}: trained {label} ({note})"
        typical, reference = self._typical_shift(fit)
        scale = fraction / reference if reference else 1.0
        members = [k for k, p in enumerate(self.programs) if gene in self.data.anchors.get(p, ())]
        e = np.zeros(K)
        if members:
            e[members] = typical * scale
            names = ", ".join(self.programs[k] for k in members)
            return e, f"knockdown {gene}: gene_set {names} (typical shift {typical * scale:.2f})"
        if gene not in self.features:
            raise ModelError(f"knockdown {gene}: no route to a program (not trained, in no gene set, not measured)")
        row = fit.L[self.features.index(gene)]
        k = int(np.argmax(np.abs(row)))
        if row[k] == 0:
            raise ModelError(f"knockdown {gene}: no route to a program (loads on none)")
        e[k] = typical * scale * np.sign(row[k])
        return e, f"knockdown {gene}: loading {self.programs[k]} ({row[k]:+.2f}, typical shift {e[k]:.2f})"

    def _typical_shift(self, fit: _Fit) -> tuple[float, float]:
        """Median exogenous shift of the trained single perturbations on their targets (control SDs), and
        the median knockdown fraction measured in their cells (the shift's reference; 0 when unmeasured)."""
        singles = [lab for lab in _trained_singles(self.data) if lab in fit.shifts]
        values = [fit.shifts[lab][fit.targets[lab]] for lab in singles if fit.targets[lab].any()]
        values = np.concatenate(values) if values else np.array([])
        if not values.size:
            raise ModelError("knockdown: no trained single perturbation with a target to scale a prior route by")
        measured = [self.knocked[lab] for lab in singles if lab in self.knocked]
        return float(np.median(values)), float(np.median(measured)) if measured else 0.0

    def table(self, requests: Sequence[SteerRequest], *, level: float = 0.9) -> pd.DataFrame:
        """``steering.parquet`` rows of ``requests`` (see :func:`steer`)."""
        frames = []
        for request in requests:
            dz, change, routes = self.predict(request)
            lower, upper = self._interval(request, level)
            frames.append(
                pd.DataFrame(
                    {
                        "request": request.name,
                        "feature": self.features,
                        "predicted_change": change,
                        "lower": lower,
                        "upper": upper,
                        "route": "; ".join(routes) or "direct",
                        "path": self._paths(request, dz, self.point),
                        "frame": pd.Series([pd.NA] * len(self.features), dtype="Int64"),  # robots only
                    }
                )
            )
        if not frames:
            return empty_table("steering")
        table = pd.concat(frames, ignore_index=True)
        order = table["predicted_change"].abs().groupby(table["request"], sort=False).rank(ascending=False)
        table = table.assign(_rank=order).sort_values(["request", "_rank"], kind="stable").drop(columns="_rank")
        return table[STEERING_COLUMNS].reset_index(drop=True)

    def _interval(self, request: SteerRequest, level: float) -> tuple[np.ndarray, np.ndarray]:
        if not self.boot:
            nan = np.full(len(self.features), np.nan)
            return nan, nan
        # a deep model's own graph and shifts (what the point prediction uses) are not those of the
        # readout its refits repeat: the refits' deviations from the readout on every cell are
        # centred on the model's prediction (for linear, whose fit is the readout, they coincide)
        point = self.predict(request)[1]
        centre = self.predict(request, fit=self.readout)[1]
        draws = np.array([self.predict(request, fit=fit)[1] for fit in self.boot]) - centre
        tail = (1.0 - level) / 2.0
        return point + np.quantile(draws, tail, axis=0), point + np.quantile(draws, 1.0 - tail, axis=0)

    def _paths(self, request: SteerRequest, dz: np.ndarray, fit: _Fit) -> list[str]:
        """Per feature, the chain of programs carrying the effect: the strongest path in the graph from a
        steered program to the program that contributes most to the feature's change."""
        sources = [k for k in range(len(self.programs)) if abs(dz[k]) > 0 and self._is_steered(request, k, fit)]
        graph = nx.DiGraph()
        graph.add_nodes_from(range(len(self.programs)))
        cut = {self.programs.index(p) for p in self._levers(request)[1]}
        for j, i in zip(*np.nonzero(fit.B), strict=True):
            if j not in cut:
                graph.add_edge(int(i), int(j), cost=-np.log(abs(fit.B[j, i])))
        chains: dict[int, str] = {}
        contribution = np.abs(fit.L * dz[None, :])
        carriers = np.argmax(contribution, axis=1)
        paths = []
        for f, carrier in enumerate(carriers):
            if contribution[f, carrier] == 0:
                paths.append("")
                continue
            if carrier not in chains:
                chains[carrier] = self._chain(graph, sources, int(carrier))
            paths.append(chains[carrier])
        return paths

    def _is_steered(self, request: SteerRequest, k: int, fit: _Fit) -> bool:
        """Whether program ``k`` receives the request directly (set, shifted, or a knockdown's target)."""
        name = self.programs[k]
        if any(name in levers for levers in self._levers(request)):
            return True
        return any(self._knockdown(g, f, fit, False)[0][k] != 0 for g, f in request.knockdown.items())

    def _chain(self, graph: nx.DiGraph, sources: list[int], carrier: int) -> str:
        best = None
        for source in sources:
            if source == carrier:
                return self.programs[carrier]
            try:  # the strongest chain: most |weight| product, the least summed -log|weight|
                cost, path = nx.single_source_bellman_ford(graph, source, carrier, weight="cost")
            except nx.NetworkXNoPath:
                continue
            if best is None or cost < best[0]:
                best = (cost, path)
        return " -> ".join(self.programs[k] for k in best[1]) if best else self.programs[carrier]


def steer(
    model: CRLModel,
    requests: Sequence[Mapping] | Mapping,
    data: CRLData,
    *,
    n_boot: int = 50,
    level: float = 0.9,
    seed: int = 0,
    modules: Mapping[str, Mapping[str, float]] | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Predict what steering requests do to every feature, with an interval per feature.

    Parameters
    ----------
    model
        A fitted model with a latent linear SEM over programs (``linear``, ``sparse_vae``, ``causal_vae``).
    requests
        One request or a list (:mod:`crl_pipe._steer_requests`): ``{"do": {"P3": -2.0}}``,
        ``{"shift": {"P3": -1.0}}``, ``{"knockdown": {"STAT1": 0.8}}``, or several actions in one
        (a combination), with an optional ``name``.
    data
        The cells the model was fit on (decoder and bootstrap refits).
    n_boot
        Bootstrap refits of the SEM and decoder behind ``lower``/``upper`` (0: NaN intervals).
    level
        Coverage of the interval (0.9: the 5% and 95% quantiles of the refits).
    seed
        Seed of the bootstrap resamples.
    modules
        The dataset's concept hierarchy, as ``hierarchy.parquet`` (:func:`crl_pipe.tl.hierarchy`) or
        module -> {program: loading}: ``{"shift": {"M1": 1.0}}`` then shifts each member program of
        module M1 by its loading (control SDs per module SD), ``do`` sets them so. None: no hierarchy,
        and a request naming a module is an error that says so.

    Returns
    -------
    Table ``request, feature, predicted_change, lower, upper, route, path, frame``: the change of each
    feature's mean (log-normalised expression for a screen of counts) from the control mean,
    largest first within a request; ``route``: how each knockdown was mapped to programs
    (``direct`` when the request names programs only); ``path``: the chain of programs that
    carries the effect to the feature, e.g. ``P1 -> P3 -> P5``; ``frame``: null (a robot's command
    requests give one row per frame after the command starts).

    A request naming a program or gene the model does not have, or a fraction outside (0, 1], is
    a :class:`~crl_pipe.ConfigError` raised before anything is computed.

    A model that rolls out (``temporal``, robot logs) answers ``command`` requests instead
    (:func:`crl_pipe.tl.steer_commands`: one row per state and frame after the command starts, with
    ``n_boot`` refits on resampled episodes).
    """
    if model.capabilities.rolls_out:  # a robot's transition: command requests, answered by rollouts
        return steer_commands(model, requests, data, n_boot=n_boot, level=level, seed=seed)
    parse_requests(requests)  # syntax first: nothing is computed for a malformed request
    if isinstance(modules, pd.DataFrame):
        modules = module_members(modules)
    steerer = Steerer(model, data, n_boot=0, seed=seed, modules=modules)
    parsed = steerer.check(requests)
    steerer.bootstrap(n_boot, seed)
    return steerer.table(parsed, level=level)


# -- helpers ---------------------------------------------------------------------------------------
def module_members(hierarchy: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Module -> {program: loading} of a ``hierarchy.parquet`` table: level 2 (module -> program, loading
    in control SDs) as it is; a level-3 module (of modules) reaches programs through its member modules,
    the loadings multiplied along the way."""
    direct: dict[str, dict[str, float]] = {}
    for row in hierarchy[hierarchy["level"] >= 2].itertuples():
        direct.setdefault(str(row.parent), {})[str(row.child)] = float(row.weight)

    def programs(module: str, seen: frozenset[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for child, loading in direct.get(module, {}).items():
            parts = programs(child, seen | {module}) if child in direct and child not in seen else {child: 1.0}
            for program, weight in parts.items():
                out[program] = out.get(program, 0.0) + loading * weight
        return out

    return {module: programs(module, frozenset()) for module in direct}


def _resamples(data: CRLData, n_boot: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [bootstrap_rows(data, rng) for _ in range(n_boot)]


def _labels_only(data: CRLData, rows: np.ndarray, Z: np.ndarray) -> CRLData:
    """The labels of ``rows`` without copying the expression matrix (the SEM readout needs only them)."""
    return CRLData(
        X=Z[rows],
        sample_ids=data.sample_ids[rows],
        features=[f"z{k}" for k in range(Z.shape[1])],
        intervention=data.intervention[rows],
        is_control=data.is_control[rows],
        targets=data.targets,
    )


def _decoder(X: np.ndarray | sp.spmatrix, Z: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Least-squares change of every feature per unit of each latent (features x K), with an intercept.

    ``anchors`` (features x K, bool): a feature that anchors one program depends on it alone (the
    anchor assumption), so it is regressed on that program only and loads on no other.
    """
    Zc = Z - Z.mean(axis=0)
    cross = np.asarray(X.T @ Zc) if sp.issparse(X) else X.T.astype(np.float64) @ Zc  # Zc is centred: no X mean
    gram = Zc.T @ Zc + 1e-8 * np.eye(Z.shape[1])
    L = np.linalg.solve(gram, cross.T).T
    single = anchors.sum(axis=1) == 1
    own = np.where(anchors[single], cross[single] / np.diag(gram)[None, :], 0.0)
    L[single] = own
    return L


def _trained_singles(data: CRLData) -> dict[str, str]:
    """Trained perturbation label -> its one target (a gene, or a variable of a table), for single-target labels."""
    return {lab: str(data.targets[lab][0]) for lab in data.perturbations if len(data.targets.get(lab, ())) == 1}


def _trained_label(data: CRLData, gene: str, fit: _Fit) -> str | None:
    """The trained single-target perturbation of ``gene`` (the one named as the gene first), if any."""
    labels = [lab for lab, target in _trained_singles(data).items() if target == gene and lab in fit.shifts]
    return gene if gene in labels else (labels[0] if labels else None)


def _measured_knockdowns(data: CRLData) -> dict[str, float]:
    """Trained single -> fraction of its target removed in its cells (log-normalised means back on the count
    scale), where its target is measured and the fraction is plausible (in [5%, 100%]): a knockdown."""
    index = {f: i for i, f in enumerate(data.features)}
    control = data.is_control
    out = {}
    for lab, gene in _trained_singles(data).items():
        if gene not in index:
            continue
        col = data.X[:, index[gene]]
        col = np.asarray(col.toarray()).ravel() if sp.issparse(col) else np.asarray(col).ravel()
        base = np.expm1(col[control]).mean()
        if base > 0:
            fraction = float(1.0 - np.expm1(col[data.intervention == lab]).mean() / base)
            if _MIN_MEASURED_KNOCKDOWN <= fraction <= 1.0:
                out[lab] = fraction
    return out
