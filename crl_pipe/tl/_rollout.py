"""Robots: what commanding a channel does (steering by rollout), and how far held-out episodes are predicted.

Both roll a model's learned transition forward open loop (:meth:`~crl_pipe.models.TemporalSEM.rollout`,
``capabilities.rolls_out``) from observed starting states: the first
:attr:`~crl_pipe.models.TemporalSEM.rollout_start` frames of an episode (the largest lag + 1).

Steering (``command: {shoulder_yaw: 0.4, frames: 60}``). From each start, two rollouts: one under the
observed commands, one with the commanded channel held at the value for ``frames`` frames (from the
first predicted frame on); the effect on every state at frame k after the command starts is their
difference. Both rollouts keep the observed intervention labels (mechanism shifts), so the effect is
what the command carries through the learned command and state lags. ``predicted_change`` is the mean
over the starts (up to ``n_starts`` training episodes long enough); ``lower``/``upper`` are quantiles
of the effect over every (start, fit) pair, the fits being the model and ``n_boot`` refits of it on
bootstrap resamples of whole episodes: a range that holds both the spread over starting states (a
nonlinear model's effect depends on them; a linear one's on the observed commands it replaces) and
the uncertainty of the fit.

Held-out episodes. Their frames leave every fit; from starts every ``stride`` frames of each held-out
episode, the model rolls its states forward under the episode's own commands and labels, and the
error at ``horizons`` frames after the start is scored beside two baselines fitted on the same
training frames: ``persistence`` (the last observed state carried forward) and ``var``, a non-causal
vector autoregression (ordinary least squares, with a small ridge, of each state on the same number
of lagged states and commands as the model, in levels, no sparsity and no graph). The error is the
RMSE over the starts and channels in units of each channel's SD over the training frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd

from .._errors import ConfigError, ModelError
from .._steer_requests import SteerRequest, command_channels, parse_requests
from ..io import SCHEMAS, empty_table
from ..models import CRLData, CRLModel
from ._resample import bootstrap_episodes

#: Columns of ``steering.parquet`` (:func:`crl_pipe.tl.steer`); ``frame`` is null for a screen's requests.
STEERING_COLUMNS = list(SCHEMAS["steering"])
#: Horizons (frames after the last observed frame) at which held-out rollouts are scored.
ROLLOUT_HORIZONS = (1, 10, 30)
#: Predictors of held-out rollouts: the model and the two baselines.
ROLLOUT_PREDICTORS = ("model", "persistence", "var")


class CommandSteerer:
    """A fitted model that rolls out, ready to answer ``command`` requests (:func:`steer_commands`).

    Parameters
    ----------
    model
        A fitted model with ``capabilities.rolls_out`` (``temporal``).
    data
        The frames it was fitted on (starts and bootstrap refits), held-out episodes removed.
    n_boot
        Refits on bootstrap resamples of whole episodes behind the intervals (0: starts only).
    n_starts
        Training episodes whose first frames serve as starting states (the first ones long enough).
    seed
        Seed of the bootstrap resamples.
    """

    def __init__(self, model: CRLModel, data: CRLData, *, n_boot: int = 0, n_starts: int = 20, seed: int = 0) -> None:
        if not model.capabilities.rolls_out:
            raise ModelError(f"model {model.name}: cannot be rolled out (no learned transition over frames)")
        self.model, self.data, self.n_starts = model, data, int(n_starts)
        self.fits: list[CRLModel] = [model]
        self.bootstrap(n_boot, seed)

    def bootstrap(self, n_boot: int, seed: int = 0) -> None:
        """Refit the model on ``n_boot`` bootstrap resamples of whole episodes (the intervals' second source)."""
        rng = np.random.default_rng(seed)
        refits = []
        for _ in range(int(n_boot)):
            refit = type(self.model)(**self.model.params)
            refits.append(refit.fit(self.data.subset(bootstrap_episodes(self.data, rng)), seed=seed))
        self.fits = [self.model, *refits]

    def check(self, requests: Sequence[Mapping] | Mapping, *, where: str = "steer") -> list[SteerRequest]:
        """Parse ``requests`` and check that every channel they command is one of the data's commands."""
        parsed = parse_requests(requests, where=where)
        self.channels = command_channels(parsed, commands=self.model.action_names, where=where)
        return parsed

    def effects(self, request: SteerRequest, fit: CRLModel) -> np.ndarray:
        """Starts x frames x latents: the change of every latent at frames 1..``request.frames`` after the
        command starts, from each starting episode, under ``fit``."""
        r = fit.rollout_start
        out = []
        length = r + request.frames
        for z, a, shift in self.starts(length):
            a, shift = a[:length], shift[:length]
            commanded = a.copy()
            for channel, value in request.command.items():
                commanded[r - 1 : r - 1 + request.frames, fit.action_names.index(self.channels[channel])] = value
            base = fit.rollout(z[:r], a, shift)
            out.append(fit.rollout(z[:r], commanded, shift)[r:] - base[r:])
        if not out:
            raise ModelError(
                f"steer {request.name!r}: no training episode has {r + request.frames} frames; "
                "expected fewer frames or longer episodes"
            )
        return np.array(out)

    def starts(self, length: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(latents, commands, labels) of the first ``length`` frames of up to ``n_starts`` training episodes."""
        return [part for part in _episodes(self.model, self.data) if len(part[0]) >= length][: self.n_starts]

    def table(self, requests: Sequence[SteerRequest], *, level: float = 0.9) -> pd.DataFrame:
        """``steering.parquet`` rows of ``requests``: one per request, latent and frame after the command starts."""
        frames = []
        latents = list(self.model.latent_names)
        for request in requests:
            draws = [self.effects(request, fit) for fit in self.fits]  # fits x starts x frames x latents
            point = draws[0].mean(axis=0)
            spread = np.concatenate(draws, axis=0)
            tail = (1.0 - level) / 2.0
            lower, upper = np.quantile(spread, tail, axis=0), np.quantile(spread, 1.0 - tail, axis=0)
            steps = np.arange(1, request.frames + 1)
            channels = [self.channels[c] for c in request.command]
            paths = _chains(self.model, channels)
            frames.append(
                pd.DataFrame(
                    {
                        "request": request.name,
                        "feature": np.tile(latents, len(steps)),
                        "predicted_change": point.ravel(),
                        "lower": lower.ravel(),
                        "upper": upper.ravel(),
                        "route": "command " + ", ".join(channels),
                        "path": np.tile([paths[lat] for lat in latents], len(steps)),
                        "frame": np.repeat(steps, len(latents)),
                    }
                )
            )
        if not frames:
            return empty_table("steering")
        return pd.concat(frames, ignore_index=True)[STEERING_COLUMNS]


def steer_commands(
    model: CRLModel,
    requests: Sequence[Mapping] | Mapping,
    data: CRLData,
    *,
    n_boot: int = 0,
    level: float = 0.9,
    n_starts: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """What holding a robot's command channel at a value does to every state, frame by frame, with intervals.

    Parameters
    ----------
    model
        A fitted model that rolls out (``temporal``).
    requests
        ``{"command": {"shoulder_yaw": 0.4, "frames": 60}}`` or a list of such (optional ``name``).
    data
        The frames the model was fitted on (starting states and refits).
    n_boot
        Refits on bootstrap resamples of whole episodes behind ``lower``/``upper``.
    level
        Coverage of the interval.
    n_starts
        Training episodes whose first frames serve as starting states.
    seed
        Seed of the bootstrap resamples.

    Returns
    -------
    Table ``request, feature, predicted_change, lower, upper, route, path, frame``: the change of each
    state (its own units) at ``frame`` frames after the command starts; ``path``: the chain of
    channels from the command to the state in the model's graph (``action.a -> a -> gate``).
    """
    steerer = CommandSteerer(model, data, n_boot=0, n_starts=n_starts, seed=seed)
    parsed = steerer.check(requests)
    steerer.bootstrap(n_boot, seed)
    return steerer.table(parsed, level=level)


def _episodes(model: CRLModel, data: CRLData) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(latents, commands, intervention labels) of each contiguous episode of ``data``, in order."""
    from ..models.temporal import _intervention_matrix, _segments  # the model's own reading of the frames

    latents = model.get_latent_representation(data)[list(model.latent_names)].to_numpy(dtype=np.float64)
    index = {f: i for i, f in enumerate(data.features)}
    commands = np.asarray(data.X[:, [index[a] for a in model.action_names]], dtype=np.float64)
    labels = _intervention_matrix(data, list(model.latent_names))
    return [(latents[s:e], commands[s:e], labels[s:e]) for s, e in _segments(data)]


def _chains(model: CRLModel, channels: list[str]) -> dict[str, str]:
    """Per latent, the strongest chain in the model's graph from a commanded channel to it ('' if none)."""
    edges = model.get_edges()
    graph = nx.DiGraph()
    for row in edges.itertuples():
        if row.source != row.target and row.weight != 0:
            cost = -np.log(min(abs(row.weight), 1.0 - 1e-9))  # the strongest chain: least summed -log|weight|
            if not graph.has_edge(row.source, row.target) or graph.edges[row.source, row.target]["cost"] > cost:
                graph.add_edge(row.source, row.target, cost=cost)
    out = {}
    for latent in model.latent_names:
        best = None
        for channel in channels:
            if channel in graph and latent in graph:
                try:
                    cost, path = nx.single_source_bellman_ford(graph, channel, latent, weight="cost")
                except nx.NetworkXNoPath:
                    continue
                if best is None or cost < best[0]:
                    best = (cost, path)
        out[latent] = " -> ".join(best[1]) if best else ""
    return out


# -- held-out episodes -----------------------------------------------------------------------------
def held_out_episodes(data: CRLData, held_out: Mapping, *, where: str = "held_out") -> list[str]:
    """The episodes ``held_out: {episodes: [...]}`` names, as ``data.obs["episode"]`` writes them; an
    unknown key or episode is a one-line :class:`ConfigError` listing what exists."""
    unknown = [k for k in held_out if k != "episodes"]
    if unknown or not isinstance(held_out.get("episodes"), Sequence) or isinstance(held_out.get("episodes"), str):
        raise ConfigError(f"{where}: {dict(held_out)!r}; expected {{episodes: [3, 7]}} (robot logs)")
    if data.obs is None or "episode" not in data.obs:
        raise ConfigError(f"{where}: episodes are held out, but the data has no 'episode' (not a robot log)")
    present = list(pd.unique(data.obs["episode"].astype(str)))
    episodes = [str(e) for e in held_out["episodes"]]
    missing = [e for e in episodes if e not in present]
    if missing:
        raise ConfigError(f"{where}: episode {missing[0]!r} is not in the log; expected some of {present[:10]}")
    if len(set(episodes)) >= len(present):
        raise ConfigError(f"{where}: every episode is held out; expected at least one left to train on")
    return episodes


def split_episodes(data: CRLData, held_out: Mapping, *, where: str = "held_out") -> tuple[CRLData, CRLData]:
    """(training frames, held-out frames) of ``held_out: {episodes: [...]}``."""
    episodes = held_out_episodes(data, held_out, where=where)
    held = data.obs["episode"].astype(str).isin(episodes).to_numpy()
    return data.subset(~held), data.subset(held)


def score_rollouts(
    model: CRLModel,
    train: CRLData,
    held: CRLData,
    *,
    horizons: Sequence[int] = ROLLOUT_HORIZONS,
    stride: int = 10,
    ridge: float = 1e-6,
) -> pd.DataFrame:
    """Error of open-loop rollouts of held-out episodes at each horizon: the model, persistence and a VAR.

    Parameters
    ----------
    model
        A fitted model that rolls out, fitted on ``train`` (without the held-out episodes).
    train
        The training frames: the baselines are fitted on them and the channels' SDs read from them.
    held
        The held-out episodes' frames.
    horizons
        Frames after the last observed frame at which the error is read.
    stride
        Frames between two starts within a held-out episode.
    ridge
        Ridge of the VAR's least squares (relative to the mean diagonal of its Gram matrix).

    Returns
    -------
    Table ``intervention, predictor, metric, value`` (``predictions`` schema): per held-out episode
    (``episode 3``) and predictor (``model``, ``persistence``, ``var``), ``rollout_rmse_h<h>``: the RMSE
    over starts and channels, in training SDs of each channel.
    """
    r, horizon = model.rollout_start, max(horizons)
    train_parts, held_parts = _episodes(model, train), _episodes(model, held)
    sd = np.concatenate([z for z, _, _ in train_parts]).std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    var = _VAR.fit(train_parts, n_lags=r - 1, ridge=ridge)
    names = pd.unique(held.obs["episode"].astype(str))
    segments = _segment_episodes(held)
    rows = []
    for name in names:
        errors = {p: {h: [] for h in horizons} for p in ROLLOUT_PREDICTORS}
        for (z, a, shift), episode in zip(held_parts, segments, strict=True):
            if episode != name:
                continue
            for s in range(0, len(z) - r - horizon + 1, stride):
                window = slice(s, s + r + horizon)
                zw, aw, sw = z[window], a[window], shift[window]
                predicted = {
                    "model": model.rollout(zw[:r], aw, sw),
                    "persistence": np.vstack([zw[:r], np.repeat(zw[r - 1 : r], horizon, axis=0)]),
                    "var": var.rollout(zw[:r], aw),
                }
                for p, pred in predicted.items():
                    for h in horizons:
                        errors[p][h].append((pred[r - 1 + h] - zw[r - 1 + h]) / sd)
        if not errors["model"][horizons[0]]:
            raise ModelError(
                f"held-out episode {name!r}: shorter than {r + horizon} frames; expected longer episodes to score"
            )
        for p in ROLLOUT_PREDICTORS:
            for h in horizons:
                rmse = float(np.sqrt(np.mean(np.square(errors[p][h]))))
                rows.append((f"episode {name}", p, f"rollout_rmse_h{h}", rmse))
    return pd.DataFrame(rows, columns=["intervention", "predictor", "metric", "value"])


def _segment_episodes(data: CRLData) -> list[str]:
    """The episode of each contiguous segment of ``data`` (as :func:`_episodes` orders them)."""
    from ..models.temporal import _segments  # the model's own reading of the frames

    episode = data.obs["episode"].astype(str).to_numpy()
    return [str(episode[s]) for s, _ in _segments(data)]


class _VAR:
    """Non-causal vector autoregression in levels: ``z_t = c + sum_l A_l z_{t-l} + sum_l B_l a_{t-l}`` (OLS)."""

    def __init__(self, coef: np.ndarray, n_lags: int) -> None:
        self.coef, self.n_lags = coef, n_lags

    @classmethod
    def fit(cls, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_lags: int, ridge: float) -> _VAR:
        X, Y = [], []
        for z, a, _ in parts:
            for t in range(n_lags, len(z)):
                X.append(cls._inputs(z[t - n_lags : t], a[t - n_lags : t]))
                Y.append(z[t])
        if len(X) < 2:
            raise ModelError(f"rollout baseline var: {len(X)} training frames; expected longer training episodes")
        X, Y = np.array(X), np.array(Y)
        gram = X.T @ X
        gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
        return cls(np.linalg.solve(gram, X.T @ Y), n_lags)

    @staticmethod
    def _inputs(z_past: np.ndarray, a_past: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], z_past[::-1].ravel(), a_past[::-1].ravel()])  # newest lag first

    def rollout(self, start: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The start, then each later frame predicted from the predicted past (open loop)."""
        z = np.empty((len(actions), start.shape[1]))
        z[: len(start)] = start
        for t in range(len(start), len(actions)):
            z[t] = self._inputs(z[t - self.n_lags : t], actions[t - self.n_lags : t]) @ self.coef
        return z
