"""Arm logs seen through sensors that mix the causal variables, and ``temporal``'s learned encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crl_pipe import ModelError, pp
from crl_pipe.io import read_lerobot
from crl_pipe.models import CRLData, TemporalSEM, load_model
from crl_pipe.simulate import ARM_JOINTS, simulate_arm, write_robot_simulation
from crl_pipe.tl._evaluate import evaluate, r2_matrix

pytest.importorskip("mujoco")

VARIABLES = [*ARM_JOINTS, "gate", "light"]


def _data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata, unmeasured=ARM_JOINTS))


@pytest.fixture(scope="module")
def arm():
    return simulate_arm(n_episodes=10, n_frames=200, observation="sensors", seed=0)


@pytest.fixture(scope="module")
def fitted(arm):
    data = _data(arm)
    return data, TemporalSEM(sensors="sensor.", n_latents=6, edge_threshold=0.1).fit(data, seed=0)


def test_sensors_mix_the_causal_variables(arm, tmp_path):
    state = simulate_arm(n_episodes=10, n_frames=200, seed=0)
    pd.testing.assert_frame_equal(arm.latents, state.latents)  # same physics, same truth
    pd.testing.assert_frame_equal(arm.graph, state.graph)
    sensors = [v for v in arm.adata.var_names if v.startswith("sensor.")]
    assert len(sensors) == 16 and not set(VARIABLES) & set(arm.adata.var_names)
    X = arm.adata[:, sensors].to_df().assign(sample_id=arm.adata.obs_names.to_numpy())
    r2 = r2_matrix(X, arm.latents)
    # measured (seed 0): 14 of 16 channels below 0.9; the two above are the gate's tip seen from the
    # upper arm (gate_v ~ yaw while the gate is shut: 0.93; gate_w ~ pitch: 0.94)
    assert (r2.max(axis=1) < 0.9).sum() >= 13
    assert (r2.max(axis=1) > 0.3).sum() >= 13  # ... and they do carry the variables
    # the wrist shows in no channel on its own (R² <= 0.13 each, seed 0): only a nonlinear mix recovers it
    assert r2["wrist"].max() < 0.3
    # through LeRobot v2.1 and back: the sensor vector is split into named channels
    write_robot_simulation(arm, out_dir=tmp_path / "lerobot", out_truth_dir=tmp_path / "truth")
    back = read_lerobot(tmp_path / "lerobot")
    assert list(back.var_names[back.var["kind"] == "state"]) == sensors


def test_unmeasured_joints_are_the_intervention_targets(arm):
    labels = pp.robot_interventions(arm.adata, unmeasured=ARM_JOINTS)
    assert set(labels.loc[~labels["is_control"], "intervention"]) >= set(ARM_JOINTS)
    with pytest.raises(Exception, match="drive no single state channel"):
        pp.robot_interventions(arm.adata)  # without unmeasured: nothing measures the joints


def test_encoder_recovers_the_commanded_joints(arm, fitted):
    data, model = fitted
    assert model.latent_names == [*sorted(ARM_JOINTS), "z1", "z2"]
    latents = model.get_latent_representation(data)
    r2 = r2_matrix(latents, arm.latents)
    # measured on simulation seeds 0-4 (10 x 200 frames, fit seed 0): R² of each joint with its own
    # latent >= 0.99, except the wrist (0.993, 0.990, 0.970, 0.977, 0.985); fit seeds 1, 2 on
    # simulation seed 0: >= 0.972
    assert min(r2.at[j, j] for j in ARM_JOINTS) > 0.95
    true_targets = pd.DataFrame({"intervention": list(ARM_JOINTS), "program": list(ARM_JOINTS)})
    adj = model.get_adjacency().stack()
    graph = adj[adj != 0].rename_axis(["source", "target"]).reset_index(name="weight")
    m = evaluate(
        graph=graph,
        targets=model.get_targets(),
        latents=latents,
        true_graph=arm.graph,
        true_targets=true_targets,
        true_latents=arm.latents,
    ).set_index("metric")["value"]
    # the joints are mapped through the labels; z1, z2 (gate, light) stay unmapped, so the true edges
    # shoulder_yaw -> gate -> light count as missed: SHD >= 2. Measured at edge_threshold 0.1, seeds
    # 0-4: SHD 3, 2, 3, 4, 3 (a spurious wrist -> elbow of weight 0.07-0.13, an action -> z edge);
    # on simulation seed 0 with fit seeds 1, 2: 2, 2
    assert m["target_accuracy"] == 1.0 and m["n_mapped_latents"] == 4
    assert m["shd"] <= 4
    edges = set(zip(graph["source"], graph["target"], strict=True))
    assert {(f"action.{j}", j) for j in ARM_JOINTS} <= edges
    # r2_diag: mean R² of the 4 joints' latents with their own joint (0.996 on seed 0, >= 0.990 on
    # seeds 0-4); r2_offdiag_max: their largest R² with another variable, the yaw latent with the gate
    # that yaw pushes (0.23 on seed 0, as between the true yaw and gate: 0.225; seeds 1-4 likewise)
    assert m["r2_diag"] > 0.98
    yaw_gate = np.corrcoef(arm.latents["shoulder_yaw"], arm.latents["gate"])[0, 1] ** 2
    assert m["r2_offdiag_max"] < yaw_gate + 0.05
    loadings = model.get_loadings()
    assert set(loadings["latent"]) == set(model.latent_names) and len(loadings) == 6 * 16


def test_encoder_deterministic_and_checkpoint_round_trip(tmp_path):
    sim = simulate_arm(n_episodes=4, n_frames=120, observation="sensors", seed=3)
    data = _data(sim)
    params = {"sensors": "sensor.", "n_latents": 5, "encoder_epochs": 60, "n_action_lags": 6}
    model = TemporalSEM(**params).fit(data, seed=1)
    again = TemporalSEM(**params).fit(data, seed=1)
    pd.testing.assert_frame_equal(model.get_latent_representation(data), again.get_latent_representation(data))
    pd.testing.assert_frame_equal(model.get_adjacency(), again.get_adjacency())
    model.save(tmp_path)
    torch.load(tmp_path / "model.pt", weights_only=True)
    loaded = load_model(tmp_path)
    pd.testing.assert_frame_equal(loaded.get_latent_representation(data), model.get_latent_representation(data))
    pd.testing.assert_frame_equal(loaded.get_adjacency(), model.get_adjacency())
    pd.testing.assert_frame_equal(loaded.get_loadings(), model.get_loadings())
    other = TemporalSEM(**params).fit(data, seed=2)
    assert not np.allclose(other.get_latent_representation(data)["z1"], model.get_latent_representation(data)["z1"])


def test_encoder_errors_name_the_problem():
    data = _data(simulate_arm(n_episodes=2, n_frames=80, observation="sensors", seed=0))
    with pytest.raises(ModelError, match=r"sensors='camera\.' matches no feature"):
        TemporalSEM(sensors="camera.").fit(data)
    with pytest.raises(ModelError, match=r"n_latents=2 but the intervention labels target 4 variables"):
        TemporalSEM(sensors="sensor.", n_latents=2).fit(data)
