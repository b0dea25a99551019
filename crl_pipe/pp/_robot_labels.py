"""Robot logs -> per-frame intervention labels (the ``interventions.parquet`` table).

A frame is an intervention on a robot variable when (1) an event/flag column is on, (2) a
commanded action channel changes abruptly (a change point), or (3) the frame's environment label
names one; every other frame is observational (a control). Labels follow the screen convention:
the ``+``-joined sorted targets, so a single-target label is the variable's name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from ._perturbation import parse_perturbation

log = logging.getLogger("crl_pipe")

CONTROL_LABEL = "observational"
_MAX_SHOWN = 5


def robot_interventions(
    adata: ad.AnnData,
    *,
    events: Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    actions: Sequence[str] | None = None,
    action_map: Mapping[str, str | Sequence[str]] | None = None,
    change_threshold: float = 3.0,
    environment_key: str | None = None,
    control_label: str = CONTROL_LABEL,
    unmeasured: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per frame in the ``interventions`` schema, plus ``episode``, ``frame`` and ``timestamp``.

    Parameters
    ----------
    adata
        Robot logs in the canonical layout (:func:`crl_pipe.io.read_robot`): ``obs`` with
        ``episode``, ``frame``, ``timestamp``; ``var["kind"]``; rows in time order per episode.
    events
        Event/flag columns (``obs`` columns or channels): a frame where the flag is non-zero (or
        true) intervenes on the flag's targets. A list makes each flag its own target; a mapping
        gives each flag's target variable(s). Default: the channels of kind ``event``.
    actions
        Commanded action channels whose change points are interventions (default: the channels of
        kind ``action``; ``[]``: none).
    action_map
        Action channel -> the variable(s) it drives. Default: each action drives the state channel
        with the same ``var["channel"]`` name (``action.left_hip`` -> ``left_hip``); where several
        share that name, the one with the same ``var["field"]``.
    change_threshold
        A frame is a change point of action channel j when ``|a_t - a_{t-1}|`` exceeds this many
        root-mean-square frame-to-frame changes of channel j (pooled over episodes; the first
        frame of an episode is never a change point).
    environment_key
        ``obs`` column whose value labels the frame's environment (e.g. an episode condition such
        as ``"payload"`` or ``"left_elbow+left_wrist"``): parsed like a perturbation label, its
        tokens are targets; control tokens (``control``, ``ctrl``, ...) and empty values add none.
    control_label
        ``intervention`` of frames without any target.
    unmeasured
        Variables that no channel measures (e.g. joint angles seen only through sensors that mix
        them, learned by ``temporal`` with ``sensors``): ``action_map`` may name them, and by default
        ``action.<name>`` drives the unmeasured variable ``<name>`` when no state channel has that name.

    Returns
    -------
    DataFrame with ``sample_id``, ``intervention``, ``targets`` (sorted variable names),
    ``n_targets``, ``is_control``, ``episode``, ``frame``, ``timestamp``, in the row order of
    ``adata``.

    Raises
    ------
    InputError
        Missing frame columns, event/action columns or mapped variables that do not exist, an action
        without a same-named state channel, or a negative ``change_threshold``.
    """
    _check_frames(adata)
    if adata.isbacked:
        adata = adata.to_memory()  # robot logs are small; channels are read by name below
    if change_threshold < 0:
        raise InputError(f"change_threshold={change_threshold}; expected a non-negative number of RMS changes")
    hits: list[tuple[np.ndarray, str]] = []  # (frame mask, target)
    hits += _event_hits(adata, events)
    hits += _action_hits(adata, actions, action_map, change_threshold, list(unmeasured))
    targets = _collect(adata.n_obs, hits)
    if environment_key is not None:
        _add_environment(adata, environment_key, targets)
    return _table(adata, targets, control_label)


def default_action_map(
    adata: ad.AnnData, actions: Sequence[str] | None = None, unmeasured: Sequence[str] = ()
) -> dict[str, str]:
    """Action channel -> the state channel of the same ``channel`` name (and ``field``, to break ties),
    else the ``unmeasured`` variable of that name.

    Raises :class:`InputError` naming the actions that have no such state channel, or more than one.
    """
    var = adata.var
    actions = list(var.index[var["kind"] == "action"]) if actions is None else list(actions)
    _check_channels(adata, actions, "action channel(s)")
    states = var[var["kind"] == "state"]
    mapping, unmatched = {}, []
    for action in actions:
        match = states.index[states["channel"] == var.at[action, "channel"]]
        if len(match) > 1 and "field" in var:
            match = match[states.loc[match, "field"] == var.at[action, "field"]]
        if len(match) == 1:
            mapping[action] = str(match[0])
        elif len(match) == 0 and var.at[action, "channel"] in unmeasured:
            mapping[action] = str(var.at[action, "channel"])
        else:
            unmatched.append(action)
    if unmatched:
        shown = ", ".join(unmatched[:_MAX_SHOWN])
        raise InputError(
            f"action channel(s) {shown} drive no single state channel of the same name; expected one each "
            "(give action_map: action channel -> driven variable)"
        )
    return mapping


