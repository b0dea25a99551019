"""Where a robot log sits on the robustness atlas's robot knobs: episodes, sensor noise, commands.

The atlas's robot rows (``benchmarks/robustness/``, docs/robustness.md) come from ``simulate_robot``
logs of :data:`ATLAS_JOINTS` joints, :data:`ATLAS_FRAMES` frames per episode, one pure-noise channel,
weakened on three knobs: the number of episodes, Gaussian sensor noise added to every state channel
(SD in radians) and the commands of some joints left out of the log. :func:`robot_estimates` reads
the same three from a run's files (``preprocessed.h5ad`` and ``interventions.parquet``):

- ``n_episodes``: the log's frames in the atlas's episodes of :data:`ATLAS_FRAMES` frames (total
  frames / 200), so that 4 episodes of 500 frames read as the atlas's 10; the episodes and their
  median length are given with it;
- ``sensor_noise``: per commanded state channel, the robust SD of the third differences of each
  episode, 1.4826 x MAD / sqrt(20) (white noise of SD s has third differences of SD sqrt(20) s).
  Why this and not the residual SD of the ``temporal`` model's one-step prediction: the residual mixes
  sensor noise with the process's own innovations (how much of each, the model cannot say), while
  differencing three times removes a joint's smooth motion (positions, velocities that decay at the
  actuator's gain, to a factor 0.3^3 of their size) and the median ignores the sparse kicks of
  set-point jumps, leaving the white sensor noise. What remains of the motion is the process's own
  velocity jitter: on the atlas's clean logs the estimate is 0.002 rad, an upper bound of the noise
  well under the atlas's first noisy level (0.01). Channels are in the user's units (degrees,
  radians, millimetres), so the estimate is converted to the atlas's radians by how far the
  channels move: the RMS change over :data:`_SPAN` frames (sensor noise removed), median over the
  channels, against the atlas's :data:`ATLAS_MOTION`. On a log of the atlas's own simulator the
  conversion is close to 1 (0.85-1.15 over seeds); on another robot it assumes that the atlas's
  noise-to-motion ratio is what matters to ``temporal``, which is how the noise enters its fit;
- ``unlogged_commands``: state channels on which no command (or event) of the log acts. An unlogged
  command cannot be seen: a sensor never commanded (a temperature, a load cell, the atlas's own
  noise channel) looks the same, so the count is an upper bound of the unlogged commands, and the
  channels are named for the user to judge.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

#: The atlas's robot logs (benchmarks/robustness/config/small.yaml ``robot.base``; a test checks).
ATLAS_JOINTS, ATLAS_FRAMES = 4, 200
#: How far the atlas's joints move: RMS change over :data:`_SPAN` frames, median over joints, median over
#: seeds 0-4 of its base log (0.24-0.33 rad by seed; tests/test_robustness.py recomputes it).
ATLAS_MOTION = 0.29
_SPAN = 10
#: 1.4826 x MAD is the SD of a normal; third differences of white noise of SD s have SD sqrt(20) s.
_MAD_TO_SD, _THIRD_DIFF = 1.4826, np.sqrt(20.0)

Estimate = tuple[float, str]


def robot_estimates(
    adata: ad.AnnData | None, interventions: pd.DataFrame, anchors: pd.DataFrame
) -> tuple[dict[str, Estimate], list[str]]:
    """The robot knobs of the atlas estimated from a run's files, and notes on what the atlas does not cover.

    Parameters
    ----------
    adata
        The preprocessed log (``preprocessed.h5ad``, backed or in memory: frames x channels in time order
        per episode, ``var["kind"]`` state / action, ``obs`` ``episode``), or ``None``: the sensor noise is
        not estimated.
    interventions
        The ``interventions`` table (``targets`` per frame; ``episode`` where the labels carry it).
    anchors
        The ``anchors`` table: each state channel anchors itself, so its programs are the state channels.

    Returns
    -------
    estimates, notes
        Knob -> (estimate, how it was made) for ``n_episodes``, ``sensor_noise`` and
        ``unlogged_commands``; plain sentences where the log differs from the atlas's.
    """
    episodes = _episodes(adata, interventions)
    states = _state_channels(adata, anchors)
    commanded = _commanded(interventions, states)
    estimates = {
        "n_episodes": _episode_count(episodes),
        "sensor_noise": _sensor_noise(adata, episodes, [c for c in states if c in commanded] or states),
        "unlogged_commands": _uncommanded(states, commanded, adata),
    }
    return estimates, _notes(episodes, states, [c for c in states if c not in commanded])


def _episodes(adata: ad.AnnData | None, interventions: pd.DataFrame) -> pd.Series | None:
    """Each frame's episode, in frame order (from the log, else the labels)."""
    if adata is not None and "episode" in adata.obs:
        return adata.obs["episode"].astype(str).reset_index(drop=True)
    if "episode" in interventions:
        return interventions["episode"].astype(str).reset_index(drop=True)
    return None


