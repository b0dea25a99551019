"""Instantaneous (lag-0) edges of the ``temporal`` model, the ``lag`` column of the graph artifact,
and the simulators' within-frame effects."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crl_pipe.simulate._robot as robot_sim
from crl_pipe import pp, tl
from crl_pipe.io import read_table, write_graphml, write_table
from crl_pipe.models import CRLData, CRLModel, TemporalSEM, load_model
from crl_pipe.simulate import simulate_arm, simulate_robot
from crl_pipe.tl._evaluate import graph_metrics


def _data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))


def _metrics(edges: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    nodes = set(edges["source"]) | set(edges["target"]) | set(truth["source"]) | set(truth["target"])
    return graph_metrics(edges, truth, {n: n for n in nodes})  # robot nodes carry their names


def _pairs(edges: pd.DataFrame, lag0: bool) -> set[tuple[str, str]]:
    part = edges[(edges["lag"] == 0) == lag0]
    return set(zip(part["source"], part["target"], strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instantaneous_coupling_recovered_with_its_direction(seed):
    """6 joints, 3 couplings of which the first acts within the frame: it comes back as a lag-0 edge
    in the true direction, the others as lagged edges, the commands at their actuator delay."""
    sim = simulate_robot(seed=seed, n_instantaneous=1)
    edges = TemporalSEM(instantaneous=True).fit(_data(sim)).get_edges()
    truth = sim.graph
    assert _pairs(edges, lag0=True) == _pairs(truth, lag0=True)  # measured: exact on seeds 0-3
    assert _pairs(edges, lag0=False) == _pairs(truth, lag0=False)
    actions = edges[edges["source"].str.startswith("action.")]
    assert (actions["lag"] == 3).all()  # delay 2 + the frame the command needs to show: truth's lag
    m = _metrics(edges, truth)
    assert m["shd"] == 0 and m["instantaneous_recall"] == 1 and m["instantaneous_precision"] == 1


def test_all_instantaneous_and_none_spurious():
    """All couplings within the frame: all oriented right (measured on seeds 0-7); none: no lag-0
    edge at all, and the same graph as without the option (measured on seeds 0-5)."""
    sim = simulate_robot(seed=4, n_instantaneous=3)
    edges = TemporalSEM(instantaneous=True).fit(_data(sim)).get_edges()
    assert _pairs(edges, lag0=True) == _pairs(sim.graph, lag0=True)
    sim = simulate_robot(seed=5)
    data = _data(sim)
    edges = TemporalSEM(instantaneous=True).fit(data).get_edges()
    assert not (edges["lag"] == 0).any()
    # the same edges and lags; weights within 1% (the universal penalty also counts the lag-0 inputs)
    pd.testing.assert_frame_equal(edges, TemporalSEM().fit(data).get_edges(), rtol=0.01)


def test_within_frame_feedback_cycle_is_reported_acyclic(monkeypatch):
    """A true within-frame cycle 0 -> 1 -> 2 -> 0 (feedback): the lag-0 graph must still be a DAG;
    two of the three links come back as lag-0 edges, the third as a lagged one (measured, seeds 0-5)."""
    draw = robot_sim._coupling

    def cycle(rng, n, n_edges, weight):
        draw(rng, n, n_edges, weight)  # same random stream as the default
        edges = [(0, 1, weight), (1, 2, weight), (2, 0, weight)]
        C = np.zeros((n, n))
        for k, j, w in edges:
            C[k, j] = w
        return C, edges

    monkeypatch.setattr(robot_sim, "_coupling", cycle)
    sim = robot_sim.simulate_robot(seed=0, n_instantaneous=3, coupling=0.15)  # stable feedback gain
    edges = TemporalSEM(instantaneous=True).fit(_data(sim)).get_edges()
    edges = edges[~edges["source"].str.startswith("action.")]
    lag0 = _pairs(edges, lag0=True)
    assert nx.is_directed_acyclic_graph(nx.DiGraph(list(lag0)))
    cycle_pairs = {("joint_0", "joint_1"), ("joint_1", "joint_2"), ("joint_2", "joint_0")}
    assert len(lag0) == 2 and lag0 <= cycle_pairs
    assert _pairs(edges, lag0=False) | lag0 == cycle_pairs


@pytest.mark.parametrize("seed", [0, 3])
def test_mujoco_arm_light_wired_to_the_switch(seed):
    """light_delay=0: gate -> light is recovered as lag 0 (measured on seeds 0-3, 5, 6, 8, 9 of 10;
    on 4 and 7 only its lagged stand-in); the pusher's contact acts within the frame too."""
    pytest.importorskip("mujoco")
    sim = simulate_arm(seed=seed, n_episodes=10, n_frames=200, light_delay=0)
    truth = sim.graph.set_index(["source", "target"])["lag"]
    assert truth[("gate", "light")] == 0 and truth[("shoulder_yaw", "gate")] == 0
    assert truth[("action.elbow", "elbow")] == 1
    # n_lags=1 as in test_temporal's arm test: BIC's higher orders dilute the weak contact edge on short logs
    edges = TemporalSEM(instantaneous=True, n_lags=1, edge_threshold=0.02).fit(_data(sim)).get_edges()
    assert _pairs(edges, lag0=True) == {("shoulder_yaw", "gate"), ("gate", "light")}
    m = _metrics(edges, sim.graph)
    assert m["shd"] == 0 and m["instantaneous_recall"] == 1 and m["instantaneous_precision"] == 1


