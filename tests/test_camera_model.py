"""The MuJoCo arm seen through a camera, and the ``camera`` model that learns its causal variables from frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crl_pipe import ModelError, pp
from crl_pipe.models import CameraSEM, CRLData, load_model
from crl_pipe.models.camera import command_mask
from crl_pipe.simulate import ARM_JOINTS, simulate_arm
from crl_pipe.simulate._camera import gl_problem
from crl_pipe.tl._evaluate import evaluate, r2_matrix

pytest.importorskip("mujoco")
_NO_GL = gl_problem()
pytestmark = pytest.mark.skipif(_NO_GL is not None, reason=f"no offscreen rendering: {_NO_GL}")


def _data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata, unmeasured=ARM_JOINTS))


@pytest.fixture(scope="module")
def arm():
    return simulate_arm(n_episodes=8, n_frames=150, observation="camera", image_size=32, seed=0)


def test_camera_logs_hold_frames_and_no_state(arm):
    frames = arm.frames["front"]
    assert frames.shape == (1200, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(arm.adata.obsm["frames.front"], frames)
    assert list(arm.adata.var["kind"]) == ["action"] * 4  # the camera is the only view of the arm
    state = simulate_arm(n_episodes=8, n_frames=150, seed=0)
    pd.testing.assert_frame_equal(arm.latents, state.latents)  # same physics, same truth
    pd.testing.assert_frame_equal(arm.graph, state.graph)
    # the frames show the variables: the lamp lights up with the light, and the picture changes with the joints
    light = arm.latents["light"].to_numpy() > 0.5
    assert 0 < light.sum() < len(light)
    brightness = frames.reshape(len(frames), -1).mean(axis=1)
    assert brightness[light].mean() > brightness[~light].mean() + 3
    moved = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))
    still = np.abs(np.diff(arm.latents[list(ARM_JOINTS)].to_numpy(), axis=0)).sum(axis=1) < 1e-4
    assert moved[~still].mean() > 5 * moved[still].mean()


def test_scenes_differ_but_render_deterministically():
    one = simulate_arm(n_episodes=1, n_frames=20, observation="camera", image_size=24, seed=1)
    again = simulate_arm(n_episodes=1, n_frames=20, observation="camera", image_size=24, seed=1)
    np.testing.assert_array_equal(one.frames["front"], again.frames["front"])
    other = simulate_arm(n_episodes=1, n_frames=20, observation="camera", image_size=24, scene=3, seed=1)
    assert np.abs(other.frames["front"].astype(int) - one.frames["front"]).mean() > 10
    pd.testing.assert_frame_equal(other.latents, one.latents)


def test_command_mask_ignores_a_coincident_command():
    # pitch (action 0) changes on 30 frames labelled pitch and once on a frame also labelled wrist
    n = 1000
    da, shift = np.zeros((n, 2)), np.zeros((n, 2))
    pitch, wrist = np.arange(0, 600, 20), np.arange(610, 990, 20)
    da[pitch, 0], shift[pitch, 0] = 1.0, 1.0
    da[wrist, 1], shift[wrist, 1] = 1.0, 1.0
    da[wrist[0], 0], shift[wrist[0], 0] = 1.0, 1.0  # a frame labelled pitch+wrist
    mask = command_mask(da, shift, 2)
    assert mask.tolist() == [[True, False], [False, True]]


@pytest.fixture(scope="module")
def fitted(arm):
    data = _data(arm)
    torch.set_num_threads(1)
    return data, CameraSEM(n_latents=6, steps=STEPS, width=16).fit(data, seed=0)


#: Training steps of the recovery test: a fraction of the default (600), to keep the test short.
STEPS = 400


def test_latents_named_after_the_commands_recover_the_joints(arm, fitted):
    data, model = fitted
    assert model.latent_names == [*sorted(ARM_JOINTS), "z1", "z2"] and model.identified() == sorted(ARM_JOINTS)
    latents = model.get_latent_representation(data)
    r2 = r2_matrix(latents, arm.latents)
    diag = {j: float(r2.at[j, j]) for j in ARM_JOINTS}
    assert min(diag.values()) > 0.7, diag
    assert diag["shoulder_yaw"] > 0.95 and diag["shoulder_pitch"] > 0.95, diag
    edges = model.get_edges()
    graph = edges.assign(stability=1.0)
    true_targets = pd.DataFrame({"intervention": list(ARM_JOINTS), "program": list(ARM_JOINTS)})
    m = evaluate(
        graph=graph, targets=model.get_targets(), latents=latents, true_graph=arm.graph, true_targets=true_targets,
        true_latents=arm.latents,
    ).set_index("metric")["value"]  # fmt: skip
    assert m["target_accuracy"] == 1.0 and m["n_mapped_latents"] == 4
    assert {(f"action.{j}", j) for j in ARM_JOINTS} <= set(zip(edges["source"], edges["target"], strict=True))
    # the report's pictures: each latent's extreme frames, and what the decoder draws
    frames, values, ids = model.exemplar_frames()
    assert frames.shape == (6, 2, 3, 32, 32, 3) and len(ids) == 36
    assert (values[:, 0] < values[:, 1]).all()
    drawn = model.render(np.zeros((2, 6)))["front"]
    assert drawn.shape == (2, 32, 32, 3) and drawn.dtype == np.uint8
    assert set(model.get_loadings()["feature"]) == {"front"}


def test_deterministic_and_checkpoint_round_trip(tmp_path):
    sim = simulate_arm(n_episodes=3, n_frames=80, observation="camera", image_size=16, seed=2)
    data = _data(sim)
    params = {"steps": 8, "batch_size": 32, "width": 4, "n_action_lags": 4}
    model = CameraSEM(**params).fit(data, seed=1)
    again = CameraSEM(**params).fit(data, seed=1)
    pd.testing.assert_frame_equal(model.get_latent_representation(data), again.get_latent_representation(data))
    model.save(tmp_path)
    torch.load(tmp_path / "model.pt", weights_only=True)
    loaded = load_model(tmp_path)
    pd.testing.assert_frame_equal(loaded.get_latent_representation(data), model.get_latent_representation(data))
    pd.testing.assert_frame_equal(loaded.get_adjacency(), model.get_adjacency())
    np.testing.assert_array_equal(loaded.exemplar_frames()[0], model.exemplar_frames()[0])
    np.testing.assert_array_equal(loaded.render(np.ones((1, 6)))["front"], model.render(np.ones((1, 6)))["front"])
    other = CameraSEM(**params).fit(data, seed=2)
    assert not np.allclose(other.get_latent_representation(data)["z1"], model.get_latent_representation(data)["z1"])


def test_camera_model_errors_name_the_problem():
    sim = simulate_arm(n_episodes=2, n_frames=60, observation="camera", image_size=16, seed=0)
    data = _data(sim)
    with pytest.raises(ModelError, match=r"camera\(s\) \['side'\] not in the data; expected some of \['front'\]"):
        CameraSEM(cameras=["side"]).fit(data)
    with pytest.raises(ModelError, match=r"94 frames with 12 frames of command history; expected at least batch_size"):
        CameraSEM(batch_size=128).fit(data)
    state = simulate_arm(n_episodes=2, n_frames=60, seed=0)
    with pytest.raises(ModelError, match=r"the data has no camera frames; expected a robot log read with"):
        CameraSEM().fit(CRLData.from_artifacts(state.adata, pp.robot_interventions(state.adata)))
    with pytest.raises(ModelError, match=r"warm_up=0\.9"):
        CameraSEM(warm_up=0.9)
