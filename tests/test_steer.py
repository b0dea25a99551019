"""Steering by concept (crl_pipe.tl.steer): set, shift or knock down programs of a fitted model and
predict every gene's change with an interval; held-out singles predicted from prior knowledge."""

from __future__ import annotations

import copy

import _tiny_workflow as tiny
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from _screens import screen_and_data

from crl_pipe import ConfigError, cli, tl
from crl_pipe.io import read_provenance, read_table
from crl_pipe.models import LinearSEM
from crl_pipe.simulate import simulate_screen

SCREEN = dict(
    n_programs=5,
    n_genes=150,
    anchors_per_program=6,
    n_control=1000,
    cells_per_perturbation=200,
    n_doubles=2,
    regulators_in_programs=True,
    seed=1,
)


@pytest.fixture(scope="module")
def fitted():
    screen, data = screen_and_data(**SCREEN)
    return screen, data, LinearSEM().fit(data, seed=0)


def test_regulators_in_programs_adds_prior_knowledge_and_keeps_the_truth():
    plain = simulate_screen(**{**SCREEN, "regulators_in_programs": False})
    screen, _ = screen_and_data(**SCREEN)
    assert screen.graph.equals(plain.graph) and screen.targets.equals(plain.targets)
    assert all(screen.gene_sets[f"P{k}"] == [*plain.gene_sets[f"P{k}"], f"REG{k}"] for k in range(1, 6))
    # each regulator now follows its program in the control cells (REG1 with P1's anchors)
    X = screen.adata.X.toarray()
    control = (screen.adata.obs["perturbation"] == "non-targeting").to_numpy()
    genes = list(screen.adata.var_names)
    anchor_mean = np.log1p(X[control][:, [genes.index(g) for g in plain.gene_sets["P1"]]]).mean(axis=1)
    reg1 = np.log1p(X[control, genes.index("REG1")])
    assert np.corrcoef(anchor_mean, reg1)[0, 1] > 0.2


def _true_descendants(screen, program: str) -> set[str]:
    graph = nx.DiGraph()
    graph.add_nodes_from(screen.gene_sets)
    graph.add_edges_from(zip(screen.graph["source"], screen.graph["target"], strict=True))
    return nx.descendants(graph, program)


def test_do_on_an_upstream_program_moves_its_true_descendants_genes_only(fitted):
    screen, data, model = fitted
    # P1 and P5 are the sources of this graph; P1's descendants are P2, P3, P4, P5 is not one of them
    descendants = _true_descendants(screen, "P1")
    assert descendants == {"P2", "P3", "P4"}
    table = tl.steer(model, {"do": {"P1": -2.0}}, data, n_boot=20).set_index("feature")
    anchors = {p: [g for g in genes if g.startswith("GENE")] for p, genes in screen.gene_sets.items()}
    change = {p: table.loc[genes, "predicted_change"].abs().mean() for p, genes in anchors.items()}
    # the set program and its descendants move, the unrelated source does not
    assert change["P1"] > 1.0
    assert min(change[p] for p in ("P2", "P3")) > 0.2
    assert change["P5"] < 0.05 < change["P4"]
    # the intervals of an unrelated program's anchors hold 0 or stay near it (decoder noise); those of
    # the set program's anchors exclude 0
    p5 = table.loc[anchors["P5"]]
    assert ((p5["lower"] <= 0) & (p5["upper"] >= 0)).sum() >= 4 and p5[["lower", "upper"]].abs().max().max() < 0.1
    p1 = table.loc[anchors["P1"]]
    assert ((p1["upper"] < 0) & (p1["lower"] <= p1["predicted_change"]) & (p1["predicted_change"] <= p1["upper"])).all()
    # the chain that carries the effect to a descendant's anchors starts at the set program
    assert set(table.loc[anchors["P3"], "path"]) <= {"P1 -> P3", "P1 -> P2 -> P3"}
    assert set(table.loc[anchors["P1"], "route"]) == {"direct"}