def test_mujoco_arm_delayed_light_gets_no_instantaneous_edge():
    """light_delay=1 (the default): the light never shows as a lag-0 child (measured, seeds 0-9)."""
    pytest.importorskip("mujoco")
    sim = simulate_arm(seed=2, n_episodes=10, n_frames=200)
    assert sim.graph.set_index(["source", "target"])["lag"][("gate", "light")] == 1
    edges = TemporalSEM(instantaneous=True, n_lags=1, edge_threshold=0.02).fit(_data(sim)).get_edges()
    assert _pairs(edges, lag0=True) == {("shoulder_yaw", "gate")}
    assert ("gate", "light") in _pairs(edges, lag0=False)


def test_graph_artifact_has_lag_and_stability_per_kind(tmp_path):
    sim = simulate_robot(seed=1, n_instantaneous=1, n_episodes=8, n_frames=200)
    data = _data(sim)
    model = TemporalSEM(instantaneous=True, n_action_lags=6).fit(data)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.get_edges(), model.get_edges())
    edges = tl.recover_graph(loaded, data, n_refits=3, seed=0)
    assert list(edges.columns) == tl.GRAPH_COLUMNS  # the old five first, then the error control of issue 16
    assert tl.GRAPH_COLUMNS[:5] == ["source", "target", "weight", "stability", "lag"]
    write_table(edges, tmp_path / "graph.parquet", "graph")
    back = read_table(tmp_path / "graph.parquet", "graph")
    assert back["lag"].dtype == np.int64
    stable = back[back["stability"] == 1.0]
    assert _pairs(stable, lag0=True) == _pairs(sim.graph, lag0=True)
    assert _pairs(stable, lag0=False) == _pairs(sim.graph, lag0=False)
    metrics = tl.evaluate(
        graph=back, targets=model.get_targets(), latents=model.get_latent_representation(data), true_graph=sim.graph
    ).set_index("metric")["value"]
    assert metrics["shd"] == 0 and metrics["instantaneous_recall"] == 1


def test_models_without_time_and_older_artifacts_have_a_null_lag(tmp_path):
    class Static(CRLModel):  # any model with an adjacency and no time axis (its edges: CRLModel.get_edges)
        def fit(self, data, *, seed=0):
            return self

        def get_adjacency(self):
            return pd.DataFrame([[0.0, 0.5], [0.0, 0.0]], index=["a", "b"], columns=["a", "b"])

        def get_latent_representation(self, data):
            raise NotImplementedError  # not used by recover_graph

        get_targets = get_loadings = get_latent_representation

    edges = tl.recover_graph(Static(), data=None, n_refits=0)
    assert edges[["source", "target"]].values.tolist() == [["a", "b"]] and edges["lag"].isna().all()
    write_table(edges, tmp_path / "static.parquet", "graph")
    write_graphml(edges, tmp_path / "static.graphml")  # a null lag is left out, not written as NaN
    assert "lag" not in nx.read_graphml(tmp_path / "static.graphml").edges["a", "b"]
    assert pq.read_schema(tmp_path / "static.parquet").field("lag").type == pa.int64()
    old = pa.table({"source": ["a"], "target": ["b"], "weight": [0.5], "stability": [1.0]})
    pq.write_table(old, tmp_path / "old.parquet")  # written before graphs had a lag
    assert read_table(tmp_path / "old.parquet", "graph")["lag"].isna().all()
    truth = pd.DataFrame({"source": ["a"], "target": ["b"], "lag": [0]})
    assert "instantaneous_recall" not in _metrics(edges, truth)  # no lags predicted: nothing to score
