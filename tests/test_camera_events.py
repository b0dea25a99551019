"""``camera`` with an event as the intervention: a variable that no command moves but an event flag
switches is learned from the frames through its events (synthetic frames, no renderer needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from crl_pipe import pp
from crl_pipe.io._camera import add_frames
from crl_pipe.io._frames import frames_to_anndata
from crl_pipe.models import CameraSEM, CRLData


def _switch_and_slider(n_episodes: int = 6, n_frames: int = 120, seed: int = 0):
    """A slider that tracks a commanded set-point (left half of the frame: a bar at its height) and a
    lamp that an event flag switches on or off (right half: its brightness); 16 x 16 RGB frames."""
    rng = np.random.default_rng(seed)
    rows, frames, truth = [], [], []
    for e in range(n_episodes):
        setpoint = np.repeat(rng.uniform(-1, 1, size=n_frames // 20), 20)
        slider = np.zeros(n_frames)
        for t in range(1, n_frames):  # a first-order servo
            slider[t] = slider[t - 1] + 0.3 * (setpoint[t - 1] - slider[t - 1])
        flips = rng.random(n_frames) < 0.05
        flips[0] = False
        lamp = np.cumsum(flips) % 2
        for t in range(n_frames):
            image = np.full((16, 16, 3), 40, dtype=np.uint8)
            y = int(round(7.5 + 6 * slider[t]))
            image[y, :8] = (230, 230, 230)
            image[:, 8:, 1] = 60 + 170 * lamp[t]
            frames.append(image)
            rows.append((str(e), t, t / 10, setpoint[t], float(flips[t])))
            truth.append((slider[t], lamp[t]))
    obs = pd.DataFrame([r[:3] for r in rows], columns=["episode", "frame", "timestamp"])
    X = np.array([r[3:] for r in rows])
    var = pd.DataFrame(
        {"kind": ["action", "event"], "channel": ["slider", "switch"]}, index=["action.slider", "switch"]
    )
    adata = frames_to_anndata(X, obs, var, path="<test>")
    add_frames(adata, "front", np.stack(frames), source="synthetic")
    return adata, np.array(truth)


def test_an_event_identifies_the_variable_it_switches():
    adata, truth = _switch_and_slider()
    labels = pp.robot_interventions(adata, events={"switch": "lamp"}, unmeasured=["slider", "lamp"])
    assert set(labels["intervention"]) >= {"slider", "lamp", "observational"}
    data = CRLData.from_artifacts(adata, labels)
    torch.set_num_threads(1)
    model = CameraSEM(n_latents=2, steps=200, batch_size=64, width=8, n_action_lags=4).fit(data, seed=0)
    assert model.latent_names == ["lamp", "slider"] and model.identified() == ["lamp", "slider"]
    z = model.get_latent_representation(data)
    r2 = {name: np.corrcoef(z[name], truth[:, k])[0, 1] ** 2 for k, name in enumerate(["slider", "lamp"])}
    # the lamp's latent moves at its events and holds still between them: the lamp, not the slider
    assert r2["lamp"] > 0.9 and r2["slider"] > 0.9, r2
    assert np.corrcoef(z["lamp"], truth[:, 0])[0, 1] ** 2 < 0.2
