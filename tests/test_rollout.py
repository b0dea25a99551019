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
