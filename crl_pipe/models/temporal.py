"""``temporal``: a sparse lagged transition model for robot logs (CITRIS-flavoured, linear).

Model. The latents are the robot's causal variables (the state channels, or a chosen subset);
actions are commanded inputs. Joint trajectories are integrated (non-stationary) within an
episode, so the transition is fitted in velocity form, ``dz_t = z_t - z_{t-1}``::

    dz_t[j] = sum_{l=1..p} sum_k B_l[k, j] dz_{t-l}[k]      (state -> state, lagged)
            + sum_{l=1..K} sum_k W_l[k, j] da_{t-l}[k]      (action -> state, lagged; actuator delay)
            + delta[j] I_{t-1}[j]                           (intervention on j switches its mechanism)
            + sum_{k before j} B_0[k, j] dz_t[k]            (instantaneous, with instantaneous=True)
            + c[j] + noise

which is a levels transition ``z_t = z_{t-1} + f(z_{t-1}, ..., a_{t-1}, ...)`` with a unit root.
``I_{t-1}[j] = 1`` when frame t-1 is labelled as an intervention on latent j (events, action
change points, environments: :func:`crl_pipe.pp.robot_interventions`); the soft intervention
shifts j's mechanism by ``delta[j]``.

Sparsity (minimality). Inputs and outputs are standardised; a group lasso with one group per
(source, target) pair, over its lags, selects edges: an edge ``source -> target`` exists when its
group is non-zero. A latent's own lags are assumed (persistence), not penalised, and left out of
the graph unless ``self_loops=True``. Solved by FISTA on the Gram matrix (deterministic, CPU).

Instantaneous edges (``instantaneous=True``). At a finite frame rate some effects land within
the frame: a rigid or compliant contact, a light wired straight to its switch. ``B_0`` holds them:
a lag-0 edge ``k -> j`` regresses j's velocity on k's velocity of the same frame, along an acyclic
order, with the same lasso (one coefficient per pair). The order is learned in three steps
(``_instantaneous_dag``): (1) candidates: a fit in which every latent may use every other's
current velocity (cyclic) names the pairs with within-frame dependence left after the lags (none
on data without it, so nothing changes there); (2) direction: each candidate pair is oriented the
way with the lower penalised objective. Both directions fit a frame equally well (two
factorisations of one Gaussian law), but only the true one is sparse: if ``k -> j``, j's equation
needs k's current velocity alone, while ``j -> k`` needs k's drivers (its commands, interventions
and lagged parents) in j's equation as well. This is the interventional asymmetry (a command to k
moves k's instantaneous children in the same frame, not its parents) extended to every driver
with variation of its own; it needs no non-Gaussian noise (VAR-LiNGAM does, and the simulators'
and servo logs' innovations are near Gaussian); (3) acyclicity: while the oriented pairs hold a
cycle, its edge with the least evidence (objective gap) is dropped; the final fit may use only
the remaining DAG. It cannot orient a pair neither of whose ends has drivers of its own, and
smooth (strongly autocorrelated) velocities make lag 0 and lag 1 hard to tell apart: the lagged
edge may then stand in for the instantaneous one. Off by default: on the Unitree G1 logs it adds
~50 lag-0 edges among fingers closed together by the teleoperator's glove, which then outrank
some joints' own commands (20/26 instead of 26/26), and costs ~8x the fit time.

Graph. Rows = sources (action channels, then latents), columns = latents (targets); a lagged
edge's weight is the sum of its standardised lag coefficients (the cumulated effect of a one-SD
source step on the target's velocity, in target SDs), an instantaneous edge's weight its lag-0
coefficient. :meth:`TemporalSEM.get_adjacency` adds the two; :meth:`TemporalSEM.get_edges` (the
graph artifact) lists them apart with their ``lag``: 0, or the lagged edge's strongest lag (``l``:
a change of the source first logged at frame f moves the target from frame f + l on).

Rollouts (:meth:`TemporalSEM.rollout`). The velocity form has a unit root and nothing that pulls a
latent back to where its drivers put it: open loop it integrates its one-step errors, and a servoed
joint drifts away from its set-point. Rollouts therefore use a refit on the selected graph
(:func:`_rollout_refit`): each latent's equation keeps the inputs the lasso selected, unshrunk, and
adds the levels of itself, its latent parents and its command parents (an error-correction term:
``z_{t+1} - z_t`` also depends on ``z_t`` and ``a_t``). The graph and its weights are the lasso's.

Learned latents. With ``sensors`` the state channels are sensors that mix the causal variables
(:func:`crl_pipe.simulate.simulate_arm` with ``observation="sensors"``); an encoder learns the
latents first (iVAE-style, the commands as auxiliary variables; see
:mod:`crl_pipe.models._temporal_encoder` for what is identified) and everything above runs on
them; checkpoints carry the encoder's weights.

Time order comes from ``CRLData.obs`` (``episode``, ``frame``): a new segment starts wherever the
episode changes or the frame does not advance by one, so resampled episodes (bootstrap copies)
stay separate time series. Refits for edge stability must resample whole episodes:
:func:`crl_pipe.tl.bootstrap_episodes`.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch

from .._errors import ModelError
from ._base import CRLModel
from ._data import CRLData, frame_steps
from ._temporal_encoder import TemporalEncoder, learn_latents
from .registry import model_capabilities


class TemporalSEM(CRLModel):
    """Sparse lagged transition over latents (state channels) and actions, with per-target mechanism shifts.

    Parameters
    ----------
    actions
        Action features: a name prefix (default ``"action."``) or a list of feature names.
    latents
        Latent (state) features; default every feature that is not an action.
    n_lags
        Lags of the latents' velocities in the transition (frames): ``"auto"`` (default) chooses each
        latent's order from the data, by BIC over 1..``max_lags`` (:func:`_lag_orders`); an integer
        fixes it for every latent.
    max_lags
        Largest lag order ``n_lags="auto"`` considers (frames).
    n_action_lags
        Lags of the action changes (frames); must cover the actuator delay (Unitree G1 hands:
        ~0.4 s = 12 frames at 30 fps).
    alpha
        Group-lasso penalty on standardised data (per unit group norm, scaled by sqrt(group size)).
        ``"auto"``: ``sqrt(2 log(n_coefficients) / n_windows)``, the universal lasso threshold (the
        largest correlation that pure noise reaches among that many inputs, on standardised data; it
        shrinks as data grow, so the edges kept do not depend on log length).
    penalize_own_commands
        Penalise each command's group into the variable it commands like any other group. Off by
        default: a command's own target (``action.<name>`` -> ``<name>``, or as the intervention labels
        map it) is assumed, as a latent's own lags are, so the lasso cannot shrink a real command away.
    edge_threshold
        Smallest |weight| (target SD per source SD) kept as an edge after the sparse fit.
    self_loops
        Report each latent's own lag as an edge (it is always in the model).
    intervention_shift
        Learn ``delta[j]``, the shift of latent j's mechanism on frames labelled as intervening on j.
    instantaneous
        Also learn instantaneous (lag-0) edges among latents, ``dz_t[k] -> dz_t[j]``, kept acyclic
        (see the module docstring). Off by default: on the simulators without within-frame effects
        and on the Unitree G1 logs the lagged graph is unchanged either way, and the lag-0 search
        costs a few extra fits.
    max_iter, tol
        FISTA iterations and convergence tolerance (max coefficient change).
    sensors
        Sensor features (a name prefix such as ``"sensor."`` or a list) that mix the causal
        variables: the latents are then learned, ``z_t = enc(x_t)``, by an autoencoder with a
        prior that explains latent j by the history of the commands labelled as intervening on j only
        (:mod:`crl_pipe.models._temporal_encoder`); the graph is fitted on those latents.
    n_latents
        With ``sensors``: latents to learn; the variables the intervention labels target come first,
        named after them, extra ones are ``z1``, ``z2`` ... (default: the targeted variables only).
    encoder_hidden, encoder_epochs
        With ``sensors``: hidden units of the encoder/decoder MLPs, full-batch training steps.
    """

    name = "temporal"
    capabilities = model_capabilities(name)

    def __init__(
        self,
        actions: str | list[str] = "action.",
        latents: list[str] | None = None,
        n_lags: int | str = "auto",
        max_lags: int = 5,
        n_action_lags: int = 12,
        alpha: float | str = "auto",
        penalize_own_commands: bool = False,
        edge_threshold: float = 0.0,
        self_loops: bool = False,
        intervention_shift: bool = True,
        instantaneous: bool = False,
        max_iter: int = 5000,
        tol: float = 1e-7,
        sensors: str | list[str] | None = None,
        n_latents: int | None = None,
        encoder_hidden: int = 64,
        encoder_epochs: int = 1000,
    ) -> None:
        super().__init__(
            actions=actions,
            latents=latents,
            n_lags=n_lags,
            max_lags=max_lags,
            n_action_lags=n_action_lags,
            alpha=alpha,
            penalize_own_commands=penalize_own_commands,
            edge_threshold=edge_threshold,
            self_loops=self_loops,
            intervention_shift=intervention_shift,
            instantaneous=instantaneous,
            max_iter=max_iter,
            tol=tol,
            sensors=sensors,
            n_latents=n_latents,
            encoder_hidden=encoder_hidden,
            encoder_epochs=encoder_epochs,
        )
        self.encoder: torch.nn.Module | None = None
        self.sensor_names: list[str] = []
        self.action_names: list[str] = []
        self.alpha_: float = float("nan")

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: CRLData, *, seed: int = 0) -> TemporalSEM:
        # ``seed`` is unused: the convex solver is deterministic and starts from zero
        p, K = _max_lag(self.params), int(self.params["n_action_lags"])
        _check_params(p, K, self.params["alpha"])
        segments = _segments(data)
        z = self._latents(data, segments, seed)
        a = _columns(data, self.action_names)
        shift = _intervention_matrix(data, self.latent_names) if self.params["intervention_shift"] else None
        design = _Design(z, a, shift, segments, p, K, instantaneous=bool(self.params["instantaneous"]))
        if design.n_rows < 2 * design.n_inputs:
            raise ModelError(
                f"model temporal: {design.n_rows} complete windows of {max(p, K) + 2} frames "
                f"for {design.n_inputs} inputs; "
                "expected longer episodes in time order "
                "(refits must resample whole episodes, see crl_pipe.tl.bootstrap_episodes)"
            )
        design.orders = _lag_orders(design) if self.params["n_lags"] == "auto" else np.full(design.m, p)
        if not self.params["penalize_own_commands"]:
            design.own_action = _own_commands(data, self.action_names, self.latent_names, self.params["actions"])
        self.alpha_ = _resolve_alpha(self.params["alpha"], design)
        solve = dict(alpha=self.alpha_, max_iter=self.params["max_iter"], tol=self.params["tol"])
        coef = _group_lasso(design, **solve)
        if design.n_inst:
            dag = _instantaneous_dag(design, coef, self.params["edge_threshold"], solve)
            allowed = np.zeros((design.m, design.m))
            for k, j in dag:
                allowed[k, j] = 1.0
            if allowed.any():
                coef = _group_lasso(design, inst=allowed, **solve)
        self._store(design, coef)
        self._store_rollout(design, coef, z, a, shift, segments)
        self._store_target_scores(data, design, shift)
        return self

    def _latents(self, data: CRLData, segments: list[tuple[int, int]], seed: int) -> np.ndarray:
        """Set :attr:`action_names` and :attr:`latent_names`; return the latents (frames x latents) the
        transition is fitted on. A model that learns its latents otherwise (``camera``) overrides this."""
        self.action_names, self.latent_names = _split_features(data, self.params["actions"], self.params["latents"])
        z = _columns(data, self.latent_names)
        if self.params.get("sensors") is not None:  # learn the latents from sensors that mix them
            self.encoder, self.sensor_names, self.latent_names, z = learn_latents(
                data, self.params["sensors"], self.action_names, segments, self.params, seed
            )
        return z

    def _store(self, design: _Design, coef: np.ndarray) -> None:
        m, q, p, K = design.m, design.q, design.p, design.K
        state = coef[: p * m].reshape(p, m, m).sum(axis=0)
        action = coef[p * m : p * m + K * q].reshape(K, q, m).sum(axis=0) if q and K else np.zeros((q, m))
        active = np.vstack([_active(coef[p * m : p * m + K * q], K, q, m), _active(coef[: p * m], p, m, m)])
        weights = np.vstack([action, state]) * active
        weights[np.abs(weights) < self.params["edge_threshold"]] = 0.0
        inst = coef[design.inst_rows] if design.n_inst else np.zeros((m, m))
        inst = np.where(np.abs(inst) < self.params["edge_threshold"], 0.0, inst)
        self.register_buffer("coef", torch.tensor(coef))
        self.register_buffer("adjacency", torch.tensor(weights))
        self.register_buffer("instantaneous", torch.tensor(inst))
        self.register_buffer("lag", torch.tensor(_dominant_lags(coef, design)))
        self.register_buffer("lag_order", torch.tensor(design.orders.astype(np.int64)))
        # shift of an intervened frame in target velocity SDs (the indicator column was standardised)
        shift = (
            np.diag(coef[design.shift_rows]) / np.where(design.sd_shift > 0, design.sd_shift, 1.0)
            if design.n_shift
            else np.zeros(m)
        )
        self.register_buffer("shift", torch.tensor(shift))
        self.register_buffer("velocity_sd", torch.tensor(design.sd_z))
        self.register_buffer("action_step_sd", torch.tensor(design.sd_a))
        self.history = pd.DataFrame({"epoch": [0], "split": ["train"], "loss": [float(design.loss(coef))]})

    def _store_rollout(
        self,
        design: _Design,
        coef: np.ndarray,
        z: np.ndarray,
        a: np.ndarray,
        shift: np.ndarray | None,
        segments: list[tuple[int, int]],
    ) -> None:
        """The transition :meth:`rollout` iterates, in raw units (latent and command units per frame)::

            dz_t = b + sum_l S_l^T dz_{t-l} + sum_l A_l^T da_{t-l} + d * I_t + C^T dz_t + L^T z_t + M^T a_t

        refitted by least squares on the sparse fit's graph (:func:`_rollout_refit`): each latent's
        equation keeps the inputs the lasso selected (unshrunk) and adds the levels of itself, its
        latent parents and its commands (``L``, ``M``: error correction). The velocity form alone has a
        unit root with nothing that pulls a latent back to where its commands and parents put it, so
        one-step errors add up over an open-loop rollout; the levels term is the cointegration of a
        position servo with its set-point (and of a gate or light with what drives it). The graph
        (:meth:`get_edges`) is the sparse fit's; only rollouts use the refit.
        """
        m, q, p, K = design.m, design.q, design.p, design.K
        raw, intercept = _rollout_refit(design, coef, z, a, shift, segments)
        levels = slice(design.n_lagged, design.n_lagged + m + q)
        self.register_buffer("roll_intercept", torch.tensor(intercept))
        self.register_buffer("roll_state", torch.tensor(raw[: p * m].reshape(p, m, m)))
        self.register_buffer("roll_action", torch.tensor(raw[p * m : p * m + K * q].reshape(K, q, m)))
        shift_coef = np.diag(raw[design.shift_rows]) if design.n_shift else np.zeros(m)
        self.register_buffer("roll_shift", torch.tensor(shift_coef.copy()))
        self.register_buffer("roll_level_state", torch.tensor(raw[levels][:m].copy()))
        self.register_buffer("roll_level_action", torch.tensor(raw[levels][m:].copy()))
        self.register_buffer("roll_inst", torch.tensor(raw[design.n_lagged + m + q :].copy()))

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

    # -- rollouts ---------------------------------------------------------------------------------
    @property
    def rollout_start(self) -> int:
        """Frames of observed state an open-loop rollout starts from: the largest lag (state or command) + 1."""
        self._check_rollout()
        return max(self.roll_state.shape[0], self.roll_action.shape[0]) + 1

    def rollout(self, start: np.ndarray, actions: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
        """Roll the learned transition forward open-loop from observed starting states under a command sequence.

        Parameters
        ----------
        start
            The latents of the first :attr:`rollout_start` frames of an episode (frames x latents, the
            units of :meth:`get_latent_representation`); only these frames are observed.
        actions
            The commands of every frame of the rollout (frames x ``action_names``, command units); its
            length sets the rollout's.
        shift
            Frames x latents 0/1: frame t is labelled as an intervention on the latent (its mechanism
            shift acts on ``z[t+1] - z[t]``); default none.

        Returns
        -------
        Frames x latents: the start, then the predicted latents of every later frame (no noise).
        """
        S, A = self.roll_state.numpy(), self.roll_action.numpy()
        b, d, C = self.roll_intercept.numpy(), self.roll_shift.numpy(), self.roll_inst.numpy()
        L, M = self.roll_level_state.numpy(), self.roll_level_action.numpy()
        r, m = self.rollout_start - 1, len(self.latent_names)
        actions = np.asarray(actions, dtype=np.float64).reshape(len(actions), len(self.action_names))
        start = np.asarray(start, dtype=np.float64)
        if start.shape != (r + 1, m) or len(actions) < r + 1:
            raise ModelError(
                f"model {self.name}: rollout start of shape {start.shape} with {len(actions)} frames of commands; "
                f"expected {r + 1} frames x {m} latents and at least {r + 1} frames of commands"
            )
        T = len(actions)
        shift = np.zeros((T, m)) if shift is None else np.asarray(shift, dtype=np.float64)
        within = np.linalg.inv(np.eye(m) - C.T)  # C is acyclic (a DAG), so I - C^T is invertible
        z = np.empty((T, m))
        z[: r + 1] = start
        dz, da = np.zeros((T, m)), np.diff(actions, axis=0, append=actions[-1:])
        dz[:r] = np.diff(start, axis=0)
        for t in range(r, T - 1):  # dz[t] = z[t+1] - z[t] from the p velocities and K command steps before it
            rest = b + d * shift[t] + z[t] @ L + actions[t] @ M
            rest = rest + sum(dz[t - lag] @ S[lag - 1] for lag in range(1, len(S) + 1))
            rest = rest + sum(da[t - lag] @ A[lag - 1] for lag in range(1, len(A) + 1))
            dz[t] = within @ rest
            z[t + 1] = z[t] + dz[t]
        return z

    def _check_rollout(self) -> None:
        if getattr(self, "roll_level_state", None) is None:  # checkpoints written before levels rollouts
            raise ModelError(f"model {self.name}: this checkpoint has no rollout coefficients; retrain it")

    # -- outputs ----------------------------------------------------------------------------------
    def get_latent_representation(self, data: CRLData) -> pd.DataFrame:
        z = (
            self.encoder.transform(_columns(data, self.sensor_names))
            if self.encoder
            else _columns(data, self.latent_names)
        )
        frame = pd.DataFrame(z.astype(np.float64), columns=self.latent_names)
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
        """Sources x latents: lagged weight plus instantaneous weight (one entry per pair; lags: :meth:`get_edges`)."""
        weights = self._lagged_weights()
        weights[len(self.action_names) :] += self._instantaneous_weights()
        return pd.DataFrame(weights, index=self.action_names + self.latent_names, columns=self.latent_names)

    def get_edges(self) -> pd.DataFrame:
        """Edge list ``source, target, weight, lag``: a lagged edge (lag = its strongest lag, >= 1) and an
        instantaneous one (lag 0) between the same pair are two rows."""
        names = self.action_names + self.latent_names
        lagged, lags = self._lagged_weights(), self._lags()
        src, dst = np.nonzero(lagged)
        rows = [(names[s], self.latent_names[t], lagged[s, t], int(lags[s, t])) for s, t in zip(src, dst, strict=True)]
        inst = self._instantaneous_weights()
        src, dst = np.nonzero(inst)
        rows += [(self.latent_names[s], self.latent_names[t], inst[s, t], 0) for s, t in zip(src, dst, strict=True)]
        edges = pd.DataFrame(rows, columns=["source", "target", "weight", "lag"])
        return edges.astype({"weight": float, "lag": "int64"})

    def _lagged_weights(self) -> np.ndarray:
        weights = self.adjacency.numpy().copy()
        if not self.params["self_loops"]:
            np.fill_diagonal(weights[len(self.action_names) :], 0.0)
        return weights

    def _instantaneous_weights(self) -> np.ndarray:
        # checkpoints written before lag-0 edges existed have no such buffer
        inst = getattr(self, "instantaneous", None)
        return inst.numpy().copy() if inst is not None else np.zeros((len(self.latent_names),) * 2)

    def _lags(self) -> np.ndarray:
        lag = getattr(self, "lag", None)
        return lag.numpy() if lag is not None else np.ones(self.adjacency.shape, dtype=np.int64)

    def get_loadings(self) -> pd.DataFrame:
        if self.encoder is not None:  # mean |d sensor / d latent| of the decoder
            table = pd.DataFrame(self.encoder.loadings.numpy(), index=self.latent_names, columns=self.sensor_names)
            return table.rename_axis(index="latent", columns="feature").stack().reset_index(name="loading")
        # latents are the state channels themselves: each loads on its own feature only
        return pd.DataFrame({"latent": self.latent_names, "feature": self.latent_names, "loading": 1.0})

    def _extra_state_json(self) -> dict[str, Any]:
        return {"action_names": self.action_names, "alpha": self.alpha_, "sensor_names": self.sensor_names}

    def _load_extra_state_json(self, extra: dict[str, Any]) -> None:
        self.action_names = list(extra["action_names"])
        self.alpha_ = float(extra["alpha"])
        self.sensor_names = list(extra.get("sensor_names", []))
        if self.sensor_names:  # the encoder's weights come with the state dict
            sizes = (len(self.sensor_names), len(self.latent_names), int(self.params["encoder_hidden"]))
            self.encoder = TemporalEncoder(*sizes)


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
    latent j only) and, with ``instantaneous``, the m contemporaneous latent velocities (which a
    fit may use only along an allowed DAG). Velocities and action steps are scaled by their SD
    over all frames.
    """

    def __init__(self, z, a, shift, segments, p: int, K: int, instantaneous: bool = False) -> None:
        self.m, self.q, self.p, self.K = z.shape[1], a.shape[1], p, K
        self.orders = np.full(self.m, p)  # lags of the state each latent's equation uses (<= p)
        self.own_action = np.full(self.m, -1)  # each latent's own command (action index), exempt from the penalty
        dz, da = _steps(z, segments), _steps(a, segments)
        self.sd_z = _sd(dz)
        self.sd_a = _sd(da) if self.q else np.zeros(0)
        self.n_shift = self.m if shift is not None else 0
        self.n_inst = self.m if instantaneous else 0
        self.sd_shift = shift.std(axis=0) if shift is not None else np.zeros(self.m)
        # action step of each frame (row i: a_i - a_{i-1}, standardised; 0 on a segment's first frame)
        self.action_steps = frame_steps(a, segments) / np.where(self.sd_a > 0, self.sd_a, 1.0) if self.q else None
        blocks = [self._rows(z, a, shift, s, e) for s, e in segments if e - s > max(p, K) + 1]
        self.n_rows = sum(len(y) for _, y in blocks)
        self.n_lagged = p * self.m + K * self.q + self.n_shift  # inputs known before the frame
        self.n_inputs = self.n_lagged + self.n_inst
        self.shift_rows = slice(p * self.m + K * self.q, self.n_lagged)
        self.inst_rows = slice(self.n_lagged, self.n_inputs)
        if self.n_rows == 0:
            self.x_mean, self.x_scale = np.zeros(self.n_lagged), np.ones(self.n_lagged)
            self.y_mean, self.y_scale = np.zeros(self.m), np.ones(self.m)
            self.gram, self.cross, self.yy = np.zeros((self.n_inputs,) * 2), np.zeros((self.n_inputs, self.m)), 0.0
            self.yy_col = np.zeros(self.m)
            return
        X = np.vstack([x for x, _ in blocks])
        Y = np.vstack([y for _, y in blocks])
        # the means and scales take a standardised coefficient back to raw units (rollouts)
        self.x_mean, self.y_mean = X.mean(axis=0), Y.mean(axis=0)
        X -= self.x_mean
        Y -= self.y_mean
        scale = np.concatenate([np.tile(self.sd_z, p), np.tile(self.sd_a, K), self.sd_shift[: self.n_shift]])
        self.x_scale, self.y_scale = np.where(scale > 0, scale, 1.0), np.where(self.sd_z > 0, self.sd_z, 1.0)
        X /= self.x_scale
        Y /= self.y_scale
        if self.n_inst:
            X = np.hstack([X, Y])
        n = len(Y)
        self.gram, self.cross, self.yy = X.T @ X / n, X.T @ Y / n, float((Y**2).sum() / n)
        self.yy_col = (Y**2).sum(axis=0) / n  # mean square of each latent's standardised velocity

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