def test_do_cuts_incoming_edges_but_shift_keeps_them(fitted):
    _, data, model = fitted
    # P2 has parent P1: a shift of P1 reaches P2's anchors, setting P2 makes P2 deaf to P1
    both = tl.steer(model, [{"do": {"P2": 0.0}, "shift": {"P1": -1.0}}, {"shift": {"P1": -1.0}}], data, n_boot=0)
    by = both.set_index(["request", "feature"])["predicted_change"]
    genes = [g for g in screen_and_data(**SCREEN)[0].gene_sets["P2"] if g.startswith("GENE")]
    assert by["shift(P1=-1)"][genes].abs().mean() > 0.2
    assert by["do(P2=0)+shift(P1=-1)"][genes].abs().max() < 1e-9


def test_knockdown_routes_are_recorded(fitted):
    _, data, model = fitted
    train = tl.hold_out(data, ["REG2"])
    held = LinearSEM().fit(train, seed=0)
    table = tl.steer(held, [{"knockdown": {"REG3": 0.8}}, {"knockdown": {"REG2": 0.5}}], train, n_boot=0)
    route = table.groupby("request")["route"].first()
    assert route["knockdown(REG3=0.8)"].startswith("knockdown REG3: trained REG3 (x 0.8/")
    assert route["knockdown(REG2=0.5)"].startswith("knockdown REG2: gene_set P2 (typical shift")
    # a knockdown lowers its program's anchors, half the knockdown about half the change
    change = table.set_index(["request", "feature"])["predicted_change"]
    p3 = [g for g in screen_and_data(**SCREEN)[0].gene_sets["P3"] if g.startswith("GENE")]
    assert change["knockdown(REG3=0.8)"][p3].mean() < -0.2
    half = tl.steer(held, [{"knockdown": {"REG3": 0.4}}], train, n_boot=0)["predicted_change"].abs().sum()
    full = table[table["request"] == "knockdown(REG3=0.8)"]["predicted_change"].abs().sum()
    assert half == pytest.approx(full / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"do": {"P9": 1.0}}, "steer 'do(P9=1)': no program 'P9'; expected one of P1, P2, P3, P4, P5"),
        ({"knockdown": {"STAT1": 0.8}}, "steer 'knockdown(STAT1=0.8)': gene 'STAT1' is neither measured"),
        ({"knockdown": {"REG1": 1.5}}, "steer[0].knockdown.REG1: fraction 1.5 outside (0, 1]"),
        ({"knockdown": {"REG1": 0.0}}, "steer[0].knockdown.REG1: fraction 0 outside (0, 1]"),
        ({"dO": {"P1": 1.0}}, "steer[0]: unknown key 'dO' (did you mean 'do'?)"),
        ({"name": "x"}, "steer[0]: no action; expected at least one of ['do', 'shift', 'knockdown', 'command']"),
        ({"do": {"P1": "high"}}, "steer[0].do.P1: expected a finite number, got 'high'"),
    ],
)
def test_a_bad_request_is_a_one_line_config_error(fitted, request_, message):
    _, data, model = fitted
    with pytest.raises(ConfigError) as err:
        tl.steer(model, request_, data, n_boot=0)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_held_out_single_is_predicted_from_prior_knowledge_beside_baselines(fitted):
    _, data, _ = fitted
    train = tl.hold_out(data, ["REG3"])
    assert "REG3" not in train.perturbations
    model = LinearSEM().fit(train, seed=0)
    scores = tl.evaluate_singles(model, data, ["REG3"])
    table = scores.pivot_table(index="metric", columns="predictor", values="value")
    assert set(table.columns) == set(tl.SINGLE_PREDICTORS)
    assert np.isnan(table.loc["pearson_delta_all", "no_change"])  # a constant prediction has no correlation
    # P3 is a sink here: a knockdown of its gene-set member moves P3's genes, as observed
    assert table.loc["pearson_delta_top20", "model"] > 0.7
    assert table.loc["pearson_delta_top20", "model"] > table.loc["pearson_delta_top20", "mean_change"]
    assert table.loc["r2_delta_top20", "model"] > table.loc["r2_delta_top20", "no_change"]


