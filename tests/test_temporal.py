"""The ``temporal`` model: sparse lagged transitions over robot states and actions."""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from _shared import SHARED_DATA

from crl_pipe import ModelError, pp, tl
from crl_pipe.io import read_h5ad, read_lerobot, read_table, write_h5ad, write_table
from crl_pipe.models import CRLData, TemporalSEM, get_model, load_model
from crl_pipe.simulate import ARM_JOINTS, simulate_arm, simulate_robot, write_robot_simulation
from crl_pipe.tl._evaluate import graph_metrics

G1 = SHARED_DATA / "lerobot_g1_pick"


def _data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))


def _edges(model: TemporalSEM) -> pd.DataFrame:
    adj = model.get_adjacency().stack()
    return adj[adj != 0].rename_axis(["source", "target"]).reset_index(name="weight")


def _shd(model: TemporalSEM, truth: pd.DataFrame) -> dict[str, float]:
    graph = _edges(model)
    nodes = set(graph["source"]) | set(graph["target"]) | set(truth["source"]) | set(truth["target"])
    return graph_metrics(graph, truth, {n: n for n in nodes})  # robot nodes carry their names


def _strongest_action_hits(model: TemporalSEM) -> int:
    """Latents whose strongest incoming edge (own lag excluded) is their own action."""
    adj = model.get_adjacency().abs()
    return sum(adj[lat].max() > 0 and adj[lat].idxmax() == f"action.{lat}" for lat in model.latent_names)


# ------------------------------------------------------------------ simulated robots with a known graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_simulated_graph(seed):
    sim = simulate_robot(seed=seed)  # 6 joints, 3 velocity couplings, 20 episodes x 300 frames
    model = TemporalSEM().fit(_data(sim))
    m = _shd(model, sim.graph)
    assert m["shd"] == 0  # measured: 0 on seeds 0-3
    assert _strongest_action_hits(model) == 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_short_logs_stay_close(seed):
    sim = simulate_robot(seed=seed, noise=0.05, n_episodes=5, n_frames=200)
    m = _shd(TemporalSEM().fit(_data(sim)), sim.graph)
    # 1,000 noisy frames, 9 true edges; measured SHD 1, 1, 2, 0, 1, 0 on seeds 0-5 (mostly a missed coupling)
    assert m["shd"] <= 2 and m["edge_precision"] >= 0.9


def test_targets_name_the_commanded_joint():
    sim = simulate_robot(seed=0)
    model = TemporalSEM().fit(_data(sim))
    targets = model.get_targets()
    assert list(targets.columns) == ["intervention", "latent", "score", "is_target"]
    predicted = tl.predicted_targets(targets)
    singles = [lab for lab in model.intervention_names if "+" not in lab]
    assert len(singles) == 6 and all(predicted[lab] == lab for lab in singles)
    n_marked = targets.groupby("intervention", sort=False)["is_target"].sum()
    assert all(n_marked[lab] == len(lab.split("+")) for lab in model.intervention_names)  # one per target


