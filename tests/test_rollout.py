"""Open-loop rollouts of ``temporal`` and what they answer: command steering and held-out episodes."""

from __future__ import annotations

import numpy as np
import pytest

from crl_pipe import ModelError, pp
from crl_pipe.models import CRLData, TemporalSEM, load_model
from crl_pipe.simulate import simulate_robot


def _data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))


def _exact_fit() -> tuple[TemporalSEM, CRLData]:
    """A noise-free linear robot (velocity coupling, 1-frame delay) and an unpenalised fit of its true orders."""
    sim = simulate_robot(n_joints=3, n_episodes=6, n_frames=200, noise=0.0, n_couplings=2, delay=1, seed=1)
    data = _data(sim)
    model = TemporalSEM(n_lags=1, n_action_lags=3, alpha=0.0, intervention_shift=False, max_iter=20000, tol=1e-12)
    return model.fit(data), data


def test_rollout_is_exact_on_a_noise_free_linear_system(tmp_path):
    model, data = _exact_fit()
    episode = data.obs["episode"].to_numpy() == "3"
    states, commands = data.X[episode][:, :3], data.X[episode][:, 3:]
    assert model.rollout_start == 4  # 3 command lags + 1
    predicted = model.rollout(states[: model.rollout_start], commands)
    # 200 frames open loop from 4 observed frames: the learned SEM is the simulator's
    assert np.abs(predicted - states).max() < 1e-4 * np.abs(states).max()
    model.save(tmp_path)  # the rollout coefficients travel with the checkpoint
    again = load_model(tmp_path).rollout(states[:4], commands)
    np.testing.assert_allclose(again, predicted)


def test_rollout_checks_its_start():
    model, data = _exact_fit()
    with pytest.raises(ModelError, match="expected 4 frames x 3 latents"):
        model.rollout(data.X[:2, :3], data.X[:10, 3:])


@pytest.fixture(scope="module")
def arm():
    """The MuJoCo arm, two episodes held out, and temporal fitted on the rest."""
    pytest.importorskip("mujoco")
    from crl_pipe import tl
    from crl_pipe.simulate import simulate_arm

    data = _data(simulate_arm(n_episodes=8, n_frames=200, seed=0))
    train, held = tl.split_episodes(data, {"episodes": [6, 7]})
    return TemporalSEM(n_lags=1).fit(train), train, held


def test_held_out_rollouts_beat_persistence(arm):
    from crl_pipe import tl

    model, train, held = arm
    scores = tl.score_rollouts(model, train, held)
    assert set(scores["intervention"]) == {"episode 6", "episode 7"}
    mean = scores.groupby(["predictor", "metric"])["value"].mean()
    assert mean["model", "rollout_rmse_h1"] < mean["persistence", "rollout_rmse_h1"]
    for h in (10, 30):  # the learned SEM against carrying the last state forward, in channel SDs
        assert mean["model", f"rollout_rmse_h{h}"] < 0.7 * mean["persistence", f"rollout_rmse_h{h}"]
    # the non-causal VAR (every lag of every state, in levels): behind at 10 frames here, ahead at 30
    # (the gate and the light, which no linear transition gets right; docs/benchmarks.md)
    assert mean["model", "rollout_rmse_h10"] < mean["var", "rollout_rmse_h10"]
    assert mean["model", "rollout_rmse_h30"] < 1.3 * mean["var", "rollout_rmse_h30"]
    assert (mean["persistence"] > 0).all()


