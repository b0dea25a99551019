"""Read a robot log in any supported layout (LeRobot, rosbag/MCAP, plain table) into the frame
layout of :mod:`crl_pipe.io._frames`, and the adapters that let :func:`crl_pipe.io.read_screen` read them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from .._constants import FRAME_SIZE
from .._errors import InputError
from ._lerobot import read_lerobot
from ._rosbag import read_rosbag
from ._table import read_robot_table
from ._video import TOLERANCE_S


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
    AnnData in the frame layout of :mod:`crl_pipe.io._frames`.
    """
    reader = robot_readers().get(format)
    if reader is None:
        raise InputError(f"{path}: unknown robot log format {format!r}; expected one of {sorted(robot_readers())}")
    return reader(path, **options)


def robot_readers() -> dict[str, Callable[..., ad.AnnData]]:
    """Robot format name -> public reader."""
    return {"lerobot": read_lerobot, "rosbag": read_rosbag, "table": read_robot_table}


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
