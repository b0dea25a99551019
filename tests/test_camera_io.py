"""Camera frames in: LeRobot videos (v2.1 and v3.0) and ROS image topics, decoded once with PyAV,
aligned to the table's clock, downscaled, and stored in ``obsm["frames.<camera>"]``; bad inputs.

The videos are written here with PyAV (the layouts LeRobot writes), the bags with rosbags and the
MCAP writer, all from frames whose grey level encodes their row, so a misaligned frame shows.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crl_pipe import InputError, pipeline
from crl_pipe.io import read_h5ad, read_lerobot, read_rosbag, read_screen
from crl_pipe.io._camera import camera_name, get_frames
from crl_pipe.io._frames import frames_to_anndata
from crl_pipe.io._lerobot import write_lerobot, write_lerobot_v3
from crl_pipe.io._video import encode_video

av = pytest.importorskip("av")

FPS = 10.0
SIZE = 32  # rendered edge (pixels); read back at 16 unless said otherwise


def _grey(row: int) -> int:
    """Grey level of frame ``row``: distinct for neighbouring rows, far from 0 and 255 (codec clipping)."""
    return 30 + (row * 23) % 190


def _frames(n: int, size: int = SIZE) -> np.ndarray:
    """Flat grey frames (level :func:`_grey` of the row) with a red top-left quadrant (RGB order check)."""
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = _grey(i)
    out[:, : size // 2, : size // 2] = (230, 20, 20)
    return out


def _logs(lengths=(12, 15, 9), offset: dict[int, float] | None = None):
    """Robot logs (one state and one action channel) with ``lengths`` frames per episode at ``FPS``."""
    rows = []
    for e, n in enumerate(lengths):
        for f in range(n):
            rows.append((str(e), f, f / FPS + (offset or {}).get(e, 0.0)))
    obs = pd.DataFrame(rows, columns=["episode", "frame", "timestamp"])
    X = np.column_stack([np.sin(np.arange(len(obs))), np.round(np.arange(len(obs)) / 5)])
    var = pd.DataFrame({"kind": ["state", "action"], "channel": ["j", "j"]}, index=["j", "action.j"])
    return frames_to_anndata(X, obs, var, path="<test>")


def _levels(frames: np.ndarray) -> np.ndarray:
    """Mean grey level of each frame outside its red quadrant."""
    half = frames.shape[1] // 2
    return frames[:, half:, :, :].reshape(len(frames), -1).mean(axis=1)


def write_v30(root: Path, adata=None, per_file: int | None = 2) -> Path:
    adata = adata if adata is not None else _logs()
    return write_lerobot_v3(
        adata, root, fps=FPS, videos={"observation.images.front": _frames(adata.n_obs)}, episodes_per_file=per_file
    )


def write_v21(root: Path, adata=None) -> Path:
    """LeRobot v2.1 tables plus one video per episode at videos/chunk-000/<key>/episode_NNNNNN.mp4."""
    adata = adata if adata is not None else _logs()
    write_lerobot(adata, root, fps=FPS)
    frames = _frames(adata.n_obs)
    key = "observation.images.front"
    for e in adata.obs["episode"].unique():
        rows = np.flatnonzero(adata.obs["episode"].to_numpy() == e)
        encode_video(frames[rows], root / f"videos/chunk-000/{key}/episode_{int(e):06d}.mp4", FPS)
    info = json.loads((root / "meta/info.json").read_text())
    info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    info["features"][key] = {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("layout", ["v2.1", "v3.0"])
def test_lerobot_videos_aligned_to_the_table(tmp_path, layout):
    root = (write_v21 if layout == "v2.1" else write_v30)(tmp_path / "ds")
    adata = read_lerobot(root, cameras=["front"], frame_size=16)
    frames = adata.obsm["frames.front"]
    assert frames.shape == (36, 16, 16, 3) and frames.dtype == np.uint8
    # every row got its own frame: the grey level of row i, across episodes (and, in v3.0, across two
    # video files holding two episodes and one): a frame off by one would be off by 23 levels
    np.testing.assert_allclose(_levels(frames), [_grey(i) for i in range(36)], atol=4)
    red = frames[:, :8, :8].reshape(-1, 3).mean(axis=0)
    assert red[0] > 180 and red[1] < 60 and red[2] < 60  # RGB, not BGR
    assert adata.uns["crl_pipe_cameras"]["front"] == {"source": "observation.images.front", "height": 16, "width": 16}
    # the same table as without cameras; the full key names the camera too
    plain = read_lerobot(root)
    assert not plain.obsm and "crl_pipe_cameras" not in plain.uns
    pd.testing.assert_frame_equal(plain.obs, adata.obs)
    again = read_lerobot(root, cameras=["observation.images.front"], frame_size=16)
    np.testing.assert_array_equal(again.obsm["frames.front"], frames)


def test_lerobot_v30_layout_is_what_lerobot_writes(tmp_path):
    root = write_v30(tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    episodes = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    key = "videos/observation.images.front/"
    assert episodes[key + "file_index"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(episodes[key + "from_timestamp"], [0.0, 1.2, 0.0])
    np.testing.assert_allclose(episodes[key + "to_timestamp"], [1.2, 2.7, 0.9])
    for f, n in ((0, 27), (1, 9)):
        with av.open(str(root / f"videos/observation.images.front/chunk-000/file-{f:03d}.mp4")) as video:
            assert sum(1 for _ in video.decode(video=0)) == n


def test_frames_travel_through_ingest_and_preprocess(tmp_path):
    root = write_v30(tmp_path / "ds")
    out = tmp_path / "results"
    options = {"cameras": ["front"], "frame_size": 16}
    pipeline.ingest(
        path=root, out_h5ad=out / "ingested.h5ad", out_qc=out / "qc.parquet", format="lerobot", kind="robot",
        options=options,
    )  # fmt: skip
    ingested = read_h5ad(out / "ingested.h5ad")
    assert ingested.obsm["frames.front"].shape == (36, 16, 16, 3)
    assert ingested.uns["crl_pipe"]["params"]["cameras"] == ["front"]
    pipeline.label(ingested=out / "ingested.h5ad", out=out / "interventions.parquet", kind="robot")
    pipeline.preprocess(
        ingested=out / "ingested.h5ad", interventions=out / "interventions.parquet", out=out / "pre.h5ad", kind="robot"
    )
    pre = read_h5ad(out / "pre.h5ad")
    frames = get_frames(pre)["front"]
    np.testing.assert_array_equal(frames, ingested[pre.obs_names].obsm["frames.front"])
    via = read_screen(root, format="lerobot", **options)
    np.testing.assert_array_equal(via.obsm["frames.front"], ingested.obsm["frames.front"])


def _video(root: Path, f: int = 0, layout: str = "v3.0") -> Path:
    """The video file ``f`` of camera front: v3.0 file ``f`` (episodes 0-1 in file 0, episode 2 in file 1), or v2.1
    episode ``f``'s."""
    if layout == "v2.1":
        return root / f"videos/chunk-000/observation.images.front/episode_{f:06d}.mp4"
    return root / f"videos/observation.images.front/chunk-000/file-{f:03d}.mp4"


