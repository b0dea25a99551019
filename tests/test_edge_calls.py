"""Error control of the graph (issue 16): stability selection on halves, confidence calls, noise channels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crl_pipe import pp, tl
from crl_pipe.io import read_table, write_table
from crl_pipe.models import CRLData, LinearSEM, TemporalSEM
from crl_pipe.simulate import screen_to_crl_data, simulate_robot, simulate_screen
from crl_pipe.tl._graph import EdgeCalls, _call, _resampling_columns


def _robot_data(sim) -> CRLData:
    return CRLData.from_artifacts(sim.adata, pp.robot_interventions(sim.adata))


def _pairs(edges: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(edges["source"].astype(str), edges["target"].astype(str), strict=True))


def test_complementary_halves_are_disjoint_and_keep_groups_and_episodes():
    sim = simulate_robot(seed=0, n_episodes=5, n_frames=50)
    data = _robot_data(sim)
    a, b = tl.complementary_halves(data, np.random.default_rng(0))
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == data.X.shape[0]
    episodes = data.obs["episode"].to_numpy()
    assert set(episodes[a]).isdisjoint(episodes[b]) and len(set(episodes[a])) == 3  # whole episodes, 3 + 2
    for half in (a, b):  # each episode stays in time order
        frames = data.obs["frame"].to_numpy()[half]
        assert (np.diff(frames) == 1).sum() == len(half) - len(set(episodes[half]))
    screen = simulate_screen(n_programs=3, n_control=101, cells_per_perturbation=21, seed=0)
    cells = screen_to_crl_data(screen, with_counts=False)
    a, b = tl.complementary_halves(cells, np.random.default_rng(0))
    assert len(np.intersect1d(a, b)) == 0
    per_group = pd.Series(cells.intervention[a]).value_counts()
    assert (
        per_group["non-targeting"] == 51 and (per_group.drop("non-targeting") == 11).all()
    )  # half of each group, rounded up


def test_calls_say_why_an_edge_is_tentative():
    """Stability, orientation and weight SE from made-up refits; each reason where it applies."""
    full = pd.DataFrame(
        {
            "source": ["a", "b", "c", "d"],
            "target": ["x", "y", "z", "w"],
            "weight": [1.0, 0.5, 0.01, 0.8],
            "lag": pd.array([pd.NA] * 4, dtype="Int64"),
        }
    )

    def refit(rows):
        return pd.DataFrame(rows, columns=["source", "target", "weight"]).assign(
            lag=pd.array([pd.NA] * len(rows), dtype="Int64")
        )

    # a -> x always; b -> y in 2 of 10; z -> c (reversed) in 4 of 10 and c -> z in 6; d -> w always
    refits = [
        refit(
            [("a", "x", 1.0), ("d", "w", 0.8)]
            + ([("b", "y", 0.5)] if r < 2 else [])
            + ([("c", "z", 0.01)] if r < 6 else [("z", "c", 0.01)])
        )
        for r in range(10)
    ]
    table = _call(_resampling_columns(full, refits, n_possible=20), EdgeCalls(), resampled=True).set_index("source")
    assert table.loc["a", "stability"] == 1.0 and table.loc["a", "confidence"] == "confident"
    assert table.loc["a", "reason"] == ""
    assert table.loc["b", "reason"].startswith("unstable: in 20% of refits")
    assert table.loc["c", "orientation"] == pytest.approx(0.6) and table.loc["c", "reverse_stability"] == 0.4
    assert "orientation undecided: this way in 60% of refits that have the pair" in table.loc["c", "reason"]
    assert table.loc["d", "confidence"] == "confident" and np.isinf(table.loc["d", "weight_z"])  # no spread
    # q = 3.2 edges per refit of 20 possible: bound q^2 / ((2 pi - 1) p) = 0.512 at pi = 1; none at pi <= 0.5
    assert table.loc["a", "false_edges_bound"] == pytest.approx(0.512) and np.isnan(table.loc["b", "false_edges_bound"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_channels_get_no_confident_edge(seed):
    """Two channels that nothing drives (white noise, a random walk): no confident edge touches them,
    while every true edge of the robot is confident (benchmarks/false_edges.py: 20 seeds in docs)."""
    sim = simulate_robot(seed=seed, noise_channels=2, n_episodes=12, n_frames=200)
    data = _robot_data(sim)
    edges = tl.recover_graph(TemporalSEM(n_action_lags=6).fit(data), data, n_refits=10, seed=seed)
    confident = edges[edges["confidence"] == "confident"]
    noise = {"noise_0", "noise_1"}
    assert not (confident["source"].isin(noise) | confident["target"].isin(noise)).any()
    assert _pairs(confident) == _pairs(sim.graph)


@pytest.mark.parametrize("seed", [0, 1])
def test_isolated_program_gets_no_confident_edge(seed, tmp_path):
    """A program with no parent and no child (``isolated_programs=1``) in a screen: no confident edge."""
    screen = simulate_screen(n_programs=5, n_control=1000, cells_per_perturbation=200, isolated_programs=1, seed=seed)
    data = screen_to_crl_data(screen, with_counts=False)
    edges = tl.recover_graph(LinearSEM().fit(data), data, n_refits=10, seed=seed)
    confident = edges[edges["confidence"] == "confident"]
    assert not (confident["source"].eq("P5") | confident["target"].eq("P5")).any()
    assert _pairs(confident) == _pairs(screen.graph)
    write_table(edges, tmp_path / "graph.parquet", "graph")  # the artifact keeps every column
    back = read_table(tmp_path / "graph.parquet", "graph")
    assert list(back.columns) == tl.GRAPH_COLUMNS and back["confidence"].isin(["confident", "tentative"]).all()


@pytest.mark.parametrize("name", ["sparse_vae", "causal_vae"])
def test_deep_refits_start_from_the_fitted_weights(name):
    """A warm refit starts from half the fit's weights and trains 15 % of its epochs; ``refit_epochs: null`` trains
    from scratch (benchmarks/warm_refits.py measures the time and compares the stabilities)."""
    torch = pytest.importorskip("torch")
    screen = simulate_screen(n_programs=3, n_control=300, cells_per_perturbation=60, seed=0)
    data = screen_to_crl_data(screen, with_counts=False)
    model = tl.train(data, model=name, params={"epochs": 20, "patience": 0, "threads": 1}, seed=0)
    assert int(model.trained_epochs) == 20 and model._refit_epochs() == 3
    half = data.subset(tl.complementary_halves(data, np.random.default_rng(0))[0])
    warm = model.refit(half, seed=1)
    assert int(warm.trained_epochs) == 3 and warm.params["epochs"] == 3
    start, after = model.module.state_dict()["W"], warm.module.state_dict()["W"]  # decoder loadings
    # half the fitted weights, half a fresh start (REFIT_SHRINK): between the fit and a fresh training
    assert 0.5 < torch.corrcoef(torch.stack([start.ravel(), after.ravel()]))[0, 1] < 0.9
    model.params["refit_epochs"] = None
    cold = model.refit(half, seed=1)
    assert int(cold.trained_epochs) == 20
    assert abs(torch.corrcoef(torch.stack([start.ravel(), cold.module.state_dict()["W"].ravel()]))[0, 1]) < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temporal_chooses_the_lag_order_from_the_data(seed):
    """Couplings that act two frames later (``coupling_lag=2``): BIC gives each coupled joint order 2
    and every other joint order 1, and the edges come back at lag 2 (a fixed ``n_lags=1`` puts them
    at lag 1). Measured exact on seeds 0-2."""
    sim = simulate_robot(seed=seed, coupling_lag=2, n_episodes=10, n_frames=200)
    data = _robot_data(sim)
    model = TemporalSEM().fit(data)
    couplings = sim.graph[~sim.graph["source"].str.startswith("action.")]
    orders = dict(zip(model.latent_names, model.lag_order.numpy().tolist(), strict=True))
    assert orders == {j: 2 if j in set(couplings["target"]) else 1 for j in model.latent_names}
    edges = model.get_edges()
    found = edges[~edges["source"].str.startswith("action.")]
    assert set(zip(found["source"], found["target"], found["lag"], strict=True)) == set(
        zip(couplings["source"], couplings["target"], couplings["lag"], strict=True)
    )


def test_a_commands_own_target_is_not_shrunk_away():
    """A weak command (gain 0.02 per frame, buried in noise) keeps its edge into its own joint because
    own commands are exempt from the penalty; penalising them as before drops some."""
    sim = simulate_robot(seed=0, gain=0.02, noise=0.05, n_episodes=4, n_frames=150)
    data = _robot_data(sim)
    own = {(f"action.{j}", j) for j in sim.adata.var_names if j.startswith("joint_")}
    kept = _pairs(TemporalSEM().fit(data).get_edges())
    assert own <= kept
    penalised = _pairs(TemporalSEM(penalize_own_commands=True).fit(data).get_edges())
    assert not own <= penalised
