"""Rosbags (ROS1 ``.bag``, ROS2 folders with ``.db3``/``.mcap``, plain ``.mcap``) -> frames x channels.

Read with the ``rosbags`` library (imported only when a rosbag is read). Topics publish at
different rates; they are put on one clock by this rule:

1. The clock is the fastest topic's message times (the topic with the most messages), or a
   regular grid of ``rate`` Hz when ``rate`` is given.
2. A frame starts only once every topic has published: frames before the latest first message
   of all topics are dropped.
3. Each topic's value at a frame is its last message at or before the frame's time (last value
   carried forward; no interpolation, no look-ahead, so no frame sees a later message).

Camera topics (``cameras``: ``sensor_msgs/Image``, raw, or ``sensor_msgs/CompressedImage``, JPEG or
PNG) take part in the same rule, as topics whose value is an image: they count for the start and
the fastest clock, and each frame holds the camera's last image at or before it. Images are
decoded and downscaled as they are read (PyAV, :mod:`crl_pipe.io._video`) and stored in
``obsm["frames.<camera>"]``, the camera named after its topic (``/cam/image_raw`` -> ``cam.image_raw``).
A camera that stops publishing while the log goes on (its last image more than
:data:`STALE_PERIODS` of its own median image interval before a frame, at the end or in a gap) is
an error, not a frozen picture: the camera's counterpart of a video shorter than its table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._constants import FRAME_SIZE
from .._errors import InputError
from ._camera import add_frames, camera_name
from ._frames import KINDS, frames_to_anndata, require_path
from ._video import check_frame_size, compressed_image, raw_image

_CLOCKS = ("log", "header")
#: Largest age of a camera's held image at a frame, in its median image intervals.
STALE_PERIODS = 3.0
_SUFFIXES = (".bag", ".mcap", ".db3")


def read_rosbag(
    path: str | os.PathLike,
    *,
    topics: Mapping[str, Sequence[str]],
    kinds: Mapping[str, str] | None = None,
    rate: float | None = None,
    clock: str = "log",
    episode: str | None = None,
    cameras: Sequence[str] | None = None,
    frame_size: int = FRAME_SIZE,
) -> ad.AnnData:
    """Read chosen topics and fields of rosbag recordings into the canonical robot AnnData.

    Parameters
    ----------
    path
        One recording (a ROS1 ``.bag``, a ROS2 bag folder with ``metadata.yaml``, a ``.db3`` or a
        ``.mcap`` file), or a folder of recordings: each recording is one episode.
    topics
        Topic -> message fields to keep, e.g. ``{"/joint_states": ["position", "velocity"]}``. A
        field is an attribute path (``"pose.position"``); numbers give one channel, arrays one
        channel per element (named from the message's ``name`` list, as in ``JointState``), nested
        messages one channel per numeric leaf.
    kinds
        Topic -> channel kind (``state``, ``action``, ``event``, ``other``); default ``state``.
    rate
        Frame rate of the common clock, in Hz; default: the message times of the fastest topic.
        See this module's docstring for the alignment rule.
    clock
        ``"log"``: the time each message was recorded; ``"header"``: ``header.stamp`` of the message.
    episode
        Episode name of a single recording (default: the file or folder name without suffix).
    cameras
        Image topics (``sensor_msgs/Image`` or ``CompressedImage``) to decode into
        ``obsm["frames.<camera>"]``, aligned by the rule of this module's docstring; default none.
    frame_size
        Edge of the square frames the images are downscaled to (pixels; aspect not kept).

    Returns
    -------
    AnnData, one row per frame (see :mod:`crl_pipe.io._frames`). Channel ``<topic>.<field>.<element>``
    has ``source`` = topic, ``field`` = field, ``channel`` = element name (the joint), so that a
    command topic pairs with the state topic of the same joints. ``timestamp`` is in seconds from
    the episode's first frame; ``obs["time_ns"]`` keeps the absolute clock time.
    """
    root = require_path(path, "rosbag")
    _check_options(root, topics, kinds, rate, clock)
    cameras = [cameras] if isinstance(cameras, str) else list(cameras or [])
    if cameras:
        frame_size = check_frame_size(frame_size, f"{root}: cameras")
    recordings = _recordings(root)
    if episode is not None and len(recordings) != 1:
        raise InputError(f"{root}: option 'episode' names a single recording; found {len(recordings)}")
    blocks = [
        _read_recording(rec, episode or name, topics, dict(kinds or {}), rate, clock, cameras, frame_size)
        for name, rec in recordings
    ]
    var = blocks[0][2]
    for (_, _, other, _), (name, _) in zip(blocks[1:], recordings[1:], strict=True):
        if not other.index.equals(var.index):
            raise InputError(
                f"{root}: recording {name} has channels {list(other.index[:5])} ...; expected {list(var.index[:5])} ..."
            )
    X = np.vstack([b[0] for b in blocks])
    obs = pd.concat([b[1] for b in blocks], ignore_index=True)
    adata = frames_to_anndata(X, obs, var, path=root)
    for topic in cameras:
        add_frames(adata, camera_name(topic), np.concatenate([b[3][topic] for b in blocks]), source=topic)
    return adata


def _check_options(root: Path, topics: Mapping, kinds: Mapping | None, rate: float | None, clock: str) -> None:
    if not topics or not all(isinstance(f, list | tuple) and f for f in topics.values()):
        raise InputError(f"{root}: option 'topics' must map each topic to a non-empty list of fields")
    if clock not in _CLOCKS:
        raise InputError(f"{root}: clock {clock!r} not understood; expected one of {list(_CLOCKS)}")
    if rate is not None and not rate > 0:
        raise InputError(f"{root}: rate {rate!r}; expected a positive frame rate in Hz")
    for topic, kind in (kinds or {}).items():
        if topic not in topics:
            raise InputError(
                f"{root}: kinds names topic {topic!r} that is not in 'topics'; expected one of {list(topics)}"
            )
        if kind not in KINDS:
            raise InputError(f"{root}: kind {kind!r} of topic {topic!r}; expected one of {list(KINDS)}")


def _is_recording(path: Path) -> bool:
    return path.suffix in _SUFFIXES if path.is_file() else (path / "metadata.yaml").exists()


def _recordings(root: Path) -> list[tuple[str, Path]]:
    """(episode name, recording) pairs: ``root`` itself, or the recordings inside the folder ``root``."""
    if _is_recording(root):
        return [(root.name.split(".")[0], root)]
    if root.is_dir():
        found = sorted(p for p in root.iterdir() if _is_recording(p))
        if found:
            return [(p.name.split(".")[0], p) for p in found]
    raise InputError(
        f"{root}: not a rosbag; expected a .bag, .db3 or .mcap file, a ROS2 bag folder, or a folder of them"
    )


def _import_anyreader():
    try:
        from rosbags.highlevel import AnyReader, AnyReaderError  # deferred: rosbags loads only to read ROS logs
        from rosbags.typesys import Stores, get_typestore  # deferred: rosbags loads only to read ROS logs
    except ImportError:
        raise ImportError("reading rosbags needs the 'rosbags' package: pip install rosbags") from None
    return AnyReader, AnyReaderError, get_typestore(Stores.LATEST)


@dataclass
class _Stream:
    """Messages of one topic: times (ns) and one row of channel values per message."""

    topic: str
    fields: Sequence[str]
    times: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    layout: list[tuple[str, str, str, list[str] | None]] | None = None  # (var name, field, channel, joint names)

    def add(self, stamp: int, msg: Any, where: Path) -> None:
        values = []
        if self.layout is None:
            self.layout = []
            for f in self.fields:
                joints = _joint_names(msg, f)
                names = joints or _extract(msg, f, self.topic, where)[0]
                self.layout += [(_var_name(self.topic, f, n), f, n if joints else _join(f, n), joints) for n in names]
        for f in self.fields:
            _, vals = _extract(msg, f, self.topic, where, order=_joint_names(msg, f), expected=self._joints(f))
            values.append(vals)
        row = np.concatenate(values)
        if len(row) != len(self.layout):
            raise InputError(
                f"{where}: topic {self.topic!r} changes its number of values ({len(self.layout)} -> {len(row)}); "
                "expected the same fields and array lengths in every message"
            )
        self.times.append(stamp)
        self.rows.append(row)

    def _joints(self, f: str) -> list[str] | None:
        return next((j for _, g, _, j in self.layout or [] if g == f), None)


#: Message types a camera topic may carry.
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class _Images:
    """Images of one camera topic: times (ns) and one downscaled RGB frame per message."""

    topic: str
    size: int
    msgtype: str
    times: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, stamp: int, msg: Any, where: Path) -> None:
        decode = compressed_image if self.msgtype.endswith("CompressedImage") else raw_image
        self.rows.append(decode(msg, self.size, where=f"{where}: camera topic {self.topic!r}"))
        self.times.append(stamp)


def _read_recording(
    rec: Path,
    episode: str,
    topics: Mapping[str, Sequence[str]],
    kinds: dict[str, str],
    rate: float | None,
    clock: str,
    cameras: Sequence[str] = (),
    frame_size: int = 0,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    AnyReader, AnyReaderError, typestore = _import_anyreader()
    streams: dict[str, _Stream | _Images] = {t: _Stream(t, list(f)) for t, f in topics.items()}
    try:
        with AnyReader([rec], default_typestore=typestore) as reader:
            present = {c.topic for c in reader.connections}
            missing = [t for t in topics if t not in present]
            if missing:
                raise InputError(f"{rec}: topic(s) {missing} not found; expected some of {sorted(present)}")
            streams |= _camera_streams(rec, reader.connections, cameras, frame_size)
            conns = [c for c in reader.connections if c.topic in streams]
            for conn, log_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = log_ns if clock == "log" else _header_ns(msg, conn.topic, rec)
                streams[conn.topic].add(stamp, msg, rec)
    except AnyReaderError as err:
        raise InputError(f"{rec}: not a readable rosbag ({err})") from None
    return _align(streams, kinds, rate, episode, rec)


def _camera_streams(rec: Path, connections, cameras: Sequence[str], size: int) -> dict[str, _Images]:
    """An image stream per camera topic, once each is found with an image message type."""
    types = {c.topic: c.msgtype for c in connections}
    images = sorted(t for t, m in types.items() if m in _IMAGE_TYPES)
    out = {}
    for topic in cameras:
        if topic not in types:
            raise InputError(f"{rec}: camera topic {topic!r} not found; expected one of the image topics {images}")
        if types[topic] not in _IMAGE_TYPES:
            raise InputError(
                f"{rec}: camera topic {topic!r} carries {types[topic]}; expected one of {list(_IMAGE_TYPES)}"
            )
        out[topic] = _Images(topic, size, types[topic])
    return out


def _align(
    streams: dict[str, _Stream | _Images], kinds: dict[str, str], rate: float | None, episode: str, rec: Path
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Put every topic on one clock (the rule of the module docstring); camera frames alongside."""
    times = {}
    for topic, s in streams.items():
        if not s.times:
            raise InputError(f"{rec}: topic {topic!r} has no messages; expected at least one")
        t = np.asarray(s.times, dtype=np.int64)
        if (np.diff(t) < 0).any():
            raise InputError(f"{rec}: topic {topic!r} has message times that go back; expected non-decreasing times")
        times[topic] = t
    start = max(int(t[0]) for t in times.values())
    if rate is None:
        fastest = max(times, key=lambda k: len(times[k]))
        grid = times[fastest][times[fastest] >= start]
    else:
        stop = max(int(t[-1]) for t in times.values())
        grid = start + np.round(np.arange(0, (stop - start) * 1e-9 * rate + 1e-9) * 1e9 / rate).astype(np.int64)
    if len(grid) < 2:
        raise InputError(
            f"{rec}: the topics overlap in time for {len(grid)} frame(s); "
            "expected >= 2 frames once every topic has published"
        )
    at = {t: np.searchsorted(times[t], grid, side="right") - 1 for t in streams}  # last message at or before
    numeric = {t: s for t, s in streams.items() if isinstance(s, _Stream)}
    blocks = [np.vstack(s.rows)[at[t]] for t, s in numeric.items()]
    frames = {}
    for t, s in streams.items():
        if isinstance(s, _Images):
            _check_fresh(rec, t, times[t], grid, at[t])
            frames[t] = np.stack(s.rows)[at[t]]
    var = pd.DataFrame(
        [
            (name, kinds.get(t, "state"), t, f, channel)
            for t, s in numeric.items()
            for name, f, channel, _ in s.layout or []
        ],
        columns=["name", "kind", "source", "field", "channel"],
    ).set_index("name")
    obs = pd.DataFrame(
        {
            "episode": episode,
            "frame": np.arange(len(grid)),
            "timestamp": (grid - grid[0]) * 1e-9 if len(grid) else [],
            "time_ns": grid,
        }
    )
    return np.hstack(blocks), obs, var.rename_axis(None), frames


def _check_fresh(rec: Path, topic: str, times: np.ndarray, grid: np.ndarray, held: np.ndarray) -> None:
    """Raise :class:`InputError` where a camera's image held at a frame is older than :data:`STALE_PERIODS`
    of its median image interval (the camera stopped, or paused, while the other topics went on)."""
    period = float(np.median(np.diff(times))) if len(times) > 1 else float(grid[-1] - grid[0])
    age = grid - times[held]
    stale = np.flatnonzero(age > STALE_PERIODS * max(period, 1.0))
    if len(stale):
        first = int(stale[0])
        raise InputError(
            f"{rec}: camera topic {topic!r}: no new image for {age[first] * 1e-9:.3f} s at frame {first} "
            f"({(grid[first] - grid[0]) * 1e-9:.3f} s; {len(stale)} frame(s) affected, last image "
            f"{(times[-1] - grid[0]) * 1e-9:.3f} s, log end {(grid[-1] - grid[0]) * 1e-9:.3f} s); expected an image "
            f"at least every {STALE_PERIODS:g} x its median interval ({period * 1e-9:.3f} s) until the log ends"
        )


def _header_ns(msg: Any, topic: str, rec: Path) -> int:
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        raise InputError(
            f"{rec}: topic {topic!r} has no header.stamp; expected it with clock='header' (or use clock='log')"
        )
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _get(msg: Any, path: str, topic: str, rec: Path) -> Any:
    value = msg
    for part in path.split("."):
        if not hasattr(value, part):
            fields = sorted(getattr(value, "__dataclass_fields__", {}))
            raise InputError(f"{rec}: topic {topic!r} has no field {path!r}; expected one of {fields}")
        value = getattr(value, part)
    return value


def _joint_names(msg: Any, path: str) -> list[str] | None:
    """The message's ``name`` list when ``path`` is a top-level array of the same length (``JointState``)."""
    names = getattr(msg, "name", None)
    value = getattr(msg, path, None) if "." not in path else None
    if isinstance(names, list) and value is not None and np.ndim(value) == 1 and len(names) == len(value):
        return [str(n) for n in names]
    return None


def _extract(
    msg: Any, path: str, topic: str, rec: Path, *, order: list[str] | None = None, expected: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Element names and float values of one field (reordered to ``expected`` joint names)."""
    value = _get(msg, path, topic, rec)
    if order is not None:
        values = np.asarray(value, dtype=np.float64)
        if expected is not None and order != expected:
            index = {n: i for i, n in enumerate(order)}
            lost = [n for n in expected if n not in index]
            if lost:
                raise InputError(
                    f"{rec}: topic {topic!r} field {path!r} lost joint(s) {lost[:5]}; "
                    "expected the same joints throughout"
                )
            values = values[[index[n] for n in expected]]
        return expected or order, values
    leaves = _leaves(value, "")
    if not leaves:
        raise InputError(
            f"{rec}: topic {topic!r} field {path!r} holds no numbers; "
            "expected a number, an array or a message of numbers"
        )
    return [n for n, _ in leaves], np.array([v for _, v in leaves], dtype=np.float64)


def _leaves(value: Any, prefix: str) -> list[tuple[str, float]]:
    """Numeric leaves of a value: a number, an array of numbers, or a message (recursively)."""
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return [(prefix, float(value))]
    if isinstance(value, np.ndarray | list | tuple):
        array = np.asarray(value)
        if array.dtype.kind in "biuf" and array.ndim == 1:
            return [(_join(prefix, str(i)), float(v)) for i, v in enumerate(array)]
        return []
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is None:
        return []
    return [leaf for name in fields if name != "header" for leaf in _leaves(getattr(value, name), _join(prefix, name))]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _var_name(topic: str, path: str, element: str) -> str:
    return _join(topic, path, element)