def _state_channels(adata: ad.AnnData | None, anchors: pd.DataFrame) -> list[str]:
    if adata is not None and "kind" in adata.var:
        return [str(c) for c in adata.var_names[adata.var["kind"] == "state"]]
    return sorted({str(p) for p in anchors["program"]})


def _commanded(interventions: pd.DataFrame, states: list[str]) -> set[str]:
    """State channels that some labelled intervention (a command change, an event) acts on."""
    acted = {str(t) for targets in interventions["targets"] for t in targets}
    return acted & set(states)


def _episode_count(episodes: pd.Series | None) -> Estimate:
    if episodes is None or episodes.empty:
        return np.nan, "no episode column in the log or its labels"
    lengths = episodes.value_counts()
    value = len(episodes) / ATLAS_FRAMES
    return value, (
        f"{len(lengths)} episodes of median {lengths.median():g} frames ({len(episodes)} frames), read as the "
        f"atlas's episodes of {ATLAS_FRAMES} frames"
    )


def _sensor_noise(adata: ad.AnnData | None, episodes: pd.Series | None, channels: list[str]) -> Estimate:
    if adata is None:
        return np.nan, "no preprocessed log given"
    if episodes is None or not channels:
        return np.nan, "no episode column" if episodes is None else "no state channels"
    X = adata[:, channels].X  # only these channels: a backed log with camera frames stays on disk
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    groups = [np.flatnonzero(episodes.to_numpy() == e) for e in pd.unique(episodes)]
    groups = [g for g in groups if len(g) > _SPAN + 3]
    if not groups:
        return np.nan, f"no episode longer than {_SPAN + 3} frames"
    noise, motion = [], []
    for j in range(X.shape[1]):
        third = np.concatenate([np.diff(X[g, j], n=3) for g in groups])
        s = _MAD_TO_SD * float(np.median(np.abs(third - np.median(third)))) / _THIRD_DIFF
        span = np.concatenate([X[g[_SPAN:], j] - X[g[:-_SPAN], j] for g in groups])
        noise.append(s)
        motion.append(np.sqrt(max(float(np.mean(span**2)) - 2 * s**2, 0.0)))  # the noise adds 2 s^2
    s, m = float(np.median(noise)), float(np.median(motion))
    if m <= 0:
        return np.nan, "the channels do not move: no scale to compare the noise with"
    value = s * ATLAS_MOTION / m
    return value, (
        f"SD {s:.3g} in the channels' units (median over {len(channels)} state channels, from third differences); "
        f"they move {m:.3g} per {_SPAN} frames, the atlas's joints {ATLAS_MOTION:g} rad"
    )


def _uncommanded(states: list[str], commanded: set[str], adata: ad.AnnData | None) -> Estimate:
    if not states:
        return np.nan, "no state channels"
    without = [c for c in states if c not in commanded]
    n_actions = int((adata.var["kind"] == "action").sum()) if adata is not None and "kind" in adata.var else None
    logged = f"{n_actions} command channels logged; " if n_actions is not None else ""
    shown = ", ".join(without[:6]) + (" ..." if len(without) > 6 else "")
    return float(len(without)), (
        f"{logged}{len(states) - len(without)} of {len(states)} state channels are acted on by a command or event"
        + (f"; without: {shown} (at most this many commands unlogged: a sensor never commanded looks the same)"
           if without else "")
    )  # fmt: skip


def _notes(episodes: pd.Series | None, states: list[str], without: list[str]) -> list[str]:
    notes = []
    if without:
        notes.append(
            f"No command or event acts on {len(without)} state channel(s) ({', '.join(without[:6])}"
            f"{' ...' if len(without) > 6 else ''}). If one is a joint whose command was not logged, the graph can "
            "give it no command edge, and its commanded moves read as its own noise or as its parents' effect; the "
            "atlas's row for channels without a command scores the rest of the graph."
        )
    if episodes is not None and not episodes.empty:
        frames = float(episodes.value_counts().median())
        if not ATLAS_FRAMES / 2 <= frames <= 2 * ATLAS_FRAMES:
            notes.append(
                f"The atlas's episodes had {ATLAS_FRAMES} frames; these have a median of {frames:g}: the episode "
                "count is read at equal frames, but the number of episode starts differs."
            )
    if not states:
        notes.append(
            "No state channel: the variables are learned from other channels (camera frames, sensors), while the "
            "atlas's robots logged their joints directly; its numbers are a best case here."
        )
    elif len(states) > 3 * ATLAS_JOINTS or len(states) < ATLAS_JOINTS / 2:
        notes.append(
            f"The atlas was simulated with {ATLAS_JOINTS} joints and one noise channel; this log has {len(states)} "
            "state channels. SHD grows with the number of edges: read the F1 and the false-edge rate across that gap."
        )
    return notes