def _sd(x: np.ndarray) -> np.ndarray:
    return x.std(axis=0) if len(x) else np.zeros(x.shape[1])


def _active(block: np.ndarray, lags: int, sources: int, targets: int) -> np.ndarray:
    """sources x targets: whether the group of lag coefficients is non-zero."""
    if lags == 0 or sources == 0:
        return np.zeros((sources, targets), dtype=bool)
    return np.abs(block.reshape(lags, sources, targets)).sum(axis=0) > 0


#: Strength of the automatic penalty, as a fraction of the universal threshold sqrt(2 log(d) / n). It
#: was 0.5 while commands were penalised (a weaker penalty kept every G1 command). With each
#: command's own target exempt and the graph step's half-sample refits calling edges confident,
#: 0.75 keeps pure-noise channels from confident edges in 19 of 20 arm seeds and keeps the arm's
#: weak pushed-gate edge, which 1.0 loses in most seeds (0.5: false confident edges in most
#: seeds): docs/benchmarks.md, "Edges into channels that nothing drives".
AUTO_ALPHA_SCALE = 0.75


def _max_lag(params: dict[str, Any]) -> int:
    """Lags of the state in the design: ``n_lags``, or ``max_lags`` when the order is chosen from the data."""
    n_lags = params["n_lags"]
    if n_lags == "auto":
        return int(params.get("max_lags", 5))
    if isinstance(n_lags, str) or isinstance(n_lags, bool) or int(n_lags) != n_lags:
        raise ModelError(f"model temporal: n_lags={n_lags!r}; expected 'auto' or an integer >= 1")
    return int(n_lags)


