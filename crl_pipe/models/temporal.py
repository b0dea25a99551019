"""``temporal``: a sparse lagged transition model for robot logs (CITRIS-flavoured, linear).

Model. The latents are the robot's causal variables (the state channels, or a chosen subset);
actions are commanded inputs. Joint trajectories are integrated (non-stationary) within an
episode, so the transition is fitted in velocity form, ``dz_t = z_t - z_{t-1}``::

    dz_t[j] = sum_{l=1..p} sum_k B_l[k, j] dz_{t-l}[k]      (state -> state, lagged)
            + sum_{l=1..K} sum_k W_l[k, j] da_{t-l}[k]      (action -> state, lagged; actuator delay)
            + delta[j] I_{t-1}[j]                           (intervention on j switches its mechanism)
            + c[j] + noise

which is a levels transition ``z_t = z_{t-1} + f(z_{t-1}, ..., a_{t-1}, ...)`` with a unit root.
``I_{t-1}[j] = 1`` when frame t-1 is labelled as an intervention on latent j (events, action
change points, environments: :func:`crl_pipe.pp.robot_interventions`); the soft intervention
shifts j's mechanism by ``delta[j]``.

Sparsity (minimality). Inputs and outputs are standardised; a group lasso with one group per
(source, target) pair, over its lags, selects edges: an edge ``source -> target`` exists when its
group is non-zero. A latent's own lags are assumed (persistence), not penalised, and left out of
the graph unless ``self_loops=True``. Solved by FISTA on the Gram matrix (deterministic, CPU).

Graph. Rows = sources (action channels, then latents), columns = latents (targets); every edge is
lagged by >= 1 frame; the weight is the sum of the edge's standardised lag coefficients (the
cumulated effect of a one-SD source step on the target's velocity, in target SDs).

Time order comes from ``CRLData.obs`` (``episode``, ``frame``): a new segment starts wherever the
episode changes or the frame does not advance by one, so resampled episodes (bootstrap copies)
stay separate time series. Refits for edge stability must resample whole episodes:
:func:`bootstrap_episodes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData


class TemporalSEM(CRLModel):
    """Sparse lagged transition over latents (state channels) and actions, with per-target mechanism shifts.

    Parameters
    ----------
    actions
        Action features: a name prefix (default ``"action."``) or a list of feature names.
    latents
        Latent (state) features; default every feature that is not an action.
    n_lags
        Lags of the latents' own velocities in the transition (frames).
    n_action_lags
        Lags of the action changes (frames); must cover the actuator delay (Unitree G1 hands:
        ~0.4 s = 12 frames at 30 fps).
    alpha
        Group-lasso penalty on standardised data (per unit group norm, scaled by sqrt(group size)).
        ``"auto"``: ``0.5 * sqrt(2 log(n_coefficients) / n_windows)``, the universal lasso
        threshold at half strength (calibrated on :func:`crl_pipe.simulate.simulate_robot` and the
        Unitree G1 logs; it shrinks as data grow, so the edges kept do not depend on log length).
    edge_threshold
        Smallest |weight| (target SD per source SD) kept as an edge after the sparse fit.
    self_loops
        Report each latent's own lag as an edge (it is always in the model).
    intervention_shift
        Learn ``delta[j]``, the shift of latent j's mechanism on frames labelled as intervening on j.
    max_iter, tol
        FISTA iterations and convergence tolerance (max coefficient change).
    """

    name = "temporal"

    def __init__(
        self,
        actions: str | list[str] = "action.",
        latents: list[str] | None = None,
        n_lags: int = 1,
        n_action_lags: int = 12,
        alpha: float | str = "auto",
        edge_threshold: float = 0.0,
        self_loops: bool = False,
        intervention_shift: bool = True,
        max_iter: int = 5000,
        tol: float = 1e-7,
    ) -> None:
        super().__init__(
            actions=actions,
            latents=latents,
            n_lags=n_lags,
            n_action_lags=n_action_lags,
            alpha=alpha,
            edge_threshold=edge_threshold,
            self_loops=self_loops,
            intervention_shift=intervention_shift,
            max_iter=max_iter,
            tol=tol,
        )
        self.action_names: list[str] = []
        self.alpha_: float = float("nan")

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0) -> TemporalSEM:
        # ``seed`` is unused: the convex solver is deterministic and starts from zero
        p, K = int(self.params["n_lags"]), int(self.params["n_action_lags"])
        _check_params(p, K, self.params["alpha"])
        self.action_names, self.latent_names = _split_features(data, self.params["actions"], self.params["latents"])
        z, a = _columns(data, self.latent_names), _columns(data, self.action_names)
        shift = _intervention_matrix(data, self.latent_names) if self.params["intervention_shift"] else None
        segments = _segments(data)
        design = _Design(z, a, shift, segments, p, K)
        if design.n_rows < 2 * design.n_inputs:
            raise ModelError(
                f"model temporal: {design.n_rows} complete windows of {max(p, K) + 2} frames "
                f"for {design.n_inputs} inputs; "
                "expected longer episodes in time order (refits must resample whole episodes, see bootstrap_episodes)"
            )
        self.alpha_ = _resolve_alpha(self.params["alpha"], design)
        coef = _group_lasso(design, self.alpha_, self.params["max_iter"], self.params["tol"])
        self._store(design, coef)
        self._store_target_scores(data, design, shift)
        return self

    def _store(self, design: _Design, coef: np.ndarray) -> None:
        m, q, p, K = design.m, design.q, design.p, design.K
        state = coef[: p * m].reshape(p, m, m).sum(axis=0)
        action = coef[p * m : p * m + K * q].reshape(K, q, m).sum(axis=0) if q and K else np.zeros((q, m))
        active = np.vstack([_active(coef[p * m : p * m + K * q], K, q, m), _active(coef[: p * m], p, m, m)])
        weights = np.vstack([action, state]) * active
        weights[np.abs(weights) < self.params["edge_threshold"]] = 0.0
        self.register_buffer("coef", torch.tensor(coef))
        self.register_buffer("adjacency", torch.tensor(weights))
        # shift of an intervened frame in target velocity SDs (the indicator column was standardised)
        shift = (
            np.diag(coef[p * m + K * q :]) / np.where(design.sd_shift > 0, design.sd_shift, 1.0)
            if design.n_shift
            else np.zeros(m)
        )
        self.register_buffer("shift", torch.tensor(shift))
        self.register_buffer("velocity_sd", torch.tensor(design.sd_z))
        self.register_buffer("action_step_sd", torch.tensor(design.sd_a))
        self.history = pd.DataFrame({"epoch": [0], "split": ["train"], "loss": [float(design.loss(coef))]})

    def _store_target_scores(self, data: CRLData, design: _Design, shift: np.ndarray | None) -> None:
        """Score of (intervention label, latent): mean |predicted velocity change| the labelled frames cause, in SDs."""
        labels = data.perturbations
        self.intervention_names = labels
        m = design.m
        total = self.adjacency.numpy()[: design.q]  # action step (SD) -> cumulated latent velocity change (SD)
        effect = design.action_steps @ total if design.q else np.zeros((data.n_cells, m))
        if shift is not None:
            effect = effect + shift * self.shift.numpy()[None, :]
        scores = np.array([np.abs(effect[data.intervention == lab]).mean(axis=0) for lab in labels]).reshape(
            len(labels), m
        )
        self.register_buffer("target_scores", torch.tensor(scores))

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        frame = pd.DataFrame(_columns(data, self.latent_names).astype(np.float64), columns=self.latent_names)
        frame.insert(0, "sample_id", data.sample_ids)
        return frame

    def get_targets(self) -> pd.DataFrame:
        scores = self.target_scores.numpy()
        rows = []
        for i, label in enumerate(self.intervention_names):
            n = max(1, len(label.split("+")))
            top = set(np.argsort(-scores[i], kind="stable")[:n])
            rows += [(label, lat, float(scores[i, k]), bool(k in top)) for k, lat in enumerate(self.latent_names)]
        return pd.DataFrame(rows, columns=["intervention", "latent", "score", "is_target"])

    def get_adjacency(self) -> pd.DataFrame:
        weights = self.adjacency.numpy().copy()
        q = len(self.action_names)
        if not self.params["self_loops"]:
            np.fill_diagonal(weights[q:], 0.0)
        return pd.DataFrame(weights, index=self.action_names + self.latent_names, columns=self.latent_names)

    def get_loadings(self) -> pd.DataFrame:
        # latents are the state channels themselves: each loads on its own feature only
        return pd.DataFrame({"latent": self.latent_names, "feature": self.latent_names, "loading": 1.0})

    def _extra_state_json(self) -> dict[str, Any]:
        return {"action_names": self.action_names, "alpha": self.alpha_}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.action_names = list(extra["action_names"])
        self.alpha_ = float(extra["alpha"])


def bootstrap_episodes(data: CRLData, rng: np.random.Generator) -> np.ndarray:
    """Rows of a bootstrap resample of whole episodes (drawn with replacement, each kept in time order).

    Time-series rows are not exchangeable; episodes are. Row order is not sorted, so each drawn copy
    of an episode stays a contiguous series (a new segment starts where the frame resets).
    """
    if data.obs is None or "episode" not in data.obs:
        raise ModelError("bootstrap over episodes needs CRLData.obs with an 'episode' column")
    codes, uniques = pd.factorize(data.obs["episode"])
    groups = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    return np.concatenate([groups[g] for g in rng.integers(len(groups), size=len(groups))])


# -- data -----------------------------------------------------------------------------------------
def _split_features(data: CRLData, actions: str | list[str], latents: list[str] | None) -> tuple[list[str], list[str]]:
    features = list(data.features)
    if isinstance(actions, str):
        action_names = [f for f in features if f.startswith(actions)]
    else:
        action_names = list(actions)
    missing = [f for f in action_names + list(latents or []) if f not in features]
    if missing:
        raise ModelError(
            f"model temporal: feature(s) {missing[:5]} not in the data; expected some of {features[:5]} ..."
        )
    latent_names = list(latents) if latents is not None else [f for f in features if f not in set(action_names)]
    if not latent_names:
        raise ModelError("model temporal: no latent (state) features left after removing the actions")
    return action_names, latent_names


def _columns(data: CRLData, names: list[str]) -> np.ndarray:
    index = {f: i for i, f in enumerate(data.features)}
    return np.asarray(data.X[:, [index[n] for n in names]], dtype=np.float64).reshape(data.n_cells, len(names))


def _intervention_matrix(data: CRLData, latents: list[str]) -> np.ndarray:
    """Frames x latents 0/1: the frame's intervention label targets the latent."""
    col = {name: k for k, name in enumerate(latents)}
    lookup = {lab: [col[t] for t in data.targets.get(lab, ()) if t in col] for lab in np.unique(data.intervention)}
    out = np.zeros((data.n_cells, len(latents)))
    for i, lab in enumerate(data.intervention):
        if not data.is_control[i]:
            out[i, lookup[lab]] = 1.0
    return out


