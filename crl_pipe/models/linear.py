"""``linear``: a linear latent SEM identified from anchors and interventions.

Assumptions (said in the docs too):
1. Each program k has >= 2 anchor genes whose (log) expression depends on program k alone, so
   the anchors measure z_k up to scale and noise: a one-factor analysis of them gives a score.
   An observed variable that anchors itself (program name = its one feature, e.g. a protein of
   an observed-variable table) is its own score.
2. Programs follow z = B z + eps on a DAG; a perturbation shifts the noise of its target
   program(s) (soft intervention; it need not be perfect) and leaves every other mechanism as is.
3. Then the mean shift of the scores under perturbation p obeys d_p = (I - B)^-1 s_p with
   s_p non-zero only on p's targets. For each program j, every perturbation that does not target j
   gives one linear equation d_p[j] = sum_i B[j, i] d_p[i]; B follows by least squares on those
   equations, restricted to a causal order. Means are unbiased under measurement noise of the
   scores, which is why mean shifts (not the noisy per-cell regressions) carry the graph. With
   raw counts the means are read from the anchors' counts (:mod:`._count_means`): the mean of
   log counts bends where anchors have about one count per cell or fewer.
Targets and B are estimated alternately: targets = largest exogenous shift (I - B) d_p.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.decomposition import FactorAnalysis

from .._constants import STARVED_COUNTS
from .._errors import ModelError
from ._anchor_profiles import consistent_anchors
from ._base import CRLModel
from ._count_means import ProgramCounts, count_group_shifts, count_posterior_means, stratified_sample
from ._data import CRLData, align_features, column_stats, crossprod, dense_columns, matmul
from ._joint_counts import JointAnchors, joint_group_means, joint_posterior_means
from ._shift_sem import SHIFT_SEM_DEFAULTS, ShiftSEMOutputs, fit_shift_sem, graph_settings
from .registry import model_capabilities


class LinearSEM(ShiftSEMOutputs, CRLModel):
    """Linear latent SEM from anchor genes and intervention mean shifts (closed form).

    Parameters
    ----------
    edge_threshold
        Smallest |weight| kept as an edge, in control standard deviations of the child per
        control standard deviation of the parent.
    edge_z
        Smallest significance of an edge, |weight| / standard error, the error from how far its
        program's mean-shift equations misfit beyond sampling noise (0: every edge over
        ``edge_threshold`` is kept). Dense graphs read from estimated latents fit their equations
        loosely, and least squares spreads that misfit over many small weights; this keeps the
        edges the misfit cannot explain. Equations that fit to sampling noise keep every edge.
    ridge
        Ridge penalty on the least-squares fit of B (guards against too few perturbations).
    max_iter
        Rounds of alternating target assignment and graph fitting.
    min_target_z
        z-score of the exogenous shift above which an intervention counts as hitting a latent.
    size_factors
        ``"stable"``: when the data carry raw counts, the anchors are read from counts divided by each
        cell's total over the *stable* features, those that move with the library alone (see
        :func:`stable_features`), so that programs taking over the library do not shift every
        other program; ``"total"`` (or no counts): the data's own log-normalised values.
    readout
        ``"counts"``: with raw counts and stable size factors, each perturbation's mean shift of a
        program is read from its anchors' counts by a negative-binomial model of the program
        (:mod:`crl_pipe.models._count_means`), unbiased where anchors have about one count per
        cell or fewer, and each cell's latent is its posterior mean under that model (a label-free
        prior); ``"scores"``: mean shifts and latents from the anchor scores.
    count_prior
        Prior of the latents within a perturbation, in the count model's fit: ``"joint"`` (default:
        the per-program models of ``"group"``, then all programs at once with one covariance between
        them, :mod:`crl_pipe.models._joint_counts`, so that a cell whose anchors of one program hold
        no counts, because another program took its library, is told that program's latent by the
        programs it moves with; each cell's latent is its posterior mean under one normal over all
        cells, with that covariance); ``"size"`` (one program at a time, its prior regressed on the
        other programs' latents of a first pass and on the cell's log size factor with a slope per
        perturbation); ``"others"`` (as ``"size"`` without the size factor); ``"group"``: one normal
        per perturbation and program (one pass).
    check_anchors
        Drop the minority of a program's anchors whose mean shifts over the perturbations do not
        follow the program's (genes of the set that other programs drive; see
        :mod:`crl_pipe.models._anchor_profiles`); the anchors used are in :attr:`anchor_sets`.
    latent_size
        With ``count_prior: joint``, each cell's log size factor is one more latent of the joint
        count model, observed through the cell's total over the stable features, instead of taken as
        measured (that total plus one). Where programs take over a cell's whole library the total is a
        few counts or none, and a measured size factor reads every program of the cell too low
        (:mod:`crl_pipe.models._joint_counts`).
    refit_anchors
        With ``count_prior: joint``, the anchors' count models (each anchor's intercept and slope, each
        program's dispersion) are refitted inside the joint model's EM, on the log-likelihood expected
        under the cells' posteriors, instead of kept from the per-program fits. Those fits read a
        program alone, with the measured size factor; where programs take over the library they get a
        program's level against the other programs' and its dispersion wrong. Off by default: it cuts
        the graph's errors on some starved screens and adds to them on others (docs/benchmarks.md,
        tenth round), because the size factor's prior, apart from the programs, is not how a library
        is shared out, and refitted anchors absorb that.
    """

    name = "linear"
    capabilities = model_capabilities(name)

    def __init__(
        self,
        edge_threshold: float = SHIFT_SEM_DEFAULTS["edge_threshold"],
        edge_z: float = SHIFT_SEM_DEFAULTS["edge_z"],
        ridge: float = SHIFT_SEM_DEFAULTS["ridge"],
        max_iter: int = SHIFT_SEM_DEFAULTS["max_iter"],
        min_target_z: float = SHIFT_SEM_DEFAULTS["min_target_z"],
        size_factors: str = "stable",
        readout: str = "counts",
        count_prior: str = "joint",
        check_anchors: bool = True,
        latent_size: bool = True,
        refit_anchors: bool = False,
    ) -> None:
        if size_factors not in ("stable", "total"):
            raise ModelError(f"model linear: size_factors must be 'stable' or 'total', got {size_factors!r}")
        if readout not in ("counts", "scores"):
            raise ModelError(f"model linear: readout must be 'counts' or 'scores', got {readout!r}")
        if count_prior not in _COUNT_PRIORS:
            raise ModelError(
                f"model linear: count_prior must be one of {', '.join(map(repr, _COUNT_PRIORS))}, got {count_prior!r}"
            )
        super().__init__(
            edge_threshold=edge_threshold, edge_z=edge_z, ridge=ridge, max_iter=max_iter, min_target_z=min_target_z,
            size_factors=size_factors, readout=readout, count_prior=count_prior, check_anchors=bool(check_anchors),
            latent_size=bool(latent_size), refit_anchors=bool(refit_anchors),
        )  # fmt: skip
        self.features: list[str] = []
        self.anchor_sets: dict[str, list[str]] = {}
        self.size_features: list[str] = []
        self.assigned: dict[str, list[str]] = {}
        self.starved_cells: float | None = None

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0) -> LinearSEM:
        programs = [p for p, genes in data.anchors.items() if len(genes) >= 2 or genes == [p]]
        if not programs:
            raise ModelError(
                "model linear: needs at least one program with >= 2 anchor features, or a variable anchoring "
                "itself (anchors.parquet)"
            )
        if not data.is_control.any():
            raise ModelError("model linear: needs control cells to measure intervention shifts against")
        self.latent_names, self.features = programs, list(data.features)
        for key, tensor in fit_anchor_scores(data, programs, seed).items():
            self.register_buffer(key, tensor)
        scores = self._scores(data.X)
        current = data
        if self.params["size_factors"] == "stable" and data.counts is not None:
            for _ in range(_SIZE_ROUNDS):  # size factors from the stable features of the current scores
                stable = stable_features(current, scores)
                if stable.sum() < _MIN_STABLE:  # too few genes to size a cell by (a small targeted panel)
                    break
                self.size_features = [data.features[i] for i in np.flatnonzero(stable)]
                current = replace(data, X=stable_lognorm(data.counts, stable))
                for key, tensor in fit_anchor_scores(current, programs, seed).items():
                    self.register_buffer(key, tensor)
                scores = self._scores(current.X)
        self.starved_cells = self._starved_share(data)
        data, scores = self._check_anchors(data, current, programs, scores, seed)
        p = self.params
        shifts, scores, resolved = self._fit_count_readout(data, scores)
        shift_sem = fit_shift_sem(scores, data, shifts=shifts, resolved=resolved, **graph_settings(p))
        self.intervention_names = shift_sem.labels
        for key, tensor in shift_sem.buffers().items():
            self.register_buffer(key, tensor)
        self.register_buffer("loadings", torch.tensor(_loadings(data.X, scores)))
        self.equation_misfit = shift_sem.misfit
        self.history = pd.DataFrame({"epoch": [0], "split": ["train"], "loss": [shift_sem.residual]})
        return self

    def _starved_share(self, data: CRLData) -> float | None:
        """Share of the cells whose stable features hold :data:`STARVED_COUNTS` counts or fewer (None
        without stable size factors): programs took over nearly their whole library."""
        if not self.size_features:
            return None
        size = stable_size(sp.csr_matrix(data.counts), np.isin(data.features, self.size_features))
        return float(np.mean(size - 1.0 <= STARVED_COUNTS))

    def _check_anchors(
        self, data: CRLData, current: CRLData, programs: list[str], scores: np.ndarray, seed: int
    ) -> tuple[CRLData, np.ndarray]:
        """Keep the anchors that follow their program over the perturbations (``check_anchors``), read on
        ``current`` (the sized expression); refit the scores when some were dropped. Returns ``data`` with
        the kept anchors, and the scores."""
        listed = {p: list(data.anchors[p]) for p in programs}
        self.anchor_sets = consistent_anchors(current, programs) if self.params["check_anchors"] else listed
        if self.anchor_sets == listed:
            return data, scores
        anchors = {**data.anchors, **self.anchor_sets}
        for key, tensor in fit_anchor_scores(replace(current, anchors=anchors), programs, seed).items():
            self.register_buffer(key, tensor)
        return replace(data, anchors=anchors), self._scores(current.X)

    def _fit_count_readout(
        self, data: CRLData, scores: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """Fit and store the programs' count models (``readout: counts``); returns the mean shifts (None
        without the count readout), the cells' latents (the anchor ``scores`` without it) and each
        perturbation's resolved share (:meth:`_fit_joint_counts`; None without the joint model)."""
        shifts, covariates, prior = None, None, self.params["count_prior"]
        for _ in range(2 if prior in ("size", "others") else 1):
            count_fit = self._count_fit(data, scores, covariates)
            if count_fit is None:
                return shifts, scores, None
            shifts, models = count_fit
            self._store_count_models(data, models)
            raw = self._count_latents(data, scores)  # in the count model's units until the scale is stored
            covariates = self._store_count_scale(raw, data.is_control)
        resolved = None
        if prior == "joint":
            counts, size = self._sized_counts(data)
            shifts, resolved = self._fit_joint_counts(data, counts, size, shifts, raw)
            raw = self._joint_latents(counts, size, raw)  # the per-program latents start the joint search
        return shifts, self._store_count_scale(raw, data.is_control), resolved

    def _count_fit(
        self, data: CRLData, scores: np.ndarray, covariates: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[ProgramCounts | None]] | None:
        """Perturbations x programs mean shifts read from the anchors' counts (control SDs) and each
        program's count model (its prior regressed on ``covariates`` when given); None unless
        ``readout: counts`` and the cells are sized by stable features."""
        if self.params.get("readout") != "counts" or not self.size_features:
            return None
        index = {f: i for i, f in enumerate(data.features)}
        size = stable_size(sp.csr_matrix(data.counts), np.isin(data.features, self.size_features))
        group, n_groups = _count_groups(data)
        anchors = self.anchor_sets or data.anchors  # fits saved before the anchor check: as listed
        columns = [[index[g] for g in anchors[p]] for p in self.latent_names]
        means, models = count_group_shifts(
            data.counts, size, columns, group, n_groups, scores, covariates=covariates,
            size_slopes=self.params.get("count_prior") == "size",
        )  # fmt: skip
        return means[1:], models

    def _fit_joint_counts(
        self, data: CRLData, counts: sp.csr_matrix, size: np.ndarray, shifts: np.ndarray, raw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Fit the joint count model of the modelled programs (:mod:`._joint_counts`) from their per-program
        models and latents ``raw``; store its label-free prior and return ``shifts`` with its group means,
        and per perturbation the least share of its programs' variance that its cells resolve (None with
        fewer than two modelled programs)."""
        modelled = self._modelled()
        K = len(self.latent_names)
        latent_size = self.params["latent_size"]
        prior_mean, prior_cov = np.zeros(K + latent_size), np.eye(K + latent_size)
        least_resolved = None
        if modelled.size >= 2:  # one program has no other to borrow from
            group, n_groups = _count_groups(data)
            rows = stratified_sample(group, n_groups)
            Y, anchors = self._joint_anchors(counts[rows], modelled)
            means, centre, cov, fitted, resolved = joint_group_means(
                Y, np.log(size[rows]), anchors, group[rows], n_groups, raw[rows][:, modelled],
                stable_total=size[rows] - 1.0 if latent_size else None, refit_anchors=self.params["refit_anchors"],
            )  # fmt: skip
            if self.params["refit_anchors"]:
                self._store_joint_anchors(modelled, fitted)
            shifts = shifts.copy()
            shifts[:, modelled] = means[1:]
            # the least over programs: a perturbation's shifts enter every program's equations, so one
            # program read from the prior spoils its row (docs/benchmarks.md, thirteenth round)
            least_resolved = np.maximum(resolved[1:].min(axis=1), _LEAST_RESOLVED)
            joint = self._joint_entries(latent_size)
            prior_mean[joint], prior_cov[np.ix_(joint, joint)] = centre, cov
        self.register_buffer("count_joint_mean", torch.tensor(prior_mean))
        self.register_buffer("count_joint_cov", torch.tensor(prior_cov))
        self.count_model[:, 3], self.count_model[:, 4] = 0.0, 1.0  # the joint latents' scale is stored anew
        return shifts, least_resolved

    def _joint_anchors(self, counts: sp.csr_matrix, modelled: np.ndarray) -> tuple[sp.csr_matrix, JointAnchors]:
        """The modelled programs' anchor columns of ``counts`` and the anchors' fitted models."""
        feature, program = self._joint_anchor_index(modelled)
        theta = self.count_model[modelled, 0].numpy()[program]
        b, a = self.count_b.numpy()[:, modelled], self.count_a.numpy()[:, modelled]
        return counts[:, feature], JointAnchors(program, b[feature, program], a[feature, program], theta)

    def _store_joint_anchors(self, modelled: np.ndarray, anchors: JointAnchors) -> None:
        """Write the joint model's refitted anchor models back into the count model's buffers."""
        feature, program = self._joint_anchor_index(modelled)
        program = modelled[program]
        self.count_b[feature, program] = torch.as_tensor(anchors.b)
        self.count_a[feature, program] = torch.as_tensor(anchors.a)
        self.count_model[program, 0] = torch.as_tensor(anchors.theta)

    def _joint_anchor_index(self, modelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature and program (an index into ``modelled``) of each anchor of the joint model, by program."""
        feature, program = np.nonzero(self.count_anchor.numpy()[:, modelled])
        order = np.argsort(program, kind="stable")
        return feature[order], program[order]

    def _joint_entries(self, latent_size: bool) -> np.ndarray:
        """Entries of the stored joint prior that the joint model reads: the modelled programs, and the log
        size factor (stored last, after every program) when it is a latent."""
        modelled = self._modelled()
        return np.append(modelled, len(self.latent_names)) if latent_size else modelled

    def _modelled(self) -> np.ndarray:
        """Indices of the programs that have a count model (two anchors or more)."""
        return np.flatnonzero(~np.isnan(self.count_model[:, 0].numpy()))

    def _store_count_models(self, data: CRLData, models: list[ProgramCounts | None]) -> None:
        """Buffers of the programs' count models: anchors (features x programs), their ``b`` and ``a``,
        and per program its dispersion (NaN: not modelled) and prior, then the control mean and SD of the
        posterior means (set by :meth:`_store_count_scale`)."""
        index = {f: i for i, f in enumerate(self.features)}
        shape = (len(self.features), len(self.latent_names))
        anchor, b, a = np.zeros(shape, dtype=bool), np.zeros(shape), np.zeros(shape)
        model = np.tile([np.nan, 0.0, 1.0, 0.0, 1.0], (len(self.latent_names), 1))
        for k, (program, fitted) in enumerate(zip(self.latent_names, models, strict=True)):
            if fitted is None:
                continue
            cols = [index[g] for g in data.anchors[program]]
            anchor[cols, k], b[cols, k], a[cols, k] = True, fitted.b, fitted.a
            model[k, :3] = fitted.theta, fitted.prior_mean, fitted.prior_var
        for key, value in {"count_anchor": anchor, "count_b": b, "count_a": a, "count_model": model}.items():
            self.register_buffer(key, torch.tensor(value))

    def _store_count_scale(self, raw: np.ndarray, is_control: np.ndarray) -> np.ndarray:
        """Store the control mean and SD of the count-modelled programs' posterior means ``raw`` (the
        latents' units: controls at mean 0, SD 1) and return ``raw`` in those units."""
        modelled = ~np.isnan(self.count_model[:, 0].numpy())
        centre, sd = raw[is_control].mean(axis=0), raw[is_control].std(axis=0)
        centre, sd = np.where(modelled, centre, 0.0), np.where(modelled & (sd > 0), sd, 1.0)
        self.count_model[:, 3], self.count_model[:, 4] = torch.tensor(centre), torch.tensor(sd)
        return (raw - centre) / sd

    def _count_latents(self, data: CRLData, scores: np.ndarray) -> np.ndarray:
        """Each cell's posterior mean of every count-modelled program (control SDs); other programs keep
        their anchor ``scores``. A cell with few anchor counts is told only what its counts hold, where the
        log of its normalised counts would sit on its floor; with the joint model, also what its other
        programs' counts hold."""
        counts, size = self._sized_counts(data)
        raw = self._joint_latents(counts, size, self._program_latents(counts, size, scores))
        modelled = self._modelled()
        centre, scale = self.count_model[:, 3].numpy(), self.count_model[:, 4].numpy()
        raw[:, modelled] = (raw[:, modelled] - centre[modelled]) / scale[modelled]
        return raw

    def _sized_counts(self, data: CRLData) -> tuple[sp.csr_matrix, np.ndarray]:
        """The data's raw counts in the model's feature order and each cell's stable size factor."""
        counts = sp.csr_matrix(align_features(replace(data, X=data.counts), self.features, self.name))
        return counts, stable_size(counts, np.isin(self.features, self.size_features))

    def _program_latents(self, counts: sp.csr_matrix, size: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Each cell's posterior mean of every count-modelled program, one program at a time (the count
        models' units); other programs keep their anchor ``scores``."""
        out = scores.copy()
        for k in self._modelled():
            theta, prior_mean, prior_var = self.count_model[k, :3].numpy()
            cols = np.flatnonzero(self.count_anchor[:, k].numpy())
            program = ProgramCounts(
                self.count_b[cols, k].numpy(), self.count_a[cols, k].numpy(), theta, prior_mean, prior_var
            )
            out[:, k] = count_posterior_means(counts, size, list(cols), program, scores[:, k])
        return out

    def _joint_latents(self, counts: sp.csr_matrix, size: np.ndarray, start: np.ndarray) -> np.ndarray:
        """``start`` (the per-program latents) with the modelled programs read by the joint model, when
        the model has one (:meth:`_fit_joint_counts`)."""
        modelled = self._modelled()
        if not hasattr(self, "count_joint_cov") or modelled.size < 2:
            return start
        Y, anchors = self._joint_anchors(counts, modelled)
        latent_size = self.count_joint_cov.shape[0] > len(self.latent_names)  # fits before 2026-12-05: no size
        joint = self._joint_entries(latent_size)
        out = start.copy()
        out[:, modelled] = joint_posterior_means(
            Y, np.log(size), anchors, self.count_joint_mean.numpy()[joint],
            self.count_joint_cov.numpy()[np.ix_(joint, joint)], start[:, modelled],
            stable_total=size - 1.0 if latent_size else None,
        )  # fmt: skip
        return out

    def _scores(self, X: np.ndarray | sp.csr_matrix) -> np.ndarray:
        """Program scores in control standard deviations (controls: mean 0, SD 1)."""
        return anchor_scores(X, **{key: getattr(self, key).numpy() for key in ANCHOR_SCORE_BUFFERS})

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        X = align_features(data, self.features, self.name)
        if self.size_features:
            if data.counts is None:
                raise ModelError(
                    "model linear: fitted on raw counts (size_factors: stable), but the data have none; expected "
                    "the counts layer the model was fit with"
                )
            counts = align_features(replace(data, X=data.counts), self.features, self.name)
            index = {f: i for i, f in enumerate(self.features)}
            stable = np.zeros(len(self.features), dtype=bool)
            stable[[index[f] for f in self.size_features]] = True
            X = stable_lognorm(counts, stable)
        scores = self._scores(X)
        if hasattr(self, "count_model"):
            scores = self._count_latents(data, scores)
        frame = pd.DataFrame(scores, columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_loadings(self) -> pd.DataFrame:
        L = self.loadings.numpy()
        frame = pd.DataFrame(L, index=self.features, columns=self.latent_names)
        return (
            frame.rename_axis("feature")
            .reset_index()
            .melt("feature", var_name="latent", value_name="loading")[["latent", "feature", "loading"]]
        )

    def _extra_state_json(self) -> dict[str, Any]:
        return {
            "features": self.features, "size_features": self.size_features, "anchor_sets": self.anchor_sets,
            "starved_cells": self.starved_cells,
        }  # fmt: skip

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.features = list(extra["features"])
        self.size_features = list(extra.get("size_features", []))
        self.anchor_sets = {p: list(genes) for p, genes in extra.get("anchor_sets", {}).items()}
        self.starved_cells = extra.get("starved_cells")


#: The priors of the count readout (``count_prior``), the default first.
_COUNT_PRIORS = ("joint", "size", "others", "group")
#: Floor of a perturbation's resolved share in the graph equations (keeps its weight positive).
_LEAST_RESOLVED = 0.01
#: Rounds of size factors from stable features and anchor scores on them (the second barely moves them).
_SIZE_ROUNDS = 2
#: Fewest stable features to size cells by; with fewer the data's own normalisation is kept.
_MIN_STABLE = 20
#: Share of the eligible features (neither anchors nor perturbed) kept as stable: those that respond to
#: the program scores most nearly as the library does (:func:`stable_features`).
_STABLE_SHARE = 0.25


def stable_features(data: CRLData, scores: np.ndarray) -> np.ndarray:
    """Features (bool mask) that move with the library alone: the size-factor genes.

    A cell's total count mixes its library size with its composition: when a program's genes take
    over the library, dividing by the total lowers every other gene, and every other program seems
    to move with it. Genes that no program drives measure the library alone, so in any normalisation
    they all respond to the program scores alike: the same least-squares coefficients on the scores,
    those of the library term every gene shares. That common response is estimated as the median
    coefficients of the better-expressed half of the eligible features (neither anchors nor
    perturbed; a program drives a minority of them), and the features kept are the
    :data:`_STABLE_SHARE` of them closest to it, by an upper bound (distance plus two standard errors)
    so that noisy, lowly expressed genes do not pass for stable. (The share of variance the scores
    explain is no guide: the library term makes highly expressed undriven genes follow the scores
    closely, and count noise makes driven but sparse genes look unexplained.)
    """
    excluded = {g for genes in data.anchors.values() for g in genes}
    excluded |= {g for genes in data.targets.values() for g in genes}
    mean, sd = column_stats(data.X)
    eligible = np.array([f not in excluded for f in data.features]) & (sd > 0)
    if eligible.sum() < 2:
        return eligible
    Z = scores - scores.mean(axis=0)
    gram_inv = np.linalg.pinv(Z.T @ Z)
    coef = crossprod(data.X, Z) @ gram_inv  # features x programs (Z is centred, so X need not be)
    explained = np.einsum("gk,kl,gl->g", coef, Z.T @ Z, coef)
    residual = np.maximum(sd**2 * len(Z) - explained, 0.0) / max(len(Z) - Z.shape[1] - 1, 1)
    se = np.sqrt(residual[:, None] * np.diag(gram_inv))
    expressed = eligible & (mean >= np.median(mean[eligible]))
    common = np.median(coef[expressed], axis=0)
    bound = np.linalg.norm(np.abs(coef - common) + 2 * se, axis=1)
    return eligible & (bound <= np.quantile(bound[eligible], _STABLE_SHARE))


def _count_groups(data: CRLData) -> tuple[np.ndarray, int]:
    """Each cell's group for the count models (0: controls, then the perturbations in order) and their number."""
    position = {lab: i + 1 for i, lab in enumerate(data.perturbations)}
    group = [0 if c else position[lab] for lab, c in zip(data.intervention, data.is_control, strict=True)]
    return np.array(group), len(position) + 1


def stable_size(counts: sp.csr_matrix, stable: np.ndarray) -> np.ndarray:
    """Each cell's size factor: its total count over the ``stable`` features, plus one."""
    return np.asarray(counts[:, np.flatnonzero(stable)].sum(axis=1)).ravel() + 1.0


def stable_lognorm(counts: sp.csr_matrix | np.ndarray, stable: np.ndarray) -> sp.csr_matrix:
    """``log1p`` of counts scaled by each cell's total over the ``stable`` features (to their median total)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    size = stable_size(counts, stable)
    out = sp.diags((np.median(size) / size).astype(np.float32)) @ counts
    return sp.csr_matrix(out.log1p(), dtype=np.float32)


#: Buffers of the anchor scores (:func:`fit_anchor_scores`), as the ``linear`` model stores them.
ANCHOR_SCORE_BUFFERS = ("feature_mean", "feature_sd", "score_weights", "score_mean", "score_sd")


def fit_anchor_scores(data: CRLData, programs: list[str], seed: int) -> dict[str, torch.Tensor]:
    """One-factor model per program on its standardised anchors -> score weights over all features.

    The factor model is fit on every cell, or on a seeded sample of 50,000 in larger screens.
    Returns the tensors of :data:`ANCHOR_SCORE_BUFFERS` that :func:`anchor_scores` reads: control
    mean and SD of each feature, the Bartlett score weights (features x programs) and the control
    mean and SD of the raw scores.
    """
    X = data.X
    mean, sd = _control_stats(X, data.is_control)
    sd = np.where(sd > 0, sd, 1.0)
    weights = np.zeros((X.shape[1], len(programs)))
    index = {f: i for i, f in enumerate(data.features)}
    fit_X = X if X.shape[0] <= _MAX_FA_CELLS else X[_fa_sample(X.shape[0], seed)]
    for k, program in enumerate(programs):
        cols = [index[g] for g in data.anchors[program]]
        if len(cols) == 1:  # an observed variable: the score is the variable itself
            weights[cols, k] = 1.0
            continue
        block = (dense_columns(fit_X, cols) - mean[cols]) / sd[cols]
        fa = FactorAnalysis(n_components=1, random_state=seed).fit(block)
        loading = fa.components_[0]
        w = loading / np.maximum(fa.noise_variance_, 1e-6)  # Bartlett weights: trust reliable anchors more
        weights[cols, k] = w * np.sign(loading.sum() or 1.0)
    ctrl = _standardised_matmul(X, mean, sd, weights)[data.is_control]
    return {
        "feature_mean": torch.tensor(mean, dtype=torch.float64),
        "feature_sd": torch.tensor(sd, dtype=torch.float64),
        "score_weights": torch.tensor(weights),
        "score_mean": torch.tensor(ctrl.mean(axis=0)),
        "score_sd": torch.tensor(np.where(ctrl.std(axis=0) > 0, ctrl.std(axis=0), 1.0)),
    }


def anchor_scores(
    X: np.ndarray | sp.csr_matrix,
    *,
    feature_mean: np.ndarray,
    feature_sd: np.ndarray,
    score_weights: np.ndarray,
    score_mean: np.ndarray,
    score_sd: np.ndarray,
) -> np.ndarray:
    """Program scores of the cells ``X`` (cells x programs) in control standard deviations (controls:
    mean 0, SD 1), from the arrays of :func:`fit_anchor_scores`."""
    raw = _standardised_matmul(X, feature_mean, feature_sd, score_weights)
    return (raw - score_mean) / score_sd


#: The one-factor model of a program's anchors is fit on a seeded sample of at most this many cells
#: (it has 2 parameters per anchor; scores are then computed for every cell).
_MAX_FA_CELLS = 50_000


def _fa_sample(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, _MAX_FA_CELLS, replace=False))


def _control_stats(X: np.ndarray | sp.csr_matrix, is_control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and SD of the control cells."""
    if sp.issparse(X):
        return column_stats(X, is_control)
    return X[is_control].mean(axis=0), X[is_control].std(axis=0)


def _standardised_matmul(X, mean: np.ndarray, sd: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``((X - mean) / sd) @ weights``; for a sparse ``X`` as ``X @ (weights / sd) - mean @ (weights / sd)``,
    which never forms the dense standardised matrix."""
    if not sp.issparse(X):
        return ((X - mean) / sd) @ weights
    scaled = weights / sd[:, None]
    return matmul(X, scaled) - mean @ scaled


def _loadings(X: np.ndarray | sp.csr_matrix, scores: np.ndarray) -> np.ndarray:
    """Least-squares loadings of every standardised feature on the program scores (features x programs)."""
    Z = scores - scores.mean(axis=0)
    if sp.issparse(X):
        # Z is centred, so Z' (X - mean) / sd = (Z' X) / sd: the normal equations need no dense X
        _, sd = column_stats(X)
        rhs = crossprod(X, Z).T / np.where(sd > 0, sd, 1.0)
        return np.linalg.lstsq(Z.T @ Z, rhs, rcond=None)[0].T
    Xs = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    return np.linalg.lstsq(Z, Xs, rcond=None)[0].T