def _check_params(p: int, K: int, alpha: float | str) -> None:
    if p < 1 or K < 0:
        raise ModelError(
            f"model temporal: n_lags (or max_lags)={p}, n_action_lags={K}; expected >= 1 and n_action_lags >= 0"
        )
    if alpha != "auto" and (isinstance(alpha, str) or not alpha >= 0):
        raise ModelError(f"model temporal: alpha={alpha!r}; expected 'auto' or a non-negative number")


def _resolve_alpha(alpha: float | str, design: _Design) -> float:
    if alpha == "auto":
        n_coef = max(design.n_inputs * design.m, 2)
        return AUTO_ALPHA_SCALE * float(np.sqrt(2.0 * np.log(n_coef) / design.n_rows))
    return float(alpha)


def _lag_orders(design: _Design) -> np.ndarray:
    """Each latent's lag order: the p in 1..design.p with the lowest BIC of its least-squares equation.

    The equation of latent j at order p regresses j's velocity on p lags of every latent's velocity,
    every command's lags and j's intervention indicator (the inputs the lasso may use, unpenalised),
    on the same frames for every p: ``BIC = n log(RSS / n) + log(n) * n_inputs``. BIC is consistent
    for the order of a finite autoregression (AIC overfits), and one order per latent lets a
    second-order joint (a servo with inertia) use two lags without forcing them on first-order ones;
    a channel whose velocity is not a finite autoregression (white noise read in levels) takes the
    largest order.
    """
    m, n = design.m, max(design.n_rows, 1)
    bic = np.full((design.p, m), np.inf)
    other = np.arange(design.p * m, design.p * m + design.K * design.q)
    for p in range(1, design.p + 1):
        state = np.arange(p * m)
        for j in range(m):
            cols = np.concatenate([state, other] + ([[design.shift_rows.start + j]] if design.n_shift else []))
            G, c = design.gram[np.ix_(cols, cols)], design.cross[cols, j]
            coef = np.linalg.lstsq(G, c, rcond=None)[0]
            rss = max(float(design.yy_col[j] - 2 * coef @ c + coef @ G @ coef), 1e-12)
            bic[p - 1, j] = n * np.log(rss) + np.log(n) * len(cols)
    return np.argmin(bic, axis=0) + 1