def _shorter(root: Path, layout: str) -> str:
    # v3.0 file 0 holds episodes 0 and 1 (27 frames); v2.1 episode 0 has 12 frames
    n = 20 if layout == "v3.0" else 8
    encode_video(_frames(n), _video(root, 0, layout), FPS)
    name = r"file-000\.mp4" if layout == "v3.0" else r"episode_000000\.mp4"
    return (
        name
        + rf": camera 'front': the video ends at {(n - 1) / FPS:.4f} s \({n} frames\) but the table needs a frame at "
    )


def _garbage(root: Path, layout: str) -> str:
    _video(root, 1, layout).write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    name = r"file-001\.mp4" if layout == "v3.0" else r"episode_000001\.mp4"
    return name + r": camera 'front': not a decodable video"


def _missing(root: Path, layout: str) -> str:
    _video(root, 1, layout).unlink()
    name = r"file-001\.mp4" if layout == "v3.0" else r"episode_000001\.mp4"
    return name + r": video of camera 'front' does not exist"


def _late(root: Path, layout: str) -> str:
    """Episode 1's table timestamps 30 ms later than its video frames."""
    files = sorted((root / "data").rglob("*.parquet"))
    for file in files:
        table = pd.read_parquet(file)
        late = table["episode_index"] == 1
        table.loc[late, "timestamp"] += 0.03
        table.to_parquet(file)
    name = r"file-000\.mp4" if layout == "v3.0" else r"episode_000001\.mp4"
    return name + r": camera 'front': 15 table timestamp\(s\) have no video frame within 0\.0001 s"


def _no_such_camera(root: Path, layout: str) -> str:
    return r"info\.json: camera 'side' not found; expected one of the video features \['front'\]"