def test_event_shift_switches_the_targeted_mechanism():
    """A flag that pushes joint_1's velocity by +0.2 rad/frame is learned as joint_1's mechanism shift."""
    rng = np.random.default_rng(0)
    rows = []
    for e in range(10):
        v, z = np.zeros(2), np.zeros(2)
        flags = rng.random(200) < 0.05
        for f in range(200):
            rows.append(
                {"episode": str(e), "frame": f, "timestamp": f / 30, "joint_0": z[0], "joint_1": z[1], "push": flags[f]}
            )
            v = 0.8 * v + rng.normal(scale=0.02, size=2) + np.array([0.0, 0.2]) * flags[f]
            z = z + v
    frame = pd.DataFrame(rows)
    var = pd.DataFrame({"kind": ["state", "state", "event"]}, index=["joint_0", "joint_1", "push"])
    adata = ad.AnnData(
        frame[["joint_0", "joint_1", "push"]].to_numpy(np.float32),
        obs=frame[["episode", "frame", "timestamp"]].set_index(frame["episode"] + "_" + frame["frame"].astype(str)),
        var=var,
    )
    labels = pp.robot_interventions(adata, events={"push": "joint_1"})
    data = CRLData.from_artifacts(adata[:, ["joint_0", "joint_1"]], labels)
    model = TemporalSEM(actions=[]).fit(data)
    shift = dict(zip(model.latent_names, model.shift.numpy(), strict=True))
    sd = dict(zip(model.latent_names, model.velocity_sd.numpy(), strict=True))
    assert shift["joint_1"] * sd["joint_1"] == pytest.approx(0.2, rel=0.15)  # back in rad/frame
    assert abs(shift["joint_0"]) * sd["joint_0"] < 0.02
    assert tl.predicted_targets(model.get_targets())["joint_1"] == "joint_1"


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_mujoco_arm_graph_with_a_pushed_gate_and_a_light(tmp_path, seed):
    """MuJoCo arm, written as LeRobot v2.1 and read back: commands drive their joints, the base
    pushes the gate (shoulder_yaw -> gate), the gate switches the light (gate -> light)."""
    pytest.importorskip("mujoco")
    sim = simulate_arm(seed=seed, n_episodes=10, n_frames=200)
    write_robot_simulation(sim, out_dir=tmp_path / "arm", out_truth_dir=tmp_path / "truth")
    adata = read_lerobot(tmp_path / "arm")
    assert list(adata.var_names[adata.var["kind"] == "state"]) == [*ARM_JOINTS, "gate", "light"]
    data = CRLData.from_artifacts(adata, pp.robot_interventions(adata))
    # n_lags=1: on these short logs (2,000 frames) BIC gives the gate 3 lags, and the pusher's weak
    # contact edge spread over 3 lags falls below the group penalty (seeds 0 and 4); the 6,000-frame
    # default arm keeps it at the default n_lags (benchmarks/false_edges.py, docs/benchmarks.md)
    model = TemporalSEM(n_lags=1).fit(data)
    assert _strongest_action_hits(model) == 4  # gate and light are commanded by nobody
    edges = set(map(tuple, _edges(model)[["source", "target"]].to_numpy()))
    assert {("shoulder_yaw", "gate"), ("gate", "light")} <= edges
    # without a threshold the arm's small inertial couplings (pitch <-> elbow, weights < 0.03) count
    # as extra edges: measured SHD 1, 2, 2, 1, 2, 3 on seeds 0-5
    assert _shd(model, sim.graph)["shd"] <= 3
    # edge_threshold=0.02 (config/robot_sim.yaml) removes them; true edges weigh >= 0.026.
    # Measured SHD 0 on seeds 0-4 and 6-8, 1 on seed 9 (action.shoulder_yaw -> light), 2 on seed 5
    # (seed 4: 1 since the penalty went from 0.5 to 0.75 of the universal threshold, the pusher's
    # edge weighing 0.002 there)
    shd = _shd(TemporalSEM(n_lags=1, edge_threshold=0.02).fit(data), sim.graph)["shd"]
    assert shd <= {4: 1, 5: 2}.get(seed, 0)


# ------------------------------------------------------------------ interface, checkpoints, errors


def test_registered_deterministic_and_checkpoint_round_trip(tmp_path):
    assert get_model("temporal") is TemporalSEM
    data = _data(simulate_robot(seed=1, n_episodes=6, n_frames=120))
    model = TemporalSEM(n_action_lags=6).fit(data)
    again = TemporalSEM(n_action_lags=6).fit(data, seed=5)
    pd.testing.assert_frame_equal(model.get_adjacency(), again.get_adjacency())
    model.save(tmp_path)
    torch.load(tmp_path / "model.pt", weights_only=True)
    loaded = load_model(tmp_path)
    pd.testing.assert_frame_equal(loaded.get_adjacency(), model.get_adjacency())
    pd.testing.assert_frame_equal(loaded.get_targets(), model.get_targets())
    latents = loaded.get_latent_representation(data)
    assert list(latents.columns) == ["sample_id", *model.latent_names]
    adjacency = model.get_adjacency()
    assert (
        list(adjacency.index[:6]) == [f"action.joint_{j}" for j in range(6)]
        and list(adjacency.columns) == model.latent_names
    )
    assert (np.diag(adjacency.loc[model.latent_names].to_numpy()) == 0).all()  # own lag is assumed, not an edge
    assert (np.diag(TemporalSEM(self_loops=True).fit(data).get_adjacency().loc[model.latent_names]) != 0).all()


def test_errors_name_what_is_missing():
    data = _data(simulate_robot(seed=0, n_episodes=2, n_frames=40))
    bare = CRLData(**{**data.__dict__, "obs": None})
    with pytest.raises(ModelError, match="needs CRLData.obs with 'episode' and 'frame'"):
        TemporalSEM().fit(bare)
    with pytest.raises(ModelError, match=r"feature\(s\) \['action.knee'\] not in the data"):
        TemporalSEM(actions=["action.knee"]).fit(data)
    shuffled = data.subset(np.random.default_rng(0).permutation(data.n_cells))
    with pytest.raises(ModelError, match="complete windows"):
        TemporalSEM().fit(shuffled)  # rows out of time order: no contiguous windows left
    with pytest.raises(ModelError, match="alpha="):
        TemporalSEM(alpha=-1.0).fit(data)


