"""Robot logs as one plain table (CSV/TSV or Parquet): an episode column, a time column, signal columns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from ._frames import frames_to_anndata, require_path

#: Seconds per unit of the time column.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
#: Column-name prefixes that mark a commanded action when ``actions`` is not given.
ACTION_PREFIXES = ("action.", "action_")


def read_robot_table(
    path: str | os.PathLike,
    *,
    episode_key: str | None = "episode",
    time_key: str = "timestamp",
    time_unit: str = "s",
    columns: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    events: Sequence[str] | None = None,
) -> ad.AnnData:
    """Read a table of robot signals, one row per frame, into the canonical robot AnnData.

    Parameters
    ----------
    path
        A ``.csv``/``.tsv`` (optionally ``.gz``) or ``.parquet`` file.
    episode_key
        Column naming each row's episode; ``None``: the whole file is one episode, named after it.
    time_key
        Column holding each frame's time: numbers in ``time_unit``, or date-times.
    time_unit
        Unit of a numeric time column: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``.
    columns
        Signal columns to keep (default: every numeric or boolean column other than the episode and
        time columns). Other text columns are kept in ``obs``.
    actions
        Columns of kind ``action`` (default: those named ``action.<x>`` or ``action_<x>``; their
        ``channel`` is ``<x>``, so that they pair with the state column ``<x>``).
    events
        Columns of kind ``event`` (default: the boolean columns).

    Returns
    -------
    AnnData with one row per table row (see :mod:`crl_pipe.io._frames`): ``frame`` is the row's
    position within its episode, in file order; ``timestamp`` is in seconds. Rows must already be in
    time order within each episode (they are not sorted).
    """
    path = require_path(path, "robot log table")
    if time_unit not in TIME_UNITS:
        raise InputError(f"{path}: time_unit {time_unit!r} not understood; expected one of {list(TIME_UNITS)}")
    frame = _read(path)
    for key in (episode_key, time_key):
        if key is not None and key not in frame:
            raise InputError(f"{path}: column {key!r} not found; expected it (columns: {list(frame.columns)[:10]})")
    episode = frame[episode_key].astype(str) if episode_key else pd.Series(path.name.split(".")[0], index=frame.index)
    signals = _signal_columns(frame, path, exclude={episode_key, time_key}, columns=columns)
    kinds = _kinds(frame, path, signals, actions, events)
    obs = pd.DataFrame(
        {
            "episode": episode.to_numpy(),
            "frame": episode.groupby(episode, sort=False).cumcount().to_numpy(),
            "timestamp": _seconds(frame[time_key], time_unit, path, time_key),
        }
    )
    for column in frame.columns.difference([*signals, episode_key, time_key], sort=False):
        obs[column] = frame[column].to_numpy()
    var = pd.DataFrame(
        {
            "kind": kinds,
            "source": signals,
            "field": "",
            "channel": [_channel(c, k) for c, k in zip(signals, kinds, strict=True)],
        },
        index=signals,
    )
    X = frame[signals].to_numpy(dtype=np.float64)
    return frames_to_anndata(X, obs, var, path=path)


def _read(path: Path) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            return pd.read_parquet(path)
        if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
            return pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable table ({type(err).__name__}: {err})") from None
    raise InputError(f"{path}: unknown table suffix {path.suffix!r}; expected .csv, .tsv or .parquet")


def _signal_columns(frame: pd.DataFrame, path: Path, *, exclude: set, columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        missing = [c for c in columns if c not in frame]
        if missing:
            raise InputError(f"{path}: signal column(s) {missing} not found; expected columns of the table")
        bad = [c for c in columns if not _is_signal(frame[c])]
        if bad:
            raise InputError(f"{path}: column(s) {bad} are not numeric or boolean; expected numeric signals")
        return list(columns)
    return [c for c in frame.columns if c not in exclude and _is_signal(frame[c])]


def _is_signal(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _kinds(
    frame: pd.DataFrame, path: Path, signals: list[str], actions: Sequence[str] | None, events: Sequence[str] | None
) -> list[str]:
    for name, given in (("actions", actions), ("events", events)):
        missing = [c for c in (given or []) if c not in signals]
        if missing:
            raise InputError(
                f"{path}: {name} column(s) {missing} are not signal columns; expected some of {signals[:10]}"
            )
    action_set = set(actions) if actions is not None else {c for c in signals if c.startswith(ACTION_PREFIXES)}
    event_set = set(events) if events is not None else {c for c in signals if pd.api.types.is_bool_dtype(frame[c])}
    return ["action" if c in action_set else "event" if c in event_set else "state" for c in signals]


def _channel(column: str, kind: str) -> str:
    if kind == "action":
        for prefix in ACTION_PREFIXES:
            if column.startswith(prefix) and len(column) > len(prefix):
                return column[len(prefix) :]
    return column


def _seconds(column: pd.Series, unit: str, path: Path, key: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(column):
        ns = column.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        return np.where(column.isna().to_numpy(), np.nan, ns * 1e-9)
    values = pd.to_numeric(column, errors="coerce")
    text = column.notna() & values.isna()
    if text.any():
        raise InputError(
            f"{path}: column {key!r} holds non-numeric time(s) such as {column[text].iloc[0]!r}; expected numbers"
        )
    return values.to_numpy(dtype=np.float64) * TIME_UNITS[unit]
