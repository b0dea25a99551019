"""Robot logs -> the canonical ``ingested.h5ad`` layout: one row per frame, one column per channel.

Every robot layout (LeRobot, rosbag, plain tables) ends in :func:`frames_to_anndata`, which checks
the clock and builds the same AnnData:

- ``X``: frames x channels, dense float32 (robot logs have tens of channels, not thousands);
- ``obs``: ``episode`` (str), ``frame`` (int, 0-based position in the episode), ``timestamp``
  (float, seconds); index ``"ep{episode}_f{frame}"``, unique; rows in time order per episode;
- ``var``: index = channel names; ``kind`` in {state, action, event, other}; ``source`` (the
  column or topic a channel came from); ``field`` (the message field, ``""`` where none);
  ``channel`` (the bare name, e.g. the joint: a state and the action that commands it share it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from ._video import FRAME_SIZE, TOLERANCE_S

#: Allowed values of ``var["kind"]``.
KINDS = ("state", "action", "event", "other")
#: Columns every robot ``obs`` holds.
FRAME_COLUMNS = ("episode", "frame", "timestamp")
_MAX_SHOWN = 5


def read_robot(path: str | os.PathLike, *, format: str, **options: Any) -> ad.AnnData:
    """Read robot logs in any supported layout into the canonical frames x channels AnnData.

    Parameters
    ----------
    path
        The log: a LeRobot dataset folder, a rosbag (ROS1 ``.bag``, ROS2 folder, ``.db3`` or
        ``.mcap``) or a CSV/Parquet table. Opened read-only, never modified.
    format
        ``"lerobot"`` (:func:`read_lerobot`), ``"rosbag"`` (:func:`read_rosbag`) or ``"table"``
        (:func:`read_robot_table`).
    **options
        Options of that reader, e.g. ``topics`` for ``"rosbag"``.

    Returns
    -------
    AnnData as described in this module's docstring.
    """
    reader = robot_readers().get(format)
    if reader is None:
        raise InputError(f"{path}: unknown robot log format {format!r}; expected one of {sorted(robot_readers())}")
    return reader(path, **options)


def robot_readers() -> dict[str, Callable[..., ad.AnnData]]:
    """Robot format name -> public reader (imported here to keep optional dependencies lazy)."""
    from ._lerobot import read_lerobot
    from ._rosbag import read_rosbag
    from ._table import read_robot_table

    return {"lerobot": read_lerobot, "rosbag": read_rosbag, "table": read_robot_table}


def frames_to_anndata(X: np.ndarray, obs: pd.DataFrame, var: pd.DataFrame, *, path: str | os.PathLike) -> ad.AnnData:
    """Check a frames x channels block and wrap it in the canonical AnnData.

    Parameters
    ----------
    X
        Frames x channels values (any real dtype; stored as float32).
    obs
        One row per frame with ``episode``, ``frame`` and ``timestamp`` (seconds), in time order
        within each episode; extra columns are kept.
    var
        One row per channel, index = channel name, with ``kind`` (and optionally ``source``,
        ``field``, ``channel``).
    path
        The input, named in error messages.
    """
    obs = obs.reset_index(drop=True).copy()
    obs["episode"] = obs["episode"].astype(str)
    obs["frame"] = obs["frame"].astype(np.int64)
    obs["timestamp"] = obs["timestamp"].astype(np.float64)
    check_clock(obs, path=path)
    var = _complete_var(var, path)
    X = np.asarray(X, dtype=np.float64)
    _check_values(X, var.index, path)
    obs.index = pd.Index(("ep" + obs["episode"] + "_f" + obs["frame"].astype(str)).to_numpy(), dtype=str)
    _check_unique(obs.index, path, "frame (episode, frame)")
    return ad.AnnData(X=X.astype(np.float32), obs=obs, var=var)


def check_clock(obs: pd.DataFrame, *, path: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless every episode has >= 2 frames with finite, increasing timestamps."""
    ts = obs["timestamp"]
    missing = ~np.isfinite(ts.to_numpy(dtype=np.float64))
    if missing.any():
        row = obs[missing].iloc[0]
        raise InputError(
            f"{path}: {int(missing.sum())} frame(s) without a timestamp (e.g. episode {row['episode']}, "
            f"frame {row['frame']}); expected a finite time in seconds on every frame"
        )
    step = ts.groupby(obs["episode"], sort=False).diff()
    back = step <= 0
    if back.any():
        row = obs[back.to_numpy()].iloc[0]
        raise InputError(
            f"{path}: timestamps are not increasing in episode {row['episode']} at frame {row['frame']} "
            f"(step {step[back].iloc[0]:g} s); expected strictly increasing time within each episode"
        )
    sizes = obs.groupby("episode", sort=False).size()
    short = sizes[sizes < 2]
    if len(short):
        shown = ", ".join(map(str, short.index[:_MAX_SHOWN]))
        raise InputError(f"{path}: episode(s) {shown} have a single frame; expected >= 2 frames per episode")


