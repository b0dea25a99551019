"""Rule learn_hierarchy in the workflow: a tiny two-level screen from simulation to metrics and report."""

from __future__ import annotations

import copy

import pytest
from _tiny_workflow import CONFIG, DATASET, MODEL, SIM, failure, run_snakemake, write_config

from crl_pipe.io import read_table


def two_level_config() -> dict:
    config = copy.deepcopy(CONFIG)
    config["simulations"][SIM] |= {
        "n_programs": 6, "n_genes": 150, "n_control": 1500, "cells_per_perturbation": 250, "n_doubles": 0,
        "n_modules": 2, "seed": 0,
    }  # fmt: skip
    dataset = config["datasets"][DATASET]
    truth = f"resources/simulated/{SIM}/truth"
    dataset["truth"] |= {"hierarchy": f"{truth}/hierarchy.parquet", "module_graph": f"{truth}/module_graph.parquet"}
    dataset["hierarchy"] = {"n_resamples": 3}
    return config


def test_two_level_screen_through_the_workflow(tmp_path):
    folder = tmp_path / "run"
    write_config(folder, two_level_config())
    targets = [f"results/{DATASET}/{MODEL}/metrics.parquet", f"results/{DATASET}/report.html"]
    proc = run_snakemake(folder, *targets, "--cores", "1", timeout=900)
    assert proc.returncode == 0, failure(proc, folder)
    metrics = read_table(folder / targets[0], "metrics").set_index("metric")["value"]
    assert metrics["module_ari"] == pytest.approx(1.0)
    assert metrics["program_shd_given_modules"] < metrics["program_shd_one_level"]
    table = read_table(folder / f"results/{DATASET}/{MODEL}/hierarchy.parquet", "hierarchy")
    assert set(table["level"]) == {1, 2}
    page = (folder / targets[1]).read_text()
    assert "Concept levels: programs and modules" in page


def test_demo_is_a_two_level_screen_with_a_routed_held_out_single(tmp_path):
    """The demo config validates, learns the hierarchy, and its simulation writes the module truth and
    puts the held-out single's gene in its program's gene set (its prior route)."""
    import yaml
    from _tiny_workflow import REPO

    from crl_pipe import pipeline
    from crl_pipe.config import validate_config
    from crl_pipe.simulate import simulate_screen

    config = validate_config(
        yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
        REPO / "workflow" / "schemas" / "config.schema.yaml",
    )
    sim, demo = config["simulations"]["demo"], config["datasets"]["demo"]
    assert sim["n_modules"] >= 2 and "hierarchy" in demo
    assert {"hierarchy", "module_graph"} <= set(demo["truth"])
    pipeline.simulate_modules(out_truth_dir=tmp_path, params=sim)
    truth = read_table(tmp_path / "hierarchy.parquet", "hierarchy")
    assert truth["parent"].nunique() == sim["n_modules"] and (truth.groupby("parent").size() >= 2).all()
    assert (tmp_path / "module_graph.parquet").exists() and (tmp_path / "modules.parquet").exists()
    screen = simulate_screen(**{k: v for k, v in sim.items() if k != "kind"})
    singles = [label for label in demo["held_out"] if "+" not in label]
    program = screen.targets.set_index("intervention").loc[singles[0], "program"]
    assert singles[0] in screen.gene_sets[program]  # routed from prior knowledge: its program's gene set
    # its program keeps a perturbation of its own in training (else a module perturbation passes for one)
    targets = screen.targets
    assert set(targets.loc[targets["program"] == program, "intervention"]) - set(demo["held_out"])
    assert {"MREG1", "MREG2"} <= set(screen.adata.obs["perturbation"].astype(str))


@pytest.mark.workflow
def test_robot_limbs_through_the_workflow(tmp_path):
    """Simulated robot logs whose joints form two limbs: the hierarchy stage on the temporal model's
    variables finds the limbs (module ARI against the simulation's truth), named by their joints."""
    sim = "limbs"
    truth = f"resources/simulated/{sim}/truth"
    config = {
        "simulations": {sim: {"kind": "robot", "simulator": "linear", "n_joints": 6, "n_limbs": 2,
                              "n_episodes": 10, "n_frames": 200, "seed": 0}},
        "datasets": {sim: {
            "kind": "robot", "format": "lerobot", "path": f"resources/simulated/{sim}/lerobot",
            "truth": {k: f"{truth}/{k}.parquet" for k in ("graph", "targets", "hierarchy", "module_graph")},
            "hierarchy": {"n_resamples": 3}, "models": ["temporal"],
        }},
        "models": {"temporal": {"n_lags": 1}},
        "graph": {"n_refits": 2},
    }  # fmt: skip
    folder = tmp_path / "run"
    write_config(folder, config)
    target = f"results/{sim}/temporal/metrics.parquet"
    proc = run_snakemake(folder, target, "--cores", "1", timeout=900)
    assert proc.returncode == 0, failure(proc, folder)
    metrics = read_table(folder / target, "metrics").set_index("metric")["value"]
    assert metrics["module_ari"] == pytest.approx(1.0) and metrics["n_modules"] == 2
    assert "program_shd_one_level" not in metrics  # no program graph is re-read on robot logs
    table = read_table(folder / f"results/{sim}/temporal/hierarchy.parquet", "hierarchy")
    names = set(table.loc[table["level"] == 2, "parent_name"])
    assert len(names) == 2 and all(n.startswith("M") and "joint_" in n for n in names)