@pytest.mark.parametrize("layout", ["v2.1", "v3.0"])
@pytest.mark.parametrize(
    "damage",
    [_shorter, _garbage, _missing, _late, _no_such_camera],
    ids=["shorter", "undecodable", "missing", "timestamps", "unknown-camera"],
)
def test_bad_videos_are_one_line_errors_and_nothing_is_written(tmp_path, damage, layout):
    root = (write_v21 if layout == "v2.1" else write_v30)(tmp_path / "ds")
    message = damage(root, layout)
    camera = "side" if damage is _no_such_camera else "front"
    out = tmp_path / "results"
    with pytest.raises(InputError, match=message) as err:
        pipeline.ingest(
            path=root, out_h5ad=out / "ingested.h5ad", out_qc=out / "qc.parquet", format="lerobot", kind="robot",
            options={"cameras": [camera], "frame_size": 16},
        )  # fmt: skip
    assert "\n" not in str(err.value)
    assert str(root) in str(err.value)  # the file named in full
    assert not out.exists() or not any(out.iterdir())


def test_timestamps_that_do_not_match_the_video(tmp_path):
    root = write_v30(tmp_path / "ds", _logs(offset={1: 0.03}))  # episode 1's table is 30 ms late
    message = (
        r"file-000\.mp4: camera 'front': 15 table timestamp\(s\) have no video frame within 0\.0001 s "
        r"\(e\.g\. episode 1 frame 0 at 1\.2300 s; nearest frame 1\.2000 s\)"
    )
    with pytest.raises(InputError, match=message):
        read_lerobot(root, cameras=["front"], frame_size=16)
    # a looser tolerance takes the nearest frame
    adata = read_lerobot(root, cameras=["front"], frame_size=16, tolerance_s=0.04)
    np.testing.assert_allclose(_levels(adata.obsm["frames.front"]), [_grey(i) for i in range(36)], atol=4)


def test_unknown_camera_and_bad_frame_size(tmp_path):
    root = write_v30(tmp_path / "ds")
    with pytest.raises(
        InputError, match=r"info\.json: camera 'side' not found; expected one of the video features \['front'\]"
    ):
        read_lerobot(root, cameras=["side"])
    with pytest.raises(InputError, match=r"camera 'observation\.state' stored as 'float32'; expected one of"):
        read_lerobot(root, cameras=["observation.state"])
    with pytest.raises(InputError, match=r"frame_size=4; expected an integer from 8 to 512"):
        read_lerobot(root, cameras=["front"], frame_size=4)
    plain = tmp_path / "plain"
    write_lerobot(_logs(), plain, fps=FPS)
    with pytest.raises(InputError, match=r"camera 'front' not found; expected one of the video features none"):
        read_lerobot(plain, cameras=["front"])


def test_v30_episode_without_video_entry(tmp_path):
    root = write_v30(tmp_path / "ds")
    part = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pd.read_parquet(part)
    table.drop(columns=[c for c in table if c.startswith("videos/")]).to_parquet(part)
    with pytest.raises(InputError, match=r"file-000\.parquet: camera 'front': missing column\(s\)"):
        read_lerobot(root, cameras=["front"])


def test_camera_names():
    assert camera_name("observation.images.front") == "front"
    assert camera_name("/cam/color/image_raw") == "cam.color.image_raw"


# ------------------------------------------------------------------ ROS image topics

T0 = 2 * 10**9
# joint states at 20 Hz from T0; raw camera images at 10 Hz from T0 + 30 ms; compressed at 5 Hz from T0 + 60 ms
STATES = [T0 + 5 * 10**7 * i for i in range(16)]
RAW = [T0 + 3 * 10**7 + 10**8 * i for i in range(8)]
JPEG = [T0 + 6 * 10**7 + 2 * 10**8 * i for i in range(4)]


def _stamp(store, t: int):
    T = store.types
    fields = T["std_msgs/msg/Header"].__dataclass_fields__
    stamp = T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="cam", **({"seq": 0} if "seq" in fields else {}))


def _raw(store, t: int, i: int, encoding: str):
    rgb = _frames(i + 1, 24)[i]
    if encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        pixels = rgb[:, :, :1]
    else:
        pixels = rgb
    step = 24 * pixels.shape[2] + 4  # padded rows, as some drivers write them
    data = np.zeros((24, step), dtype=np.uint8)
    data[:, : 24 * pixels.shape[2]] = pixels.reshape(24, -1)
    return store.types["sensor_msgs/msg/Image"](
        header=_stamp(store, t), height=24, width=24, encoding=encoding, is_bigendian=0, step=step, data=data.ravel()
    )