def test_subset_carries_obs_and_episode_bootstrap_keeps_series_whole():
    data = _data(simulate_robot(seed=0, n_episodes=4, n_frames=30))
    mask = data.obs["episode"].to_numpy() == "2"
    part = data.subset(mask)
    assert part.obs["episode"].eq("2").all() and part.obs["frame"].tolist() == list(range(30))
    rows = tl.bootstrap_episodes(data, np.random.default_rng(3))
    assert np.array_equal(rows, tl.bootstrap_rows(data, np.random.default_rng(3)))  # time series: by episode
    boot = data.subset(rows)
    assert len(rows) == data.n_cells
    starts = np.flatnonzero(boot.obs["frame"].to_numpy() == 0)
    assert len(starts) == 4 and all(boot.obs["frame"].iloc[s : s + 30].tolist() == list(range(30)) for s in starts)


def test_recover_graph_with_episode_bootstrap(tmp_path):
    """recover_graph refits on resampled rows; time series are resampled by whole episodes."""
    sim = simulate_robot(seed=0, n_episodes=10, n_frames=200)
    data = _data(sim)
    edges = tl.recover_graph(TemporalSEM(n_action_lags=6).fit(data), data, n_refits=5, seed=0)
    write_table(edges, tmp_path / "graph.parquet", "graph")
    truth = set(zip(sim.graph["source"], sim.graph["target"], strict=True))
    stable = edges[edges["stability"] >= 0.8]
    assert set(zip(stable["source"], stable["target"], strict=True)) == truth


# ------------------------------------------------------------------ artifacts end to end


def test_simulated_lerobot_through_the_stage_artifacts(tmp_path):
    """simulate -> LeRobot v2.1 -> ingest -> labels -> preprocess -> anchors -> train -> contract tables."""
    from crl_pipe import pipeline

    sim = simulate_robot(seed=2, n_episodes=8, n_frames=150)
    write_robot_simulation(sim, out_dir=tmp_path / "lerobot", out_truth_dir=tmp_path / "truth")
    pipeline.ingest(
        path=tmp_path / "lerobot", out_h5ad=tmp_path / "ingested.h5ad", out_qc=tmp_path / "qc.parquet", format="lerobot"
    )
    ingested = read_h5ad(tmp_path / "ingested.h5ad")
    assert ingested.uns["crl_pipe"]["params"]["format"] == "lerobot"
    write_table(pp.robot_interventions(ingested), tmp_path / "interventions.parquet", "interventions")
    labels = read_table(tmp_path / "interventions.parquet", "interventions")
    preprocessed = pp.preprocess_robot(ingested, labels)
    assert list(preprocessed.obs.columns[:3]) == ["episode", "frame", "timestamp"] and preprocessed.n_vars == 12
    write_h5ad(preprocessed, tmp_path / "preprocessed.h5ad")
    write_table(pp.robot_anchors(preprocessed), tmp_path / "anchors.parquet", "anchors")
    data = CRLData.from_artifacts(
        read_h5ad(tmp_path / "preprocessed.h5ad"), labels, read_table(tmp_path / "anchors.parquet", "anchors")
    )
    assert data.obs is not None and list(data.obs.columns) == ["episode", "frame", "timestamp"]
    model = tl.train(data, model="temporal", params={"n_action_lags": 6})
    write_table(model.get_latent_representation(data), tmp_path / "latents.parquet", "latents")
    write_table(model.get_targets(), tmp_path / "targets.parquet", "targets")
    write_table(model.get_loadings(), tmp_path / "loadings.parquet", "loadings")
    write_table(model.history, tmp_path / "training.parquet", "training")
    truth = read_table(tmp_path / "truth" / "graph.parquet", "graph")
    assert _shd(model, truth)["shd"] == 0


# ------------------------------------------------------------------ THE G1 TEST: real teleoperation logs


def test_g1_action_j_is_the_strongest_cause_of_state_j():
    """Unitree G1, 100 teleoperated episodes: action_j -> state_j should dominate each joint's causes."""
    start = time.perf_counter()
    adata = read_lerobot(G1)
    data = CRLData.from_artifacts(adata, pp.robot_interventions(adata))
    model = TemporalSEM().fit(data)
    hits = _strongest_action_hits(model)
    seconds = time.perf_counter() - start
    print(f"G1: action_j strongest cause of state_j for {hits}/26 joints ({seconds:.1f} s read + label + fit)")
    assert len(model.latent_names) == 26 and len(model.action_names) == 26
    assert hits >= 22  # measured: 26/26