def test_a_held_out_single_without_route_is_a_config_error(fitted):
    _, data, _ = fitted
    from dataclasses import replace

    unmeasured = replace(data, targets={**data.targets, "REG3": ("UNMEASURED",)})
    with pytest.raises(ConfigError, match=r"held_out: single 'REG3' has no route to a program: its target\(s\)"):
        tl.hold_out(unmeasured, ["REG3"])
    with pytest.raises(ConfigError, match=r"single 'REG3' has"):  # labels read from data are numpy strings
        tl.hold_out(unmeasured, np.array(["REG3"]))


# -- the workflow ------------------------------------------------------------------------------------


def _steer_config() -> dict:
    config = copy.deepcopy(tiny.CONFIG)
    config["simulations"][tiny.SIM] |= {"regulators_in_programs": True}
    config["datasets"][tiny.DATASET] |= {
        "held_out": ["REG2"],
        "steer": [{"do": {"P1": -2.0}}, {"name": "REG3 down", "knockdown": {"REG3": 0.8}}],
    }
    config["graph"] = {"n_refits": 2}
    config["steering"] = {"n_boot": 10}
    return config


def test_a_bad_request_in_the_config_stops_the_workflow_before_any_job(tmp_path):
    config = _steer_config()
    config["datasets"][tiny.DATASET]["steer"] = [{"knockdown": {"REG3": 1.5}}]
    tiny.write_config(tmp_path, config)
    proc = tiny.run_snakemake(tmp_path, "--dry-run", "--quiet")
    assert proc.returncode != 0
    assert "datasets.sim.steer[0].knockdown.REG3" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_workflow_steers_and_scores_a_held_out_single(tmp_path):
    tiny.write_config(tmp_path, _steer_config())
    proc = tiny.run_snakemake(tmp_path, "--cores", "2")
    assert proc.returncode == 0, tiny.failure(proc, tmp_path)
    res = tmp_path / f"results/{tiny.DATASET}"
    steering = read_table(res / "linear/steering.parquet", "steering")
    assert list(steering.columns) == tl.STEERING_COLUMNS
    assert set(steering["request"]) == {"do(P1=-2)", "REG3 down"}
    assert (steering["lower"] <= steering["predicted_change"] + 1e-9).all()
    assert (steering["predicted_change"] <= steering["upper"] + 1e-9).all()
    route = steering.groupby("request")["route"].first()
    assert route["REG3 down"].startswith("knockdown REG3: trained")
    # REG2 is held out: no cell of it in training, predicted through its gene set and scored
    latents = read_table(res / "linear/latents.parquet", "latents")
    labels = read_table(res / "interventions.parquet", "interventions")
    held = set(labels.loc[labels["intervention"].str.split("+").map(lambda p: "REG2" in p), "sample_id"])
    assert held and not held & set(latents["sample_id"])
    singles = read_table(res / "linear/held_out_singles.parquet", "predictions")
    assert set(singles["intervention"]) == {"REG2"}
    assert set(singles["predictor"]) == set(tl.SINGLE_PREDICTORS)
    metrics = read_table(res / "linear/metrics.parquet", "metrics").set_index("metric")["value"]
    s = singles.pivot(index="metric", columns="predictor", values="value")
    assert metrics["heldout_single_pearson_delta_top20"] == pytest.approx(s.loc["pearson_delta_top20", "model"])
    assert metrics["heldout_single_n_labels"] == 1
    html = (res / "report.html").read_text()
    assert "What if</h2>" in html and "<h3>REG3 down (linear)</h3>" in html
    assert "Route: knockdown REG3: trained" in html and "<h3>Held-out single perturbations</h3>" in html