def _compressed(store, t: int, i: int, codec: str):
    if codec == "garbage":
        data = np.frombuffer(b"\xff\xd8 not a picture" * 3, dtype=np.uint8)
        return store.types["sensor_msgs/msg/CompressedImage"](header=_stamp(store, t), format=codec, data=data)
    frame = av.VideoFrame.from_ndarray(_frames(i + 1, 24)[i], format="rgb24")
    context = av.CodecContext.create("mjpeg" if codec == "jpeg" else "png", "w")
    context.width, context.height, context.time_base = 24, 24, Fraction(1, 10)
    context.pix_fmt = "yuvj444p" if codec == "jpeg" else "rgb24"
    if codec == "jpeg":
        context.options = {"qscale": "2"}
    packets = context.encode(frame.reformat(format=context.pix_fmt)) + context.encode()
    data = np.frombuffer(bytes(packets[0]), dtype=np.uint8)
    return store.types["sensor_msgs/msg/CompressedImage"](header=_stamp(store, t), format=codec, data=data)


def _joint(store, t: int, i: int):
    T = store.types
    empty = np.zeros(0)
    return T["sensor_msgs/msg/JointState"](
        header=_stamp(store, t), name=["j"], position=np.array([float(i)]), velocity=empty, effort=empty
    )


def _messages(store, encoding: str, codec: str, raw=RAW):
    out = [("/joint_states", "sensor_msgs/msg/JointState", t, _joint(store, t, i)) for i, t in enumerate(STATES)]
    out += [("/cam/image_raw", "sensor_msgs/msg/Image", t, _raw(store, t, i, encoding)) for i, t in enumerate(raw)]
    out += [
        ("/cam/compressed", "sensor_msgs/msg/CompressedImage", t, _compressed(store, t, i, codec))
        for i, t in enumerate(JPEG)
    ]
    return sorted(out, key=lambda m: m[2])


def _as_dict(msg):
    if hasattr(msg, "__dataclass_fields__"):
        return {k: _as_dict(getattr(msg, k)) for k in msg.__dataclass_fields__ if k != "__msgtype__"}
    return msg.tolist() if isinstance(msg, np.ndarray) else msg


def write_plain_mcap(path: Path, encoding: str, codec: str) -> Path:
    """A plain MCAP file (no rosbag2 folder), written with the MCAP ROS 2 writer from message dicts."""
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    with open(path, "wb") as fh:
        writer, schemas = Writer(fh), {}
        for topic, kind, t, msg in _messages(store, encoding, codec):
            if kind not in schemas:
                schemas[kind] = writer.register_msgdef(kind, store.generate_msgdef(kind, ros_version=2)[0])
            writer.write_message(topic, schemas[kind], _as_dict(msg), log_time=t, publish_time=t)
        writer.finish()
    return path


def write_bag(path: Path, layout: str, encoding: str = "rgb8", codec: str = "jpeg", raw=RAW) -> Path:
    from rosbags.typesys import Stores, get_typestore

    if layout == "plain_mcap":
        pytest.importorskip("mcap_ros2")
        return write_plain_mcap(path.with_suffix(".mcap"), encoding, codec)
    if layout == "ros1":
        from rosbags.rosbag1 import Writer

        store = get_typestore(Stores.ROS1_NOETIC)
        writer, serialize = Writer(path), store.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        store = get_typestore(Stores.LATEST)
        writer = Writer(path, version=9, storage_plugin=StoragePlugin[layout.removeprefix("ros2_").upper()])
        serialize = store.serialize_cdr
    with writer:
        conns = {}
        for topic, kind, t, msg in _messages(store, encoding, codec, raw):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, kind, typestore=store)
            writer.write(conns[topic], t, serialize(msg, kind))
    return path


CAMERAS = ["/cam/image_raw", "/cam/compressed"]