def test_servoed_joints_do_not_drift_in_open_loop(arm):
    """Regression: rollouts in velocity form integrated their one-step errors, so a servoed joint drifted
    off its set-point (held-out error growing from 10 to 30 frames, 0.05-0.07 SD at 30); the rollout's
    levels (error-correction) term pulls it back, as the servo does."""
    from crl_pipe.simulate import ARM_JOINTS
    from crl_pipe.tl._rollout import _episodes

    model, train, held = arm
    r, joints = model.rollout_start, [model.latent_names.index(j) for j in ARM_JOINTS]
    sd = np.concatenate([z for z, _, _ in _episodes(model, train)]).std(axis=0)[joints]
    errors = {10: [], 30: []}
    for z, a, shift in _episodes(model, held):
        for s in range(0, len(z) - r - 30 + 1, 10):
            predicted = model.rollout(z[s : s + r], a[s : s + r + 30], shift[s : s + r + 30])
            for h in errors:
                errors[h].append((predicted[r - 1 + h, joints] - z[s + r - 1 + h, joints]) / sd)
    rmse = {h: np.sqrt(np.mean(np.square(e), axis=0)) for h, e in errors.items()}
    assert rmse[30].max() < 0.05
    assert (rmse[30] < 1.2 * rmse[10] + 0.005).all()  # bounded, not growing with the horizon


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"command": {"shoulder_yw": 0.4}},
            r"no command channel 'shoulder_yw' \(close: shoulder_yaw, .*\); expected one of shoulder_yaw",
        ),
        ({"command": {"shoulder_yaw": 0.4, "frames": 0}}, r"steer\[0\]\.command\.frames: 0; expected a whole number"),
        ({"command": {"shoulder_yaw": 0.4, "frames": -5}}, r"frames: -5; expected a whole number of frames >= 1"),
        ({"do": {"shoulder_yaw": 1.0}}, r"a robot model answers command requests only"),
        ({"command": {"elbow": 0.1}, "shift": {"gate": 1.0}}, r"command combined with 'shift'"),
    ],
)
def test_bad_command_requests_are_one_line_errors(arm, request_, message):
    from crl_pipe import ConfigError, tl

    model, train, _ = arm
    with pytest.raises(ConfigError, match=message) as err:
        tl.steer(model, request_, train, n_boot=0)
    assert "\n" not in str(err.value)


def test_held_out_episodes_are_checked(arm):
    from crl_pipe import ConfigError, tl

    _, train, _ = arm
    with pytest.raises(ConfigError, match=r"held_out: episode '42' is not in the log; expected some of \['0'"):
        tl.split_episodes(train, {"episodes": [42]})
    with pytest.raises(ConfigError, match=r"expected \{episodes: \[3, 7\]\}"):
        tl.hold_out(train, {"episode": [1]})


def test_a_screen_model_refuses_command_requests():
    from _screens import screen_and_data

    from crl_pipe import ConfigError, tl
    from crl_pipe.models import LinearSEM

    _, data = screen_and_data(n_programs=3, n_genes=40, n_control=100, cells_per_perturbation=30, seed=0)
    with pytest.raises(ConfigError, match=r"a command request needs a robot model that rolls out"):
        tl.steer(LinearSEM().fit(data), {"command": {"joint_0": 1.0}}, data, n_boot=0)


def test_arm_rollout_replays_a_simulated_episode():
    """The simulator's truth for a steering request: a given command sequence gives the episode's variables."""
    pytest.importorskip("mujoco")
    from crl_pipe.simulate import ARM_JOINTS, arm_rollout, simulate_arm

    sim = simulate_arm(n_episodes=2, n_frames=60, seed=3)
    second = (sim.adata.obs["episode"] == "1").to_numpy()
    commands = np.asarray(sim.adata[second][:, [f"action.{j}" for j in ARM_JOINTS]].X)
    np.testing.assert_allclose(arm_rollout(commands), sim.latents.iloc[60:, 1:].to_numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("steer", "message"),
    [
        (
            [{"command": {"joint_0": 1.0}}],
            "datasets.sim.steer 'command(joint_0=1,frames=30)': no model of this dataset answers it (models: linear)",
        ),
        ([{"command": {"joint_0": 1.0, "frames": 0}}], "datasets.sim.steer[0].command.frames: 0; expected a whole"),
    ],
)
def test_a_command_request_the_dataset_cannot_answer_stops_the_workflow(tmp_path, steer, message):
    import copy

    import _tiny_workflow as tiny

    config = copy.deepcopy(tiny.CONFIG)
    config["datasets"][tiny.DATASET]["steer"] = steer
    tiny.write_config(tmp_path, config)
    proc = tiny.run_snakemake(tmp_path, "--dry-run", "--quiet")
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
