"""Robot logs: LeRobot, rosbag and table readers, and per-frame intervention labels.

Fixtures are written here with the real writer libraries (pyarrow for LeRobot v2.1/v3.0, rosbags
for ROS1 and ROS2 bags, mcap for plain MCAP), so the readers meet the layouts those tools produce.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _shared import SHARED_DATA

from crl_pipe import InputError, pp
from crl_pipe.io import read_lerobot, read_robot, read_robot_table, read_rosbag, read_screen

G1 = SHARED_DATA / "lerobot_g1_pick"
NAMES = ["shoulder", "elbow", "wrist"]
FPS = 10.0


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``root`` (to prove that reading changes nothing)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}


# ------------------------------------------------------------------ LeRobot fixtures


def _episodes(lengths=(5, 6, 7), seed=0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        action = np.cumsum(rng.normal(size=(n, 3)), axis=0).astype(np.float32)
        out.append(
            {
                "state": (0.5 * action + rng.normal(scale=0.1, size=(n, 3))).astype(np.float32),
                "action": action,
                "done": np.arange(n) == n - 1,
                "timestamp": (np.arange(n) / FPS).astype(np.float32),
            }
        )
    return out


def _vectors(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), values.shape[1])


def _frames_table(episodes, indices) -> pa.Table:
    parts = []
    start = sum(len(episodes[i]["timestamp"]) for i in range(min(indices)))
    for e in indices:
        ep = episodes[e]
        n = len(ep["timestamp"])
        parts.append(
            pa.table(
                {
                    "observation.state": _vectors(ep["state"]),
                    "action": _vectors(ep["action"]),
                    "next.done": pa.array(ep["done"]),
                    "timestamp": pa.array(ep["timestamp"], pa.float32()),
                    "frame_index": pa.array(np.arange(n), pa.int64()),
                    "episode_index": pa.array(np.full(n, e), pa.int64()),
                    "index": pa.array(start + np.arange(n), pa.int64()),
                    "task_index": pa.array(np.full(n, e % 2), pa.int64()),
                }
            )
        )
        start += n
    return pa.concat_tables(parts)


def _info(version: str, episodes, names) -> dict:
    vector = {"dtype": "float32", "shape": [3], "names": names}
    return {
        "codebase_version": version,
        "fps": FPS,
        "chunks_size": 1000,
        "total_episodes": len(episodes),
        "features": {
            "observation.state": vector,
            "action": vector,
            "observation.images.top": {"dtype": "video", "shape": [4, 4, 3], "names": ["h", "w", "c"]},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            **{
                k: {"dtype": "int64", "shape": [1], "names": None}
                for k in ("frame_index", "episode_index", "index", "task_index")
            },
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
    }


def write_lerobot_v21(root: Path, episodes, names=(NAMES,)) -> Path:
    """A LeRobot v2.1 dataset: one Parquet file per episode, meta/episodes.jsonl and tasks.jsonl.

    ``names`` is written as given; the default nests the list, as the G1 dataset does.
    """
    info = _info("v2.1", episodes, list(names) if isinstance(names, tuple) else names)
    info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    lines = [
        json.dumps({"episode_index": e, "tasks": ["pick"], "length": len(ep["timestamp"])})
        for e, ep in enumerate(episodes)
    ]
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta" / "tasks.jsonl").write_text(
        '{"task_index": 0, "task": "pick"}\n{"task_index": 1, "task": "place"}\n'
    )
    for e in range(len(episodes)):
        pq.write_table(_frames_table(episodes, [e]), root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
    return root


def write_lerobot_v30(root: Path, episodes, files=((0, 1), (2,))) -> Path:
    """A LeRobot v3.0 dataset: several episodes per data file, meta/episodes/*.parquet, tasks.parquet."""
    info = _info("v3.0", episodes, NAMES)
    info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    rows = []
    for f, members in enumerate(files):
        pq.write_table(_frames_table(episodes, list(members)), root / "data" / "chunk-000" / f"file-{f:03d}.parquet")
        rows += [
            {"episode_index": e, "length": len(episodes[e]["timestamp"]), "data/chunk_index": 0, "data/file_index": f}
            for e in members
        ]
    pq.write_table(pa.Table.from_pylist(rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(["pick", "place"], name="task")).to_parquet(
        root / "meta" / "tasks.parquet"
    )
    return root


def test_lerobot_v21_frames_channels_and_values(tmp_path):
    episodes = _episodes()
    root = write_lerobot_v21(tmp_path / "ds", episodes)
    before = _snapshot(root)
    adata = read_lerobot(root)
    assert _snapshot(root) == before  # reading never modifies the input
    assert adata.shape == (18, 7)
    assert list(adata.var_names) == [*NAMES, *(f"action.{n}" for n in NAMES), "next.done"]
    assert list(adata.var["kind"]) == ["state"] * 3 + ["action"] * 3 + ["other"]
    assert list(adata.var["channel"][:6]) == NAMES * 2
    assert list(adata.obs_names[:2]) == ["ep0_f0", "ep0_f1"] and adata.obs_names[-1] == "ep2_f6"
    assert adata.obs["episode"].dtype == object and adata.obs["frame"].dtype == np.int64
    np.testing.assert_allclose(adata.obs["timestamp"][:3], [0.0, 0.1, 0.2], atol=1e-6)
    np.testing.assert_array_equal(adata.X[:5, :3], episodes[0]["state"])
    np.testing.assert_array_equal(adata.X[5:11, 3:6], episodes[1]["action"])
    assert adata.X.dtype == np.float32
    assert list(adata.obs["task"].unique()) == ["pick", "place"]


def test_lerobot_v30_matches_v21(tmp_path):
    episodes = _episodes(lengths=(4, 5, 6), seed=3)
    v21 = read_lerobot(write_lerobot_v21(tmp_path / "v21", episodes))
    root = write_lerobot_v30(tmp_path / "v30", episodes)
    before = _snapshot(root)
    v30 = read_lerobot(root)
    assert _snapshot(root) == before
    pd.testing.assert_frame_equal(v21.obs, v30.obs)
    pd.testing.assert_frame_equal(v21.var, v30.var)
    np.testing.assert_array_equal(v21.X, v30.X)


def test_lerobot_via_read_screen_and_read_robot(tmp_path):
    root = write_lerobot_v21(tmp_path / "ds", _episodes())
    a, b = read_screen(root, format="lerobot"), read_robot(root, format="lerobot", columns=["observation.state"])
    assert a.shape == (18, 7) and list(b.var_names) == NAMES


@pytest.mark.parametrize("names", [None, [["a", "b"]], {"motors": NAMES}])
def test_lerobot_names_nested_dict_or_fallback(tmp_path, names):
    root = write_lerobot_v21(tmp_path / "ds", _episodes(), names=names)
    adata = read_lerobot(root)
    expected = NAMES if isinstance(names, dict) else ["col_0", "col_1", "col_2"]
    assert list(adata.var_names[:3]) == expected
    assert list(adata.var_names[3:6]) == [f"action.{n}" for n in expected]


def _break(root: Path, episode: int, column: str, values) -> None:
    path = root / "data" / "chunk-000" / f"episode_{episode:06d}.parquet"
    table = pq.read_table(path)
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )
    pq.write_table(table, path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "data" / "chunk-000" / "episode_000001.parquet").unlink(),
            "episode_000001.parquet: data file does not exist",
        ),
        (lambda r: (r / "meta" / "info.json").unlink(), "info.json: file does not exist"),
        (lambda r: _break(r, 1, "timestamp", [0.0, 0.1, 0.3, 0.2, 0.4, 0.5]), "not increasing in episode 1 at frame 3"),
        (lambda r: _break(r, 0, "timestamp", [0.0, np.nan, 0.2, 0.3, 0.4]), "frame(s) without a timestamp"),
        (
            lambda r: (r / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v1.6", "features": {}})),
            "expected v2.0, v2.1 or v3.0",
        ),
    ],
)
def test_lerobot_errors_name_the_file_and_what_was_expected(tmp_path, damage, message):
    root = write_lerobot_v21(tmp_path / "ds", _episodes())
    damage(root)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_lerobot(root)


def test_lerobot_single_frame_episode_and_length_mismatch(tmp_path):
    root = write_lerobot_v21(tmp_path / "one", _episodes(lengths=(5, 1)))
    with pytest.raises(InputError, match=r"episode\(s\) 1 have a single frame"):
        read_lerobot(root)
    root = write_lerobot_v21(tmp_path / "len", _episodes())
    (root / "meta" / "episodes.jsonl").write_text('{"episode_index": 0, "length": 9}\n')
    with pytest.raises(InputError, match="episode 0 has 5 frame"):
        read_lerobot(root)


def test_missing_dataset_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_lerobot(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown robot log format 'hdf5'"):
        read_robot(tmp_path, format="hdf5")
    with pytest.raises(InputError, match="unknown screen format"):
        read_screen(tmp_path, format="hdf5")


# ------------------------------------------------------------------ the real G1 logs


def test_g1_logs_read_whole_and_unchanged():
    before = _snapshot(G1)
    adata = read_lerobot(G1)
    assert _snapshot(G1) == before
    assert adata.shape == (35_965, 52)
    assert adata.obs["episode"].nunique() == 100
    info = json.loads((G1 / "meta" / "info.json").read_text())
    joints = info["features"]["observation.state"]["names"][0]
    assert list(adata.var_names[:26]) == joints
    assert list(adata.var_names[26:]) == [f"action.{j}" for j in joints]
    assert (adata.var["kind"] == "state").sum() == 26 and (adata.var["kind"] == "action").sum() == 26
    assert adata.obs_names.is_unique


# ------------------------------------------------------------------ rosbags

JOINTS = ["hip", "knee"]


def _joint_state(store, t_ns: int, position, names=JOINTS):
    T = store.types
    header_fields = T["std_msgs/msg/Header"].__dataclass_fields__
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
        frame_id="",
        **({"seq": 0} if "seq" in header_fields else {}),
    )
    empty = np.zeros(0)
    return T["sensor_msgs/msg/JointState"](
        header=header, name=list(names), position=np.asarray(position, float), velocity=empty, effort=empty
    )


def _vector(store, x: float):
    return store.types["geometry_msgs/msg/Vector3"](x=x, y=2 * x, z=-x)


# /joint_states at 100 Hz from t=1.00 s, /cmd (commands, joints reversed) at 50 Hz from 1.005 s,
# /imu (Vector3) at 20 Hz from 1.02 s: the first frame is the first joint state at or after 1.02 s.
T0 = 10**9
STATES = [(T0 + 10**7 * i, [i, 10 * i]) for i in range(12)]
CMDS = [(T0 + 5 * 10**6 + 2 * 10**7 * i, [100 + i, 200 + i]) for i in range(6)]
IMU = [(T0 + 2 * 10**7 + 5 * 10**7 * i, float(i + 1)) for i in range(3)]
TOPICS = {"/joint_states": ["position"], "/cmd": ["position"], "/imu": ["x", "z"]}


def _messages(store):
    out = [("/joint_states", "sensor_msgs/msg/JointState", t, _joint_state(store, t, p)) for t, p in STATES]
    for i, (t, p) in enumerate(CMDS):  # joints listed knee-first, then in alternating order
        order = [1, 0] if i % 2 == 0 else [0, 1]
        out.append(
            (
                "/cmd",
                "sensor_msgs/msg/JointState",
                t,
                _joint_state(store, t, [p[k] for k in order], [JOINTS[k] for k in order]),
            )
        )
    out += [("/imu", "geometry_msgs/msg/Vector3", t, _vector(store, x)) for t, x in IMU]
    return sorted(out, key=lambda m: m[2])


def write_ros1(path: Path) -> Path:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    with Writer(path) as writer:
        conns = {}
        for topic, kind, t, msg in _messages(store):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, kind, typestore=store)
            writer.write(conns[topic], t, store.serialize_ros1(msg, kind))
    return path


def write_ros2(path: Path, storage: str) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage]) as writer:
        conns = {}
        for topic, kind, t, msg in _messages(store):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, kind, typestore=store)
            writer.write(conns[topic], t, store.serialize_cdr(msg, kind))
    return path


def write_plain_mcap(path: Path) -> Path:
    """A plain MCAP file (no rosbag2 folder) written with the mcap ROS 2 writer from message dicts."""
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    with open(path, "wb") as fh:
        writer = Writer(fh)
        schemas = {}
        for topic, kind, t, msg in _messages(store):
            if kind not in schemas:
                schemas[kind] = writer.register_msgdef(kind, store.generate_msgdef(kind, ros_version=2)[0])
            writer.write_message(topic, schemas[kind], _as_dict(msg), log_time=t, publish_time=t)
        writer.finish()
    return path


def _as_dict(msg):
    if hasattr(msg, "__dataclass_fields__"):
        return {k: _as_dict(getattr(msg, k)) for k in msg.__dataclass_fields__ if k != "__msgtype__"}
    return msg.tolist() if isinstance(msg, np.ndarray) else msg


def _expected_alignment():
    """The documented rule by hand: fastest topic's clock, from the last first message, last value carried forward."""
    start = max(STATES[0][0], CMDS[0][0], IMU[0][0])
    rows = []
    for t, p in STATES:
        if t < start:
            continue
        cmd = [c for tc, c in CMDS if tc <= t][-1]
        imu = [x for ti, x in IMU if ti <= t][-1]
        rows.append([*p, cmd[1], cmd[0], imu, -imu])  # /cmd reordered to the first message's joints
    return np.array(rows, dtype=np.float32), start


@pytest.mark.parametrize("layout", ["ros1", "ros2_sqlite3", "ros2_mcap", "plain_mcap"])
def test_rosbag_layouts_align_topics_on_one_clock(tmp_path, layout):
    pytest.importorskip("rosbags")
    if layout == "plain_mcap":
        pytest.importorskip("mcap_ros2")
        path = write_plain_mcap(tmp_path / "run1.mcap")
    elif layout == "ros1":
        path = write_ros1(tmp_path / "run1.bag")
    else:
        path = write_ros2(tmp_path / "run1", layout.split("_")[1].upper())
    before = _snapshot(path)
    adata = read_rosbag(path, topics=TOPICS, kinds={"/cmd": "action"})
    assert _snapshot(path) == before
    expected, start = _expected_alignment()
    assert list(adata.var_names) == [
        "/joint_states.position.hip",
        "/joint_states.position.knee",
        "/cmd.position.knee",
        "/cmd.position.hip",
        "/imu.x",
        "/imu.z",
    ]
    # /cmd lists its joints in a changing order; the first message's order (knee, hip) is kept
    np.testing.assert_array_equal(adata.X, expected)
    assert list(adata.var["kind"]) == ["state", "state", "action", "action", "state", "state"]
    assert list(adata.var["channel"][:4]) == ["hip", "knee", "knee", "hip"]
    assert adata.obs["episode"].unique().tolist() == ["run1"]
    assert adata.obs["time_ns"].iloc[0] == start
    np.testing.assert_allclose(np.diff(adata.obs["timestamp"]), 0.01)
    assert pp.default_action_map(adata) == {
        "/cmd.position.knee": "/joint_states.position.knee",
        "/cmd.position.hip": "/joint_states.position.hip",
    }


def test_rosbag_rate_grid_and_folder_of_recordings(tmp_path):
    pytest.importorskip("rosbags")
    folder = tmp_path / "runs"
    folder.mkdir()
    write_ros1(folder / "a.bag")
    write_ros2(folder / "b", "SQLITE3")
    adata = read_rosbag(folder, topics={"/joint_states": ["position"], "/imu": ["x"]}, rate=25.0)
    assert adata.obs["episode"].unique().tolist() == ["a", "b"]
    ep = adata[adata.obs["episode"] == "a"]
    np.testing.assert_allclose(np.diff(ep.obs["timestamp"]), 0.04)
    # at 1.02 s + k * 40 ms, /joint_states holds the message of 10 ms steps at or before that time
    np.testing.assert_array_equal(ep.X[:3, 0], [2, 6, 10])


def test_rosbag_errors(tmp_path):
    pytest.importorskip("rosbags")
    path = write_ros1(tmp_path / "r.bag")
    with pytest.raises(InputError, match=r"topic\(s\) \['/odom'\] not found"):
        read_rosbag(path, topics={"/odom": ["pose"]})
    with pytest.raises(InputError, match="has no field 'effort_x'"):
        read_rosbag(path, topics={"/joint_states": ["effort_x"]})
    with pytest.raises(InputError, match="field 'velocity' holds no numbers"):
        read_rosbag(path, topics={"/joint_states": ["velocity"]})
    with pytest.raises(InputError, match=r"topic '/imu' has no header.stamp"):
        read_rosbag(path, topics=TOPICS, clock="header")
    by_header = read_rosbag(path, topics={"/joint_states": ["position"], "/cmd": ["position"]}, clock="header")
    by_log = read_rosbag(path, topics={"/joint_states": ["position"], "/cmd": ["position"]})
    np.testing.assert_array_equal(by_header.X, by_log.X)  # the fixture stamps headers with the log time
    with pytest.raises(InputError, match="needs option 'topics'"):
        read_screen(path, format="rosbag")
    with pytest.raises(InputError, match="not a rosbag"):
        read_rosbag(_empty_dir(tmp_path), topics=TOPICS)


def _empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


# ------------------------------------------------------------------ tables


def _signals(n_episodes=2, n=6, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for e in range(n_episodes):
        a = np.cumsum(rng.normal(size=n))
        frames.append(
            pd.DataFrame(
                {
                    "run": f"r{e}",
                    "t_ms": 1000 + 50 * np.arange(n),
                    "elbow": 0.5 * a,
                    "action.elbow": a,
                    "gripper_closed": np.arange(n) > 3,
                    "note": "ok",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_reader(tmp_path, suffix):
    frame = _signals()
    path = tmp_path / f"log{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    before = _snapshot(path)
    adata = read_robot_table(path, episode_key="run", time_key="t_ms", time_unit="ms")
    assert _snapshot(path) == before
    assert list(adata.var_names) == ["elbow", "action.elbow", "gripper_closed"]
    assert list(adata.var["kind"]) == ["state", "action", "event"]
    assert list(adata.var["channel"]) == ["elbow", "elbow", "gripper_closed"]
    assert list(adata.obs_names[:2]) == ["epr0_f0", "epr0_f1"]
    np.testing.assert_allclose(adata.obs["timestamp"][:2], [1.0, 1.05])
    assert (adata.obs["note"] == "ok").all()
    np.testing.assert_allclose(adata.X[:, 1], frame["action.elbow"], rtol=1e-6)
    same = read_screen(path, format="table", episode_key="run", time_key="t_ms", time_unit="ms")
    np.testing.assert_array_equal(same.X, adata.X)


def test_table_without_episode_column_is_one_episode(tmp_path):
    path = tmp_path / "run7.csv"
    _signals(n_episodes=1).drop(columns="run").to_csv(path, index=False)
    adata = read_robot_table(path, episode_key=None, time_key="t_ms", time_unit="ms", actions=["action.elbow"])
    assert adata.obs["episode"].unique().tolist() == ["run7"] and adata.n_obs == 6


@pytest.mark.parametrize(
    ("edit", "kwargs", "message"),
    [
        (lambda f: f.drop(columns="run"), {}, "column 'run' not found"),
        (lambda f: f.assign(t_ms=f["t_ms"].where(f.index != 2, 1000)), {}, "not increasing in episode r0 at frame 2"),
        (lambda f: f.assign(t_ms=f["t_ms"].where(f.index != 1)), {}, r"1 frame\(s\) without a timestamp"),
        (lambda f: f.iloc[5:], {}, r"episode\(s\) r0 have a single frame"),
        (lambda f: f, {"time_unit": "h"}, "time_unit 'h' not understood"),
        (lambda f: f, {"actions": ["wrist"]}, r"actions column\(s\) \['wrist'\]"),
    ],
)
def test_table_errors(tmp_path, edit, kwargs, message):
    path = tmp_path / "log.parquet"
    edit(_signals()).to_parquet(path)
    with pytest.raises(InputError, match=message):
        read_robot_table(path, episode_key="run", time_key="t_ms", **{"time_unit": "ms", **kwargs})


# ------------------------------------------------------------------ intervention labels


def _labelled_logs(tmp_path) -> object:
    """Two joints, 30 frames per episode; the commanded elbow jumps at frames 3 and 8; a flag is on at frames 4-5."""
    rows = []
    for e in range(2):
        for f in range(30):
            rows.append(
                {
                    "episode": f"e{e}",
                    "t": f * 0.1,
                    "elbow": 0.0,
                    "wrist": 0.0,
                    "action.elbow": 1.0 * (f >= 3) - 1.0 * (f >= 8) + 0.001 * f,
                    "action.wrist": 0.001 * f,
                    "bump": f in (4, 5),
                    "env": "control" if e == 0 else "payload",
                }
            )
    path = tmp_path / "logs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return read_robot_table(path, time_key="t")


def test_robot_interventions_from_action_change_points_and_events(tmp_path):
    adata = _labelled_logs(tmp_path)
    table = pp.robot_interventions(adata, events={"bump": ["wrist"]}, environment_key="env")
    assert list(table.columns) == [
        "sample_id",
        "intervention",
        "targets",
        "n_targets",
        "is_control",
        "episode",
        "frame",
        "timestamp",
    ]
    by_frame = table[table["episode"] == "e0"].set_index("frame")
    assert by_frame.loc[3, "targets"] == ["elbow"] and by_frame.loc[8, "intervention"] == "elbow"
    assert by_frame.loc[4, "intervention"] == "wrist" and by_frame.loc[0, "intervention"] == "observational"
    assert by_frame.loc[0, "is_control"] and by_frame.loc[0, "n_targets"] == 0
    e1 = table[table["episode"] == "e1"].set_index("frame")
    assert e1.loc[3, "intervention"] == "elbow+payload" and e1.loc[0, "intervention"] == "payload"
    from crl_pipe.io import write_table

    write_table(table, tmp_path / "interventions.parquet", "interventions")  # fits the artifact contract


def test_robot_interventions_action_map_and_threshold(tmp_path):
    adata = _labelled_logs(tmp_path)
    table = pp.robot_interventions(
        adata, events=[], action_map={"action.elbow": ["elbow", "wrist"]}, change_threshold=1.0
    )
    assert table.set_index("sample_id").loc["epe0_f3", "intervention"] == "elbow+wrist"
    quiet = pp.robot_interventions(adata, events=[], change_threshold=100.0)
    assert quiet["is_control"].all()
    with pytest.raises(InputError, match=r"action_map driven variable\(s\) \['knee'\] not found"):
        pp.robot_interventions(adata, action_map={"action.elbow": "knee"})
    with pytest.raises(InputError, match=r"action_map channel\(s\) \['action.knee'\] not found"):
        pp.robot_interventions(adata, action_map={"action.knee": "elbow"})
    with pytest.raises(InputError, match=r"event column 'slip' not found"):
        pp.robot_interventions(adata, events=["slip"])


def test_default_action_map_needs_a_same_named_state(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"episode": 0, "timestamp": [0.0, 0.1, 0.2], "elbow": 0.0, "action.knee": [0.0, 1.0, 1.0]}).to_csv(
        path, index=False
    )
    with pytest.raises(InputError, match=r"action channel\(s\) action.knee drive no single state channel"):
        pp.robot_interventions(read_robot_table(path))