def _own_commands(data: CRLData, actions: list[str], latents: list[str], prefix: str | list[str]) -> np.ndarray:
    """Index (in ``actions``) of each latent's own command, -1 where it has none.

    A command is a latent's own when its name is the latent's with the action prefix (``action.j`` for
    ``j``), or, failing that, when the frames the intervention labels say target the latent are the
    change points of that command alone (the labels of :func:`crl_pipe.pp.robot_interventions`).
    """
    start = prefix if isinstance(prefix, str) else "action."
    by_name = {a.removeprefix(start): i for i, a in enumerate(actions)}
    own = np.array([by_name.get(lat, -1) for lat in latents])
    missing = [k for k in range(len(latents)) if own[k] < 0]
    if missing and actions:
        own[missing] = _commands_from_labels(data, actions, [latents[k] for k in missing])
    return own


def _commands_from_labels(data: CRLData, actions: list[str], latents: list[str]) -> list[int]:
    """For each latent, the action whose changes fall on the frames labelled as targeting it (or -1)."""
    steps = np.abs(np.diff(_columns(data, actions), axis=0, prepend=np.nan)) > 0
    out = []
    for lat in latents:
        labelled = np.array([lat in data.targets.get(lab, ()) for lab in data.intervention])
        if not labelled.any():
            out.append(-1)
            continue
        share = steps[labelled].mean(axis=0) - steps[~labelled].mean(axis=0)
        best = int(np.argmax(share))
        out.append(best if share[best] > 0.5 else -1)
    return out