def _check_frames(adata: ad.AnnData) -> None:
    missing = [c for c in ("episode", "frame", "timestamp") if c not in adata.obs]
    if missing:
        raise InputError(f"obs column(s) {missing} not found; expected robot logs with episode, frame and timestamp")
    if "kind" not in adata.var:
        raise InputError("var column 'kind' not found; expected robot channels of kind state/action/event/other")


def _check_channels(adata: ad.AnnData, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in adata.var_names]
    if missing:
        raise InputError(f"{what} {missing[:_MAX_SHOWN]} not found; expected channels of the data (var names)")


def _column(adata: ad.AnnData, name: str) -> np.ndarray:
    """An obs column or a channel's values, by name."""
    if name in adata.obs:
        return adata.obs[name].to_numpy()
    if name in adata.var_names:
        return np.asarray(adata[:, name].X).ravel()
    raise InputError(f"event column {name!r} not found; expected an obs column or a channel (var name)")


def _event_hits(adata: ad.AnnData, events) -> list[tuple[np.ndarray, str]]:
    if events is None:
        events = list(adata.var_names[adata.var["kind"] == "event"])
    mapping = dict(events) if isinstance(events, Mapping) else {e: e for e in events}
    hits = []
    for column, targets in mapping.items():
        values = _column(adata, column)
        if values.dtype.kind not in "biuf":
            raise InputError(f"event column {column!r} has dtype {values.dtype}; expected a boolean or numeric flag")
        on = np.nan_to_num(values.astype(np.float64)) != 0
        for target in [targets] if isinstance(targets, str) else list(targets):
            hits.append((on, str(target)))
    return hits


def _action_hits(adata, actions, action_map, threshold: float, unmeasured: list[str]) -> list[tuple[np.ndarray, str]]:
    if action_map is not None:
        mapping = {a: [t] if isinstance(t, str) else list(t) for a, t in action_map.items()}
        _check_channels(adata, list(mapping), "action_map channel(s)")
        driven = [t for ts in mapping.values() for t in ts if t not in unmeasured]
        _check_channels(adata, driven, "action_map driven variable(s)")
        if actions is not None:
            _check_channels(adata, actions, "action channel(s)")
            unmapped = [a for a in actions if a not in mapping]
            if unmapped:
                raise InputError(
                    f"action channel(s) {unmapped[:_MAX_SHOWN]} are missing from action_map; "
                    "expected every action mapped"
                )
            mapping = {a: mapping[a] for a in actions}
    else:
        mapping = {a: [s] for a, s in default_action_map(adata, actions, unmeasured).items()}
    if not mapping:
        return []
    names = list(mapping)
    jumps = _change_points(adata, names, threshold)
    return [(jumps[:, i], t) for i, a in enumerate(names) for t in mapping[a]]


def _change_points(adata: ad.AnnData, channels: list[str], threshold: float) -> np.ndarray:
    """Frames x channels mask: ``|a_t - a_{t-1}|`` above ``threshold`` RMS changes of its channel."""
    values = np.asarray(adata[:, channels].X, dtype=np.float64)
    step = np.diff(values, axis=0, prepend=values[:1])
    episode = adata.obs["episode"].to_numpy()
    first = np.r_[True, episode[1:] != episode[:-1]]
    step[first] = 0.0  # no change point across an episode boundary or on an episode's first frame
    rms = np.sqrt(np.mean(step[~first] ** 2, axis=0)) if (~first).any() else np.zeros(len(channels))
    return np.abs(step) > threshold * rms


def _collect(n_obs: int, hits: list[tuple[np.ndarray, str]]) -> list[set[str]]:
    targets: list[set[str]] = [set() for _ in range(n_obs)]
    for mask, target in hits:
        for i in np.flatnonzero(mask):
            targets[i].add(target)
    return targets


def _add_environment(adata: ad.AnnData, key: str, targets: list[set[str]]) -> None:
    if key not in adata.obs:
        raise InputError(
            f"obs column {key!r} (environment_key) not found; expected the environment label of each frame"
        )
    column = adata.obs[key]
    codes, uniques = pd.factorize(column)
    parsed = [parse_perturbation(u) or () for u in uniques]
    for i, code in enumerate(codes):
        if code >= 0:
            targets[i].update(parsed[code])


def _table(adata: ad.AnnData, targets: list[set[str]], control_label: str) -> pd.DataFrame:
    sorted_targets = [sorted(t) for t in targets]
    table = pd.DataFrame(
        {
            "sample_id": np.asarray(adata.obs_names, dtype=str),
            "intervention": ["+".join(t) if t else control_label for t in sorted_targets],
            "targets": sorted_targets,
            "n_targets": np.array([len(t) for t in sorted_targets], dtype=np.int64),
        }
    )
    table["is_control"] = table["n_targets"] == 0
    table["episode"] = adata.obs["episode"].astype(str).to_numpy()
    table["frame"] = adata.obs["frame"].to_numpy(dtype=np.int64)
    table["timestamp"] = adata.obs["timestamp"].to_numpy(dtype=np.float64)
    n_int = int((~table["is_control"]).sum())
    log.info(
        "%d of %d frames are interventions (%d distinct labels)", n_int, len(table), table["intervention"].nunique() - 1
    )
    return table