def _segments(data: CRLData) -> list[tuple[int, int]]:
    """[start, stop) row ranges of contiguous time series: same episode, frame advancing by one."""
    obs = data.obs
    if obs is None or not {"episode", "frame"} <= set(obs.columns):
        raise ModelError("model temporal: needs CRLData.obs with 'episode' and 'frame' (robot logs in time order)")
    episode = obs["episode"].astype(str).to_numpy()
    frame = obs["frame"].to_numpy(dtype=np.int64)
    breaks = np.flatnonzero((episode[1:] != episode[:-1]) | (frame[1:] != frame[:-1] + 1)) + 1
    bounds = np.r_[0, breaks, len(frame)]
    return [(int(s), int(e)) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]


class _Design:
    """Standardised lagged regression of latent velocities, kept as its Gram matrices.

    Rows: every frame with a full window of lags inside its segment. Input columns: p lags x m
    latent velocities, K lags x q action steps, m intervention indicators (indicator j may act on
    latent j only). Velocities and action steps are scaled by their SD over all frames.
    """

    def __init__(self, z, a, shift, segments, p: int, K: int) -> None:
        self.m, self.q, self.p, self.K = z.shape[1], a.shape[1], p, K
        dz, da = _steps(z, segments), _steps(a, segments)
        self.sd_z = _sd(dz)
        self.sd_a = _sd(da) if self.q else np.zeros(0)
        self.n_shift = self.m if shift is not None else 0
        self.sd_shift = shift.std(axis=0) if shift is not None else np.zeros(self.m)
        # action step of each frame (row i: a_i - a_{i-1}, standardised; 0 on a segment's first frame)
        self.action_steps = _frame_steps(a, segments) / np.where(self.sd_a > 0, self.sd_a, 1.0) if self.q else None
        blocks = [self._rows(z, a, shift, s, e) for s, e in segments if e - s > max(p, K) + 1]
        self.n_rows = sum(len(y) for _, y in blocks)
        self.n_inputs = p * self.m + K * self.q + self.n_shift
        if self.n_rows == 0:
            self.gram, self.cross, self.yy = np.zeros((self.n_inputs,) * 2), np.zeros((self.n_inputs, self.m)), 0.0
            return
        X = np.vstack([x for x, _ in blocks])
        Y = np.vstack([y for _, y in blocks])
        X -= X.mean(axis=0)
        Y -= Y.mean(axis=0)
        scale = np.concatenate([np.tile(self.sd_z, p), np.tile(self.sd_a, K), self.sd_shift[: self.n_shift]])
        X /= np.where(scale > 0, scale, 1.0)
        Y /= np.where(self.sd_z > 0, self.sd_z, 1.0)
        n = len(Y)
        self.gram, self.cross, self.yy = X.T @ X / n, X.T @ Y / n, float((Y**2).sum() / n)

    def _rows(self, z, a, shift, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Targets dz[i] = z[i+1] - z[i] and their lagged inputs, for i in [r, T-1) of one segment."""
        dz, da = np.diff(z[s:e], axis=0), np.diff(a[s:e], axis=0)
        r, n = max(self.p, self.K), e - s - 1
        cols = [dz[r - lag : n - lag] for lag in range(1, self.p + 1)]
        cols += [da[r - lag : n - lag] for lag in range(1, self.K + 1)]
        if shift is not None:
            cols.append(shift[s + r : s + n])  # label of frame i acts on dz[i] = z[i+1] - z[i]
        return np.hstack(cols), dz[r:n]

    def loss(self, coef: np.ndarray) -> float:
        """Mean squared standardised residual."""
        return float(self.yy - 2 * np.sum(coef * self.cross) + np.sum(coef * (self.gram @ coef))) / self.m


def _steps(x: np.ndarray, segments) -> np.ndarray:
    parts = [np.diff(x[s:e], axis=0) for s, e in segments if e - s > 1]
    return np.vstack(parts) if parts else np.zeros((0, x.shape[1]))


def _frame_steps(x: np.ndarray, segments) -> np.ndarray:
    out = np.zeros_like(x)
    for s, e in segments:
        out[s + 1 : e] = np.diff(x[s:e], axis=0)
    return out


def _sd(x: np.ndarray) -> np.ndarray:
    return x.std(axis=0) if len(x) else np.zeros(x.shape[1])


def _active(block: np.ndarray, lags: int, sources: int, targets: int) -> np.ndarray:
    """sources x targets: whether the group of lag coefficients is non-zero."""
    if lags == 0 or sources == 0:
        return np.zeros((sources, targets), dtype=bool)
    return np.abs(block.reshape(lags, sources, targets)).sum(axis=0) > 0


#: Strength of the automatic penalty, as a fraction of the universal threshold sqrt(2 log(d) / n).
AUTO_ALPHA_SCALE = 0.5


def _check_params(p: int, K: int, alpha: float | str) -> None:
    if p < 1 or K < 0:
        raise ModelError(f"model temporal: n_lags={p}, n_action_lags={K}; expected n_lags >= 1, n_action_lags >= 0")
    if alpha != "auto" and (isinstance(alpha, str) or not alpha >= 0):
        raise ModelError(f"model temporal: alpha={alpha!r}; expected 'auto' or a non-negative number")


def _resolve_alpha(alpha: float | str, design: _Design) -> float:
    if alpha == "auto":
        n_coef = max(design.n_inputs * design.m, 2)
        return AUTO_ALPHA_SCALE * float(np.sqrt(2.0 * np.log(n_coef) / design.n_rows))
    return float(alpha)


def _group_lasso(design: _Design, alpha: float, max_iter: int, tol: float) -> np.ndarray:
    """FISTA for 0.5 * mean squared residual + alpha * sum_groups sqrt(|g|) ||coef_g||."""
    G, C = design.gram, design.cross
    m, q, p, K = design.m, design.q, design.p, design.K
    allowed = np.ones_like(C, dtype=bool)
    if design.n_shift:
        allowed[p * m + K * q :] = np.eye(m, dtype=bool)  # indicator j acts on latent j only
    step = 1.0 / max(float(np.linalg.eigvalsh(G)[-1]), 1e-12)
    coef = np.zeros_like(C)
    moment, t = coef.copy(), 1.0
    for _ in range(int(max_iter)):
        new = _prox(moment - step * (G @ moment - C), step * alpha, design) * allowed
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        moment = new + (t - 1.0) / t_next * (new - coef)
        done = np.max(np.abs(new - coef)) < tol
        coef, t = new, t_next
        if done:
            break
    return coef


def _prox(coef: np.ndarray, thresh: float, design: _Design) -> np.ndarray:
    """Group soft-thresholding: state groups (self lags exempt), then action groups; indicators untouched."""
    m, q, p, K = design.m, design.q, design.p, design.K
    out = coef.copy()
    state = out[: p * m].reshape(p, m, m)
    keep = _shrink(state, thresh * np.sqrt(p))
    keep[np.arange(m), np.arange(m)] = 1.0
    out[: p * m] = (state * keep).reshape(p * m, m)
    if q and K:
        action = out[p * m : p * m + K * q].reshape(K, q, m)
        out[p * m : p * m + K * q] = (action * _shrink(action, thresh * np.sqrt(K))).reshape(K * q, m)
    return out


def _shrink(block: np.ndarray, thresh: float) -> np.ndarray:
    norm = np.sqrt((block**2).sum(axis=0))
    return np.maximum(0.0, 1.0 - thresh / np.maximum(norm, 1e-300))