def test_crl_pipe_steer_on_a_finished_run(cached_run, tmp_path, monkeypatch, capsys):
    """The command line runs the stage on a finished run's artifacts; a bad request writes nothing."""
    monkeypatch.chdir(cached_run.folder)
    res = f"results/{tiny.DATASET}"
    common = [
        *("--preprocessed", f"{res}/preprocessed.h5ad", "--interventions", f"{res}/interventions.parquet"),
        *("--anchors", f"{res}/anchors.parquet", "--model-dir", f"{res}/linear"),
        *("--out", str(tmp_path / "steering.parquet"), "--out-singles", str(tmp_path / "singles.parquet")),
        "--n-boot",
        "5",
    ]
    assert cli.main(["steer", *common, "--requests", "[{do: {P9: 1.0}}]"]) != 0
    assert "steer 'do(P9=1)': no program 'P9'; expected one of P1, P2, P3" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert cli.main(["steer", *common, "--requests", "[{shift: {P1: 1.0}}, {knockdown: {REG2: 0.5}}]"]) == 0
    table = read_table(tmp_path / "steering.parquet", "steering")
    assert set(table["request"]) == {"shift(P1=1)", "knockdown(REG2=0.5)"}
    assert read_provenance(tmp_path / "steering.parquet")["params"]["n_boot"] == 5
    assert read_table(tmp_path / "singles.parquet", "predictions").empty  # no held-out single


def test_a_module_is_a_lever_on_its_member_programs(fitted):
    """shift/do of a module = shift/do of each member program by its loading times the value."""
    _, data, model = fitted
    modules = {"M1": {"P1": 0.5, "P2": 0.8}}
    by_module = tl.steer(
        model, [{"name": "m", "shift": {"M1": 2.0}}, {"name": "d", "do": {"M1": 1.0}}], data, n_boot=0, modules=modules
    )
    by_programs = tl.steer(
        model,
        [{"name": "m", "shift": {"P1": 1.0, "P2": 1.6}}, {"name": "d", "do": {"P1": 0.5, "P2": 0.8}}],
        data,
        n_boot=0,
    )
    for name in ("m", "d"):
        a = by_module[by_module["request"] == name].set_index("feature")["predicted_change"]
        b = by_programs[by_programs["request"] == name].set_index("feature")["predicted_change"]
        np.testing.assert_allclose(a.loc[b.index], b, atol=1e-12)
        assert a.abs().max() > 0
    assert set(by_module["route"]) == {"module M1: P1 x 0.50, P2 x 0.80"}
    hierarchy = pd.DataFrame(
        {
            "level": [1, 2, 2, 2, 3, 3],
            "parent": ["P1", "M1", "M1", "M2", "M3", "M3"],
            "child": ["g1", "P1", "P2", "P3", "M1", "M2"],
            "weight": [1.0, 0.5, 0.8, -1.0, 2.0, 1.0],
        }
    )
    members = tl.module_members(hierarchy)  # a module of modules reaches programs through its members
    assert members == {"M1": {"P1": 0.5, "P2": 0.8}, "M2": {"P3": -1.0}, "M3": {"P1": 1.0, "P2": 1.6, "P3": -1.0}}


def test_a_module_without_a_hierarchy_is_a_one_line_error(fitted):
    _, data, model = fitted
    with pytest.raises(ConfigError) as err:
        tl.steer(model, {"shift": {"M1": 1.0}}, data, n_boot=0)
    message = str(err.value)
    assert message.startswith("steer 'shift(M1=1)': no program 'M1'; expected one of P1, P2, P3")
    assert "a module needs the dataset's concept hierarchy" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"no program 'M9'; expected one of P1, .* or a module \(M1\)"):
        tl.steer(model, {"shift": {"M9": 1.0}}, data, n_boot=0, modules={"M1": {"P1": 1.0}})