@pytest.mark.parametrize(
    ("layout", "encoding", "codec"),
    [
        ("ros1", "rgb8", "jpeg"),
        ("ros2_sqlite3", "bgr8", "png"),
        ("ros2_mcap", "mono8", "jpeg"),
        ("plain_mcap", "bgr8", "jpeg"),
    ],
)
def test_ros_image_topics_on_the_common_clock(tmp_path, layout, encoding, codec):
    path = write_bag(tmp_path / ("run.bag" if layout == "ros1" else "run"), layout, encoding, codec)
    adata = read_rosbag(path, topics={"/joint_states": ["position"]}, cameras=CAMERAS, frame_size=12)
    # the clock is the fastest topic (joint states, 20 Hz) from the last first message (the compressed
    # camera's, at T0 + 60 ms): frames at T0 + 100 ms, + 150 ms ...; each camera holds its last image
    start = 2
    assert adata.n_obs == len(STATES) - start
    assert adata.obs["time_ns"].tolist() == STATES[start:]
    raw, jpeg = adata.obsm["frames.cam.image_raw"], adata.obsm["frames.cam.compressed"]
    assert raw.shape == (adata.n_obs, 12, 12, 3) and jpeg.shape == raw.shape
    grid = np.asarray(STATES[start:])
    expected_raw = np.searchsorted(RAW, grid, side="right") - 1
    expected_jpeg = np.searchsorted(JPEG, grid, side="right") - 1
    tol = 2 if codec == "png" else 6
    np.testing.assert_allclose(_levels(raw), [_grey(i) for i in expected_raw], atol=2)
    np.testing.assert_allclose(_levels(jpeg), [_grey(i) for i in expected_jpeg], atol=tol)
    corner = raw[:, :6, :6].reshape(-1, 3).mean(axis=0)
    if encoding == "mono8":  # the red channel read as grey
        assert np.ptp(corner) < 2 and corner[0] > 180
    else:
        assert corner[0] > 200 and corner[2] < 40  # bgr8 put back in RGB order
    assert adata.uns["crl_pipe_cameras"]["cam.compressed"]["source"] == "/cam/compressed"


def test_ros_camera_errors(tmp_path):
    path = write_bag(tmp_path / "run", "ros2_sqlite3")
    topics = {"/joint_states": ["position"]}
    with pytest.raises(InputError, match=r"camera topic '/cam/depth' not found; expected one of the image topics "
                       r"\['/cam/compressed', '/cam/image_raw'\]") as err:  # fmt: skip
        read_rosbag(path, topics=topics, cameras=["/cam/depth"])
    assert str(err.value).startswith(str(path))  # the file, then the camera
    with pytest.raises(InputError, match=r"camera topic '/joint_states' carries sensor_msgs/msg/JointState"):
        read_rosbag(path, topics=topics, cameras=["/joint_states"])
    bad = write_bag(tmp_path / "bad", "ros2_sqlite3", encoding="32FC1")
    with pytest.raises(InputError, match=r"camera topic '/cam/image_raw': image encoding '32FC1' not understood"):
        read_rosbag(bad, topics=topics, cameras=["/cam/image_raw"])


def test_ros_undecodable_compressed_image(tmp_path):
    path = write_bag(tmp_path / "run", "ros2_sqlite3", codec="garbage")
    with pytest.raises(InputError, match=r"camera topic '/cam/compressed': compressed image \(format 'garbage'\) "
                       r"cannot be decoded .*; expected JPEG or PNG data"):  # fmt: skip
        read_rosbag(path, topics={"/joint_states": ["position"]}, cameras=["/cam/compressed"])


def test_ros_camera_that_stops_while_the_log_goes_on(tmp_path):
    # the raw camera publishes 3 images (to T0 + 230 ms) every 100 ms; the joint states go on to T0 + 750 ms.
    # The clock starts at the first joint state after the camera's first image (T0 + 50 ms)
    path = write_bag(tmp_path / "run", "ros2_sqlite3", raw=RAW[:3])
    message = (
        r"run: camera topic '/cam/image_raw': no new image for 0\.320 s at frame 10 \(0\.500 s; "
        r"5 frame\(s\) affected, last image 0\.180 s, log end 0\.700 s\); "
        r"expected an image at least every 3 x its median interval \(0\.100 s\)"
    )
    with pytest.raises(InputError, match=message):
        read_rosbag(path, topics={"/joint_states": ["position"]}, cameras=["/cam/image_raw"])
    # the numeric topics alone are read as before
    assert read_rosbag(path, topics={"/joint_states": ["position"]}).n_obs == len(STATES)


@pytest.mark.parametrize("camera", ["/cam/depth", "/cam/image_raw"], ids=["unknown-topic", "stopped"])
def test_ros_camera_errors_write_nothing(tmp_path, camera):
    path = write_bag(tmp_path / "run", "ros2_sqlite3", raw=RAW[:3])
    out = tmp_path / "results"
    with pytest.raises(InputError, match=rf"{tmp_path / 'run'}.*: camera topic '{camera}'") as err:
        pipeline.ingest(
            path=path, out_h5ad=out / "ingested.h5ad", out_qc=out / "qc.parquet", format="rosbag", kind="robot",
            options={"topics": {"/joint_states": ["position"]}, "cameras": [camera], "frame_size": 12},
        )  # fmt: skip
    assert "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir())