def _group_lasso(
    design: _Design,
    alpha: float,
    max_iter: int,
    tol: float,
    inst: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> np.ndarray:
    """FISTA for 0.5 * mean squared residual + alpha * sum_groups sqrt(|g|) ||coef_g||, one column per target.

    ``targets``: the latent each column predicts (default: each latent once). ``inst``: (latents x
    columns) 0/1, the contemporaneous velocities each column may use (default: none).
    """
    targets = np.arange(design.m) if targets is None else np.asarray(targets)
    use_inst = inst is not None and bool(np.any(inst))
    rows = np.arange(design.n_inputs if use_inst else design.n_lagged)
    G, C = design.gram[np.ix_(rows, rows)], design.cross[np.ix_(rows, targets)]
    allowed = _allowed(design, targets, inst if use_inst else None)[rows]
    step = 1.0 / max(float(np.linalg.eigvalsh(G)[-1]), 1e-12)
    coef = np.zeros_like(C)
    moment, t = coef.copy(), 1.0
    for _ in range(int(max_iter)):
        new = _prox(moment - step * (G @ moment - C), step * alpha, design, targets) * allowed
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        moment = new + (t - 1.0) / t_next * (new - coef)
        done = np.max(np.abs(new - coef)) < tol
        coef, t = new, t_next
        if done:
            break
    out = np.zeros((design.n_inputs, len(targets)))
    out[rows] = coef
    return out


def _allowed(design: _Design, targets: np.ndarray, inst: np.ndarray | None) -> np.ndarray:
    """Inputs x columns mask: indicator j acts on latent j only; contemporaneous inputs as ``inst`` allows."""
    allowed = np.ones((design.n_inputs, len(targets)))
    lags = np.repeat(np.arange(1, design.p + 1), design.m)  # lag of each state row
    allowed[: design.p * design.m] = lags[:, None] <= design.orders[targets][None, :]
    own = (np.arange(design.m)[:, None] == targets[None, :]).astype(float)
    if design.n_shift:
        allowed[design.shift_rows] = own
    if design.n_inst:
        allowed[design.inst_rows] = (inst if inst is not None else 0.0) * (1.0 - own)
    return allowed


def _prox(coef: np.ndarray, thresh: float, design: _Design, targets: np.ndarray) -> np.ndarray:
    """Group soft-thresholding: state groups (own lags exempt), action groups, single contemporaneous
    coefficients; indicators untouched."""
    m, q, p, K = design.m, design.q, design.p, design.K
    cols = np.arange(len(targets))
    out = coef.copy()
    state = out[: p * m].reshape(p, m, -1)
    keep = _shrink(state, thresh * np.sqrt(design.orders[targets]))  # a group has the column's order of lags
    keep[targets, cols] = 1.0
    out[: p * m] = (state * keep).reshape(p * m, -1)
    if q and K:
        action = out[p * m : p * m + K * q].reshape(K, q, -1)
        keep = _shrink(action, thresh * np.sqrt(K))
        own = design.own_action[targets]
        keep[own[own >= 0], cols[own >= 0]] = 1.0  # a command's own target: assumed, not penalised
        out[p * m : p * m + K * q] = (action * keep).reshape(K * q, -1)
    if design.n_inst and len(out) > design.n_lagged:
        inst = out[design.inst_rows]
        out[design.inst_rows] = np.sign(inst) * np.maximum(np.abs(inst) - thresh, 0.0)
    return out


def _shrink(block: np.ndarray, thresh: float) -> np.ndarray:
    norm = np.sqrt((block**2).sum(axis=0))
    return np.maximum(0.0, 1.0 - thresh / np.maximum(norm, 1e-300))


def _objective(coef: np.ndarray, design: _Design, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Penalised objective of each column (up to the target's constant 0.5 * mean y^2)."""
    m, q, p, K = design.m, design.q, design.p, design.K
    cols = np.arange(len(targets))
    fit = 0.5 * np.sum(coef * (design.gram @ coef), axis=0) - np.sum(coef * design.cross[:, targets], axis=0)
    state = np.sqrt((coef[: p * m].reshape(p, m, -1) ** 2).sum(axis=0))
    state[targets, cols] = 0.0  # own lags are not penalised
    penalty = np.sqrt(design.orders[targets]) * state.sum(axis=0) + np.abs(coef[design.inst_rows]).sum(axis=0)
    if q and K:
        action = np.sqrt((coef[p * m : p * m + K * q].reshape(K, q, -1) ** 2).sum(axis=0))
        own = design.own_action[targets]
        action[own[own >= 0], cols[own >= 0]] = 0.0  # nor are own commands
        penalty += np.sqrt(K) * action.sum(axis=0)
    return fit + alpha * penalty


def _instantaneous_dag(design: _Design, lagged: np.ndarray, threshold: float, solve: dict) -> list[tuple[int, int]]:
    """Oriented, acyclic lag-0 edges ``(k, j)`` among latents.

    1. Candidates: pairs linked by a contemporaneous coefficient when every latent may use every
       other's velocity (a cyclic dependency network; nothing is a candidate without within-frame
       dependence left after the lags).
    2. Direction: the order of the pair with the lower penalised objective. Both orders fit the
       frame equally well (Gaussian factorisations of one joint law); they differ in sparsity: if
       k -> j, j's equation needs k's velocity only, while in the other order k's drivers (actions,
       interventions, lagged parents) show up in j's equation and j's in k's.
    3. Acyclicity: while the oriented pairs hold a cycle, drop its edge with the weakest evidence.
    """
    m, alpha = design.m, solve["alpha"]
    full = _group_lasso(design, inst=np.ones((m, m)), **solve)[design.inst_rows]
    strong = np.abs(full) >= max(threshold, 1e-12)
    pairs = sorted({(min(k, j), max(k, j)) for k, j in zip(*np.nonzero(strong), strict=True)})
    if not pairs:
        return []
    base = _objective(lagged, design, np.arange(m), alpha)
    # columns: (target j, may use k) and (target k, may use j) for each candidate pair
    targets = np.array([t for k, j in pairs for t in (j, k)])
    inst = np.zeros((m, len(targets)))
    for c, (k, j) in enumerate(pairs):
        inst[k, 2 * c], inst[j, 2 * c + 1] = 1.0, 1.0
    gain = base[targets] - _objective(_group_lasso(design, inst=inst, targets=targets, **solve), design, targets, alpha)
    graph = nx.DiGraph()
    for c, (k, j) in enumerate(pairs):
        forward, backward = gain[2 * c], gain[2 * c + 1]  # objective drop of j using k, of k using j
        src, dst = (k, j) if forward >= backward else (j, k)
        graph.add_edge(src, dst, evidence=abs(forward - backward))
    while not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        graph.remove_edge(*min(cycle, key=lambda e: graph.edges[e[0], e[1]]["evidence"])[:2])
    return [(int(k), int(j)) for k, j in graph.edges]


def _dominant_lags(coef: np.ndarray, design: _Design) -> np.ndarray:
    """(actions + latents) x latents: the lag (frames, >= 1) of each lagged edge's largest coefficient."""
    m, q, p, K = design.m, design.q, design.p, design.K
    state = np.abs(coef[: p * m].reshape(p, m, m)).argmax(axis=0) + 1
    action = np.abs(coef[p * m : p * m + K * q].reshape(K, q, m)).argmax(axis=0) + 1 if q and K else np.ones((q, m))
    return np.vstack([action, state]).astype(np.int64)


#: Ridge of the rollout refit's least squares, relative to the (standardised) inputs' unit variance.
ROLLOUT_RIDGE = 1e-6


def _rollout_refit(
    design: _Design,
    coef: np.ndarray,
    z: np.ndarray,
    a: np.ndarray,
    shift: np.ndarray | None,
    segments: list[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares refit of each latent's velocity on the sparse fit's support plus levels, in raw units.

    Inputs (rows of the returned coefficients): the design's lagged inputs (``design.n_lagged``), then
    the levels ``z_t`` (m) and ``a_t`` (q) of the frame the velocity ``dz_t = z_{t+1} - z_t`` leaves
    from, then the contemporaneous velocities (m). Latent j's equation may use: the lags of itself and
    of its lagged parents (up to its order), the lags of its command parents, its indicator, the
    levels of itself, of its latent parents (lagged or instantaneous) and of its command parents, and
    its instantaneous parents' velocities (an acyclic set). Returns (inputs x latents, intercepts).

    The lasso picks the graph; this refit only sets the rollout's coefficients: unshrunk (the lasso's
    shrinkage biases multi-step predictions) and with the levels a velocity-form model lacks.
    """
    m, q, p, K = design.m, design.q, design.p, design.K
    X, Y = _rollout_rows(z, a, shift, segments, p, K)
    state = np.abs(coef[: p * m].reshape(p, m, m)).sum(axis=0) > 0
    state |= np.eye(m, dtype=bool)
    action = _active(coef[p * m : p * m + K * q], K, q, m)
    inst = np.abs(coef[design.inst_rows]) > 0 if design.n_inst else np.zeros((m, m), dtype=bool)
    lags = np.repeat(np.arange(1, p + 1), m)
    support = np.zeros((X.shape[1], m), dtype=bool)
    support[: p * m] = np.tile(state, (p, 1)) & (lags[:, None] <= design.orders[None, :])
    support[p * m : p * m + K * q] = np.tile(action, (K, 1))
    if design.n_shift:
        support[design.shift_rows] = np.eye(m, dtype=bool)
    n = design.n_lagged
    support[n : n + m] = state | inst
    support[n + m : n + m + q] = action
    support[n + m + q :] = inst
    return _least_squares(X, Y, support)


def _least_squares(X: np.ndarray, Y: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column j of ``Y``, ridge-stabilised least squares on the inputs ``support[:, j]`` allows, with an
    intercept, on standardised inputs; returns (inputs x columns coefficients in raw units, intercepts)."""
    m = Y.shape[1]
    out, intercept = np.zeros((X.shape[1], m)), np.zeros(m)
    if len(Y) == 0:
        return out, intercept
    varies = X.std(axis=0) > 0
    for j in range(m):
        cols = np.flatnonzero(support[:, j] & varies)
        x = X[:, cols]
        mean, scale, y_mean = x.mean(axis=0), x.std(axis=0), Y[:, j].mean()
        xs = (x - mean) / scale
        gram = xs.T @ xs / len(xs) + ROLLOUT_RIDGE * np.eye(len(cols))
        beta = np.linalg.solve(gram, xs.T @ (Y[:, j] - y_mean) / len(xs)) / scale
        out[cols, j] = beta
        intercept[j] = y_mean - mean @ beta
    return out, intercept


def _rollout_rows(
    z: np.ndarray, a: np.ndarray, shift: np.ndarray | None, segments: list[tuple[int, int]], p: int, K: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows of the rollout refit: the design's lagged inputs (as :meth:`_Design._rows`), the levels
    of the frame the velocity leaves from, and the contemporaneous velocities; target ``dz[i]``."""
    r, X, Y = max(p, K), [], []
    for s, e in segments:
        if e - s <= r + 1:
            continue
        dz, da, n = np.diff(z[s:e], axis=0), np.diff(a[s:e], axis=0), e - s - 1
        cols = [dz[r - lag : n - lag] for lag in range(1, p + 1)]
        cols += [da[r - lag : n - lag] for lag in range(1, K + 1)]
        if shift is not None:
            cols.append(shift[s + r : s + n])
        X.append(np.hstack([*cols, z[s + r : s + n], a[s + r : s + n], dz[r:n]]))
        Y.append(dz[r:n])
    width = p * z.shape[1] + K * a.shape[1] + (z.shape[1] if shift is not None else 0) + 2 * z.shape[1] + a.shape[1]
    return (np.vstack(X), np.vstack(Y)) if X else (np.zeros((0, width)), np.zeros((0, z.shape[1])))
