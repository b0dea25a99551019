"""LeRobot datasets (v2.x: one Parquet file per episode; v3.0: several episodes per file) -> frames x channels.

``meta/`` and the Parquet files under ``data/`` are read with pyarrow; channel names come from
``meta/info.json`` ``features.<column>.names``. Camera videos (features of dtype ``video``) are
decoded only for the ``cameras`` asked for (PyAV, :mod:`crl_pipe.io._video`), aligned to the table's
timestamps and stored, downscaled, in ``obsm`` (:mod:`crl_pipe.io._camera`). Video layouts:

* v2.x: one file per episode and camera,
  ``videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4`` (``meta/info.json``
  ``video_path``); frame times are the table's timestamps.
* v3.0: several episodes per file, ``videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4``;
  ``meta/episodes`` gives each episode's ``videos/{video_key}/chunk_index``, ``file_index`` and
  ``from_timestamp`` (where the episode starts in the file): frame times are ``from_timestamp`` plus
  the table's timestamps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._constants import FRAME_SIZE
from .._errors import InputError
from ._camera import add_frames, camera_name
from ._frames import frames_to_anndata, require_path
from ._video import TOLERANCE_S, align, check_frame_size, decode_video, encode_video

#: Per-frame bookkeeping columns of every LeRobot dataset; they become ``obs``, never channels.
_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_NOT_NUMERIC = {"video", "image", "string", "str"}
_V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V2_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_V3_EPISODES = "meta/episodes/chunk-000/file-000.parquet"
_STATE = "observation.state"
_ACTION = "action"


def read_lerobot(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
    frame_size: int = FRAME_SIZE,
    tolerance_s: float = TOLERANCE_S,
) -> ad.AnnData:
    """Read a local LeRobot dataset (v2.0, v2.1 or v3.0) into the canonical robot AnnData.

    Parameters
    ----------
    path
        The dataset root (the folder holding ``meta/info.json`` and ``data/``).
    columns
        Feature columns to keep (default: every numeric feature of ``meta/info.json`` except the
        bookkeeping columns ``timestamp``, ``frame_index``, ``episode_index``, ``index``,
        ``task_index``).
    cameras
        Video features to decode, by key (``observation.images.front``) or short name (``front``);
        default none: videos are not read. Each lands in ``obsm["frames.<name>"]``.
    frame_size
        Edge of the square frames the videos are downscaled to (pixels; aspect not kept).
    tolerance_s
        Largest gap between a table timestamp and the time of its video frame (s).

    Returns
    -------
    AnnData, one row per frame (see :mod:`crl_pipe.io._frames`). A vector column is split into one
    channel per element, named from ``features.<column>.names`` (else ``col_0``, ``col_1`` ...).
    Channels of ``observation.state`` keep the bare name (``kLeftElbow``: kind ``state``), the
    other columns are prefixed with the column (``action.kLeftElbow``: kind ``action``;
    ``observation.velocity.kLeftElbow``: kind ``state``; anything else, such as ``next.done`` or
    ``next.reward``: ``other``). ``obs`` holds ``episode`` (the episode index as
    text), ``frame`` (``frame_index``), ``timestamp`` (seconds from the episode start) and, when
    the tasks table is present, ``task``.

    Raises
    ------
    InputError
        Missing ``meta/info.json``, episode table or data file; an unsupported version; a column
        missing from a data file; an episode whose frame count differs from its ``length``;
        missing or non-increasing timestamps; an episode with a single frame. With ``cameras``: a
        camera the dataset does not have, a video that is missing, undecodable or shorter than its
        table, or table timestamps with no video frame within ``tolerance_s``.
    """
    root = require_path(path, "LeRobot dataset folder")
    info = _read_json(root / "meta" / "info.json")
    version = str(info.get("codebase_version", ""))
    features = info.get("features")
    if not isinstance(features, dict):
        raise InputError(f"{root / 'meta' / 'info.json'}: key 'features' missing; expected the feature table")
    keep = _pick_columns(features, columns, root)
    videos = _video_keys(features, cameras or (), root)
    if videos:
        frame_size = check_frame_size(frame_size, f"{root}: cameras")
    if version.startswith("v2"):
        episodes, files = _layout_v2(root, info)
    elif version.startswith("v3"):
        episodes, files = _layout_v3(root, info)
    else:
        raise InputError(f"{root / 'meta' / 'info.json'}: codebase_version {version!r}; expected v2.0, v2.1 or v3.0")
    table = _read_frames(files, [*keep, *_BOOKKEEPING])
    table = _only_listed_episodes(table, episodes)
    _check_lengths(table, episodes, root)
    X, var = _channels(table, keep, features)
    obs = pd.DataFrame(
        {
            "episode": table["episode_index"].to_numpy().astype(str),
            "frame": table["frame_index"].to_numpy(),
            "timestamp": table["timestamp"].to_numpy().astype(np.float64),
        }
    )
    tasks = _read_tasks(root)
    if tasks is not None and "task_index" in table.column_names:
        obs["task"] = pd.Series(table["task_index"].to_numpy()).map(tasks).fillna("").to_numpy(dtype=str)
    adata = frames_to_anndata(X, obs, var, path=root)
    for name, key in videos.items():  # after the table's checks: no video is decoded for a broken table
        add_frames(
            adata, name, _camera_frames(root, info, version, adata.obs, key, frame_size, tolerance_s), source=key
        )
    return adata


def _video_keys(features: dict[str, Any], cameras: Sequence[str], root: Path) -> dict[str, str]:
    """Camera short name -> video feature key, for the cameras asked for."""
    if isinstance(cameras, str):
        cameras = [cameras]
    videos = [k for k, f in features.items() if str(f.get("dtype")) == "video"]
    out: dict[str, str] = {}
    for camera in cameras:
        key = camera if camera in features else f"observation.images.{camera}"
        if key not in videos:
            dtype = features.get(key, {}).get("dtype")
            found = f"stored as {dtype!r}" if dtype else "not found"
            raise InputError(
                f"{root / 'meta' / 'info.json'}: camera {camera!r} {found}; expected one of the video features "
                f"{[camera_name(v) for v in videos] or 'none'}"
            )
        out[camera_name(key)] = key
    return out


def _camera_frames(
    root: Path, info: dict[str, Any], version: str, obs: pd.DataFrame, key: str, size: int, tolerance: float
) -> np.ndarray:
    """Frames of video feature ``key`` at every row of ``obs``, decoded once per video file."""
    episodes = obs["episode"].astype(int).to_numpy()
    files, offsets = _video_files(root, info, version, key, np.unique(episodes))
    wanted = obs["timestamp"].to_numpy(dtype=np.float64) + np.array([offsets[e] for e in episodes])
    labels = ("episode " + obs["episode"] + " frame " + obs["frame"].astype(str)).to_numpy()
    where = pd.Series([files[e] for e in episodes])
    out = None
    camera = camera_name(key)
    for file, rows in where.groupby(where, sort=False).groups.items():
        rows = np.asarray(rows)
        times, frames = decode_video(file, camera, size)
        index = align(times, wanted[rows], tolerance=tolerance, path=file, camera=camera, labels=labels[rows])
        if out is None:
            out = np.empty((len(obs), *frames.shape[1:]), dtype=np.uint8)
        out[rows] = frames[index]
    return out


def _video_files(
    root: Path, info: dict[str, Any], version: str, key: str, episodes: np.ndarray
) -> tuple[dict[int, Path], dict[int, float]]:
    """Episode -> its video file of feature ``key``, and the time (s) at which the episode starts in it."""
    if not version.startswith("v3"):
        template, chunk = info.get("video_path") or _V2_VIDEO_PATH, int(info.get("chunks_size", 1000))
        files = {
            int(e): root / template.format(episode_chunk=int(e) // chunk, video_key=key, episode_index=int(e))
            for e in episodes
        }
        return files, dict.fromkeys(files, 0.0)
    prefix = f"videos/{key}/"
    wanted = ["episode_index", prefix + "chunk_index", prefix + "file_index", prefix + "from_timestamp"]
    frames = []
    for part in sorted((root / "meta" / "episodes").glob("chunk-*/*.parquet")):
        missing = [c for c in wanted if c not in pq.read_schema(part).names]
        if missing:
            raise InputError(
                f"{part}: camera {camera_name(key)!r}: missing column(s) {missing}; "
                "expected where each episode's video is"
            )
        frames.append(pq.read_table(part, columns=wanted).to_pandas())
    table = pd.concat(frames, ignore_index=True).set_index("episode_index")
    lost = [int(e) for e in episodes if e not in table.index]
    if lost:
        raise InputError(
            f"{root / 'meta' / 'episodes'}: camera {camera_name(key)!r}: episode(s) {lost[:5]} have no video entry; "
            "expected one per episode"
        )
    template = info.get("video_path") or _V3_VIDEO_PATH
    files, offsets = {}, {}
    for e in episodes:
        row = table.loc[int(e)]
        chunk, file = int(row[prefix + "chunk_index"]), int(row[prefix + "file_index"])
        files[int(e)] = root / template.format(video_key=key, chunk_index=chunk, file_index=file)
        offsets[int(e)] = float(row[prefix + "from_timestamp"])
    return files, offsets


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(
            f"{path}: file does not exist; expected the LeRobot metadata (is this a LeRobot dataset folder?)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise InputError(f"{path}: file does not exist; expected one JSON object per episode")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON lines ({err})") from None


def _pick_columns(features: dict[str, Any], columns: Sequence[str] | None, root: Path) -> list[str]:
    numeric = [c for c, f in features.items() if c not in _BOOKKEEPING and str(f.get("dtype")) not in _NOT_NUMERIC]
    if columns is None:
        return numeric
    missing = [c for c in columns if c not in numeric]
    if missing:
        raise InputError(
            f"{root / 'meta' / 'info.json'}: column(s) {missing} are not numeric features; expected some of {numeric}"
        )
    return list(columns)


def _layout_v2(root: Path, info: dict[str, Any]) -> tuple[pd.DataFrame, list[Path]]:
    """Episodes (index, length) from ``meta/episodes.jsonl``; one data file per episode."""
    records = _read_jsonl(root / "meta" / "episodes.jsonl")
    episodes = pd.DataFrame.from_records(records, columns=["episode_index", "length"])
    template = info.get("data_path", _V2_DATA_PATH)
    chunk = int(info.get("chunks_size", 1000))
    files = [
        root / template.format(episode_chunk=int(e) // chunk, episode_index=int(e)) for e in episodes["episode_index"]
    ]
    return episodes, files


def _layout_v3(root: Path, info: dict[str, Any]) -> tuple[pd.DataFrame, list[Path]]:
    """Episodes from ``meta/episodes/chunk-*/file-*.parquet``; the data files they point to."""
    parts = sorted((root / "meta" / "episodes").glob("chunk-*/*.parquet"))
    if not parts:
        raise InputError(f"{root / 'meta' / 'episodes'}: no Parquet files; expected the v3.0 episode table")
    wanted = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    frames = []
    for part in parts:
        names = pq.read_schema(part).names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise InputError(f"{part}: missing column(s) {missing}; expected {wanted}")
        frames.append(pq.read_table(part, columns=wanted).to_pandas())
    episodes = pd.concat(frames, ignore_index=True).sort_values("episode_index", kind="stable")
    template = info.get("data_path", _V3_DATA_PATH)
    pairs = episodes[["data/chunk_index", "data/file_index"]].drop_duplicates().itertuples(index=False)
    files = [root / template.format(chunk_index=int(c), file_index=int(f)) for c, f in pairs]
    return episodes[["episode_index", "length"]].reset_index(drop=True), files


def _read_frames(files: list[Path], columns: list[str]) -> pa.Table:
    tables = []
    for file in files:
        if not file.exists():
            raise InputError(f"{file}: data file does not exist; expected it from meta/info.json data_path")
        names = pq.read_schema(file).names
        missing = [c for c in columns if c not in names and c not in ("index", "task_index")]
        if missing:
            raise InputError(f"{file}: missing column(s) {missing}; expected the features of meta/info.json")
        tables.append(pq.read_table(file, columns=[c for c in columns if c in names]))
    return pa.concat_tables(tables, promote_options="permissive")


def _only_listed_episodes(table: pa.Table, episodes: pd.DataFrame) -> pa.Table:
    listed = pa.array(episodes["episode_index"].to_numpy(dtype=np.int64))
    mask = pc.is_in(table["episode_index"].cast(pa.int64()), value_set=listed)
    return table if pc.all(mask).as_py() else table.filter(mask)


def _check_lengths(table: pa.Table, episodes: pd.DataFrame, root: Path) -> None:
    found = pd.Series(table["episode_index"].to_numpy()).value_counts()
    expected = episodes.set_index("episode_index")["length"]
    got = found.reindex(expected.index, fill_value=0)
    bad = got[got.to_numpy() != expected.to_numpy()]
    if len(bad):
        e = bad.index[0]
        raise InputError(
            f"{root}: episode {e} has {int(bad.iloc[0])} frame(s) in data/ but length {int(expected[e])} in meta/; "
            "expected the episode table to match the data files"
        )


def _channels(table: pa.Table, columns: list[str], features: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    blocks, rows = [], []
    for column in columns:
        values = _as_matrix(table[column], column)
        names = _element_names(features[column], values.shape[1])
        kind = _kind(column)
        blocks.append(values)
        if names is None and values.shape[1] == 1:  # an unnamed scalar (next.done, next.reward): the column itself
            rows.append((column, kind, column, "", column))
            continue
        for name in names or [f"col_{i}" for i in range(values.shape[1])]:
            var_name = name if column == _STATE else f"{column}.{name}"
            rows.append((var_name, kind, column, "", name))
    var = pd.DataFrame(rows, columns=["name", "kind", "source", "field", "channel"]).set_index("name")
    X = np.hstack(blocks) if blocks else np.zeros((table.num_rows, 0))
    return X, var.rename_axis(None)


def _as_matrix(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """A scalar or fixed-length list column as a frames x elements float64 matrix."""
    array = column.combine_chunks()
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise InputError(f"column {name!r}: vectors of different lengths; expected one length per frame")
        width = int(lengths[0]) if len(lengths) else 0
        flat = pc.list_flatten(array).cast(pa.float64()).to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), width)
    return array.cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, 1)


def _element_names(feature: dict[str, Any], width: int) -> list[str] | None:
    """``names`` as ``width`` strings, else None (LeRobot writes a list, a nested list or {"motors": [...]})."""
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == 1 and isinstance(names[0], list):
        names = names[0]
    if isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names):
        return [str(n) for n in names]
    return None


def _kind(column: str) -> str:
    # next.done / next.success / next.reward are episode bookkeeping, not interventions: "other"
    if column == _ACTION or column.startswith(_ACTION + "."):
        return "action"
    if column.startswith("observation."):
        return "state"
    return "other"


def _read_tasks(root: Path) -> dict[int, str] | None:
    """task_index -> task text, from ``meta/tasks.jsonl`` (v2) or ``meta/tasks.parquet`` (v3)."""
    jsonl, parquet = root / "meta" / "tasks.jsonl", root / "meta" / "tasks.parquet"
    if jsonl.exists():
        return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(jsonl)}
    if parquet.exists():
        frame = pd.read_parquet(parquet)
        text = frame["task"] if "task" in frame else frame.index.to_series()
        return dict(zip(frame["task_index"].astype(int), text.astype(str), strict=True))
    return None


def write_lerobot(adata: ad.AnnData, root: str | os.PathLike, *, fps: float, task: str = "") -> Path:
    """Write canonical robot logs as a LeRobot v2.1 dataset (state and action channels; no videos).

    Parameters
    ----------
    adata
        Robot logs in the canonical layout (rows in time order per episode).
    root
        The dataset folder to create; it must not exist yet.
    fps
        Frame rate recorded in ``meta/info.json`` (Hz).
    task
        Task text of every episode.

    Returns
    -------
    ``root``. Channels of kind ``state`` become ``observation.state``, those of kind ``action``
    become ``action``, each named by ``var["channel"]``; episodes are numbered 0.. in order of
    appearance; ``timestamp`` is taken from ``obs``.
    """
    root = Path(root)
    if root.exists():
        raise InputError(f"{root}: already exists; expected a new folder for the LeRobot dataset")
    episode_index, lengths, blocks = _episodes_and_blocks(adata)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta").mkdir()
    start = np.r_[0, np.cumsum(lengths)[:-1]]
    for e in range(len(lengths)):
        table = _episode_table(adata, np.flatnonzero(episode_index == e), e, int(start[e]), blocks)
        pq.write_table(table, root / _V2_DATA_PATH.format(episode_chunk=e // 1000, episode_index=e))
    _write_meta_v21(root, adata, blocks, lengths, fps, task)
    return root


def _episodes_and_blocks(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, dict[str, pd.Index]]:
    """Episode number of each row (0.. in order of appearance), frames per episode, and the state and
    action channels (the LeRobot columns that have any)."""
    episode_index, _ = pd.factorize(adata.obs["episode"])
    blocks = {col: adata.var_names[adata.var["kind"] == kind] for col, kind in ((_STATE, "state"), (_ACTION, "action"))}
    return episode_index, np.bincount(episode_index), {col: names for col, names in blocks.items() if len(names)}


def _episode_table(adata: ad.AnnData, rows: np.ndarray, e: int, start: int, blocks: dict[str, pd.Index]) -> pa.Table:
    """The Parquet rows of episode ``e`` (``start``: its first global frame index)."""
    n = len(rows)
    columns = {col: _fixed_lists(np.asarray(adata[rows, names].X, dtype=np.float32)) for col, names in blocks.items()}
    columns |= {
        "timestamp": pa.array(adata.obs["timestamp"].to_numpy()[rows], pa.float32()),
        "frame_index": pa.array(np.arange(n), pa.int64()),
        "episode_index": pa.array(np.full(n, e), pa.int64()),
        "index": pa.array(start + np.arange(n), pa.int64()),
        "task_index": pa.array(np.zeros(n, dtype=np.int64)),
    }
    return pa.table(columns)


def write_lerobot_v3(
    adata: ad.AnnData,
    root: str | os.PathLike,
    *,
    fps: float,
    task: str = "",
    videos: Mapping[str, np.ndarray] | None = None,
    episodes_per_file: int | None = None,
) -> Path:
    """Write canonical robot logs as a LeRobot v3.0 dataset, with camera videos.

    Parameters
    ----------
    adata
        Robot logs in the canonical layout (rows in time order per episode, ``timestamp`` = frame / ``fps``).
    root
        The dataset folder to create; it must not exist yet.
    fps
        Frame rate of the logs and videos (Hz).
    task
        Task text of every episode.
    videos
        Video feature key (``observation.images.front``) -> frames (n_obs x height x width x 3 uint8 RGB,
        even sides), encoded with PyAV (:func:`crl_pipe.io._video.encode_video`).
    episodes_per_file
        Episodes per data and video file (default: all in one file, as LeRobot does below its size limit).

    Returns
    -------
    ``root``, laid out as LeRobot v3.0 writes it: ``data/chunk-000/file-NNN.parquet``,
    ``videos/<key>/chunk-000/file-NNN.mp4`` (the episodes of a file one after another; each episode's
    ``from_timestamp`` and ``to_timestamp`` in ``meta/episodes``), ``meta/info.json``,
    ``meta/episodes/chunk-000/file-000.parquet`` and ``meta/tasks.parquet``. Channels as
    :func:`write_lerobot`.
    """
    root = Path(root)
    if root.exists():
        raise InputError(f"{root}: already exists; expected a new folder for the LeRobot dataset")
    videos = dict(videos or {})
    episode_index, lengths, blocks = _episodes_and_blocks(adata)
    per_file = int(episodes_per_file or len(lengths))
    start = np.r_[0, np.cumsum(lengths)[:-1]]
    meta: list[dict[str, Any]] = []
    for f, first in enumerate(range(0, len(lengths), per_file)):
        group = range(first, min(first + per_file, len(lengths)))
        rows = [np.flatnonzero(episode_index == e) for e in group]
        tables = [_episode_table(adata, r, e, int(start[e]), blocks) for e, r in zip(group, rows, strict=True)]
        path = root / _V3_DATA_PATH.format(chunk_index=0, file_index=f)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), path)
        for key, frames in videos.items():
            encode_video(
                frames[np.concatenate(rows)],
                root / _V3_VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=f),
                fps,
            )
        offset = 0.0
        for e, r in zip(group, rows, strict=True):
            record: dict[str, Any] = {
                "episode_index": e, "tasks": [task], "length": len(r), "data/chunk_index": 0, "data/file_index": f,
                "dataset_from_index": int(start[e]), "dataset_to_index": int(start[e] + len(r)),
            }  # fmt: skip
            for key in videos:
                record |= {
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": f,
                    f"videos/{key}/from_timestamp": offset, f"videos/{key}/to_timestamp": offset + len(r) / fps,
                }  # fmt: skip
            offset += len(r) / fps
            meta.append(record)
    (root / _V3_EPISODES).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(meta), root / _V3_EPISODES)
    pq.write_table(pa.table({"task_index": pa.array([0], pa.int64()), "task": [task]}), root / "meta" / "tasks.parquet")
    features = _features(adata, blocks)
    for key, frames in videos.items():
        _, height, width, _ = frames.shape
        features[key] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.fps": fps, "video.channels": 3,
                     "video.pix_fmt": "yuv420p", "has_audio": False},
        }  # fmt: skip
    info = {
        "codebase_version": "v3.0",
        "total_episodes": int(len(lengths)),
        "total_frames": int(lengths.sum()),
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "data_path": _V3_DATA_PATH,
        "video_path": _V3_VIDEO_PATH if videos else None,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


def _fixed_lists(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), values.shape[1])


def _features(adata: ad.AnnData, blocks: dict[str, pd.Index]) -> dict[str, Any]:
    """``meta/info.json`` features of the state and action columns and the bookkeeping columns."""
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    features = {
        col: {"dtype": "float32", "shape": [len(names)], "names": [str(adata.var.at[n, "channel"]) for n in names]}
        for col, names in blocks.items()
    }
    features |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    return features | {k: scalar for k in ("frame_index", "episode_index", "index", "task_index")}


def _write_meta_v21(root: Path, adata: ad.AnnData, blocks, lengths: np.ndarray, fps: float, task: str) -> None:
    features = _features(adata, blocks)
    info = {
        "codebase_version": "v2.1",
        "total_episodes": int(len(lengths)),
        "total_frames": int(lengths.sum()),
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "data_path": _V2_DATA_PATH,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    episodes = [{"episode_index": e, "tasks": [task], "length": int(n)} for e, n in enumerate(lengths)]
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in episodes))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": task}) + "\n")