def _complete_var(var: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    var = var.copy()
    var.index = pd.Index(var.index.astype(str), dtype=str)
    _check_unique(var.index, path, "channel name")
    bad = sorted(set(var["kind"]) - set(KINDS))
    if bad:
        raise InputError(f"{path}: channel kind(s) {bad} not understood; expected one of {list(KINDS)}")
    for column in ("source", "field"):
        if column not in var:
            var[column] = ""
    if "channel" not in var:
        var["channel"] = var.index
    return var[
        ["kind", "source", "field", "channel", *[c for c in var if c not in {"kind", "source", "field", "channel"}]]
    ]


def _check_values(X: np.ndarray, channels: pd.Index, path: str | os.PathLike) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        shown = ", ".join(channels[cols[:_MAX_SHOWN]])
        raise InputError(f"{path}: {int(bad.sum())} NaN/Inf value(s) in channel(s) {shown}; expected finite values")


def _check_unique(index: pd.Index, path: str | os.PathLike, what: str) -> None:
    dup = index[index.duplicated()].unique()
    if len(dup):
        shown = ", ".join(map(str, dup[:_MAX_SHOWN]))
        raise InputError(f"{path}: {len(dup)} duplicated {what}(s) ({shown}); expected unique names")


def require_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path`, or an :class:`InputError` if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} does not exist")
    return path


# -- adapters for the screen reader registry (``crl_pipe.io.read_screen(path, format=...)``) -----------
def _no_counts_layer(path: Path, counts_layer: str | None) -> None:
    if counts_layer is not None:
        raise InputError(f"{path}: counts_layer={counts_layer!r} does not apply to robot logs; leave it unset")


def _lerobot_screen(
    path: Path,
    *,
    counts_layer: str | None,
    columns: list[str] | None = None,
    cameras: list[str] | None = None,
    frame_size: int = FRAME_SIZE,
    tolerance_s: float = TOLERANCE_S,
) -> ad.AnnData:
    from ._lerobot import read_lerobot

    _no_counts_layer(path, counts_layer)
    return read_lerobot(path, columns=columns, cameras=cameras, frame_size=frame_size, tolerance_s=tolerance_s)


def _rosbag_screen(
    path: Path,
    *,
    counts_layer: str | None,
    topics: dict[str, list[str]] | None = None,
    kinds: dict[str, str] | None = None,
    rate: float | None = None,
    clock: str = "log",
    cameras: list[str] | None = None,
    frame_size: int = FRAME_SIZE,
) -> ad.AnnData:
    from ._rosbag import read_rosbag

    _no_counts_layer(path, counts_layer)
    if not topics:
        raise InputError(f"{path}: format 'rosbag' needs option 'topics' (topic -> fields to keep)")
    return read_rosbag(path, topics=topics, kinds=kinds, rate=rate, clock=clock, cameras=cameras, frame_size=frame_size)


def _table_screen(
    path: Path,
    *,
    counts_layer: str | None,
    episode_key: str | None = "episode",
    time_key: str = "timestamp",
    time_unit: str = "s",
    columns: list[str] | None = None,
    actions: list[str] | None = None,
    events: list[str] | None = None,
) -> ad.AnnData:
    from ._table import read_robot_table

    _no_counts_layer(path, counts_layer)
    return read_robot_table(
        path,
        episode_key=episode_key,
        time_key=time_key,
        time_unit=time_unit,
        columns=columns,
        actions=actions,
        events=events,
    )


#: Registered in :data:`crl_pipe.io._screen._READERS` so that the ``ingest`` stage reads robot logs too.
SCREEN_ADAPTERS: dict[str, Callable[..., ad.AnnData]] = {
    "lerobot": _lerobot_screen,
    "rosbag": _rosbag_screen,
    "table": _table_screen,
}
