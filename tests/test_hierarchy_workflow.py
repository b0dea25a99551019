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
