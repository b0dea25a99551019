"""The ``crl-pipe`` command line: every pipeline step is a subcommand with the step's arguments and
their meaning; the whole chain, export and the benchmark run through it on a small simulated screen."""

from __future__ import annotations

import argparse
import inspect
import json
import os
from pathlib import Path

import _chain
import anndata as ad
import numpy as np
import pandas as pd
import pytest

from crl_pipe import cli, pipeline


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _args(stage: str, kwargs: dict) -> list[str]:
    """``crl-pipe`` arguments of a step's keyword arguments (mappings and lists as JSON, a YAML subset)."""
    args = [stage]
    for key, value in kwargs.items():
        args += ["--" + key.replace("_", "-"), json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return args


def test_every_pipeline_step_is_a_subcommand():
    steps = {
        name
        for name, fn in vars(pipeline).items()
        if inspect.isfunction(fn) and fn.__module__ == pipeline.__name__ and not name.startswith("_")
    }
    assert {fn.__name__ for fn in cli.STEPS.values()} == steps
    assert set(cli.STEPS) == {name.replace("_", "-") for name in steps}
    assert list(_subparsers()) == [*cli.STEPS, "cluster-check"]  # and the one step that is not the pipeline's


@pytest.mark.parametrize("name", list(cli.STEPS))
def test_subcommand_takes_the_arguments_of_its_step(name):
    fn, sub = cli.STEPS[name], _subparsers()[name]
    actions = {a.dest: a for a in sub._actions if a.dest != "help"}
    params = inspect.signature(fn).parameters
    assert set(actions) == set(params)
    for param in params.values():
        action = actions[param.name]
        required = param.default is inspect.Parameter.empty
        if param.name in cli.POSITIONAL.get(name, ()):
            assert not action.option_strings and action.metavar == param.name.upper()
        else:
            assert action.option_strings == ["--" + param.name.replace("_", "-")]
            assert action.required == required and (required or action.default == param.default)
        text = cli.argument_help(fn.__name__, param.name)
        assert text, f"crl-pipe {name} {param.name}: no help text"
        assert action.help.startswith(text)
        if action.option_strings:
            assert action.help.endswith("(required)" if required else f"(default: {param.default!r})")


def test_help_lists_every_step_with_its_first_sentence(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in cli.STEPS:
        assert f" {name} " in text
    assert 'Write the preprocessed AnnData with one model\'s latents (obsm["X_<model>"])' in text
    assert "``" not in text and ":func:" not in text
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: crl-pipe export [-h] --model MODEL --out OUT [--counts COUNTS] RESULTS_DIR" in text
    assert "RESULTS_DIR the dataset's results folder (results/<dataset>)" in text


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """Every stage of :mod:`_chain` run through ``crl_pipe.cli.main``, then a model holding out the double."""
    folder = tmp_path_factory.mktemp("cli")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for stage, kwargs in _chain.STAGES.items():
            assert cli.main(_args(stage, kwargs)) == 0, stage
        double = "REG2+REG3"
        held = {**_chain.STAGES["train"], "out_dir": f"{_chain.RES}/held", "held_out": [double]}
        assert cli.main(_args("train", held)) == 0
    finally:
        os.chdir(previous)
    return folder


def test_the_chain_runs_through_the_command_line(chain):
    for outputs in _chain.OUTPUTS.values():
        for rel in outputs:
            assert (chain / rel).exists(), rel
    page = (chain / _chain.RES / "report.html").read_text(encoding="utf-8")
    assert ">1. What went in</h2>" in page and ">demo<" in page


def test_export_puts_the_model_in_the_anndata(chain, tmp_path):
    res = chain / _chain.RES
    assert cli.main(["export", str(res), "--model", "held", "--out", str(tmp_path / "held.h5ad")]) == 0
    adata = ad.read_h5ad(tmp_path / "held.h5ad")
    latents = pd.read_parquet(res / "held" / "latents.parquet").set_index("sample_id")
    embedded = ~np.isnan(adata.obsm["X_held"]).any(axis=1)
    assert set(adata.obs_names[~embedded]) == set(adata.obs_names[adata.obs["intervention"] == "REG2+REG3"])
    np.testing.assert_array_equal(adata.obsm["X_held"][embedded], latents.loc[adata.obs_names[embedded]].to_numpy())
    assert adata.varm["held_loadings"].shape == (adata.n_vars, latents.shape[1])
    assert adata.uns["crl_pipe"]["step"] == "export" and adata.uns["crl_pipe"]["params"]["model"] == "held"
    assert "targets" in adata.uns["held"] and "graph" not in adata.uns["held"]  # no graph step for this one
    assert "counts" in adata.layers
    assert cli.main(["export", str(res), "--model", "linear", "--out", str(tmp_path / "x.h5ad"), "--counts", "no"]) == 0
    assert "counts" not in ad.read_h5ad(tmp_path / "x.h5ad").layers


def test_export_error_is_one_line(chain, tmp_path, capfd):
    res = chain / _chain.RES
    assert cli.main(["export", str(res), "--model", "nope", "--out", str(tmp_path / "x.h5ad")]) == 1
    err = capfd.readouterr().err
    expected = f"{res / 'nope'}: model folder of 'nope' does not exist; expected results/<dataset>/<model>"
    assert err == f"crl-pipe export: error: {expected}\n"
    assert not (tmp_path / "x.h5ad").exists()


def test_benchmark_and_baseline_scoring_through_the_command_line(chain, tmp_path):
    model = chain / _chain.MODEL
    metrics = {"demo/linear": str(model / "metrics.parquet")}
    assert cli.main(_args("collect-benchmark", {"metrics": metrics, "out": str(tmp_path / "bench.parquet")})) == 0
    bench = pd.read_parquet(tmp_path / "bench.parquet")
    assert set(bench["dataset"]) == {"demo"} and set(bench["model"]) == {"linear"} and "shd" in set(bench["metric"])
    truth = chain / _chain.SIM / "truth" / "graph.parquet"
    args = {"graph": str(model / "graph.parquet"), "truth_graph": str(truth), "out": str(tmp_path / "m.parquet")}
    assert cli.main(_args("evaluate-baseline", args)) == 0
    scores = pd.read_parquet(tmp_path / "m.parquet").set_index("metric")["value"]
    assert {"shd", "edge_precision", "edge_recall"} <= set(scores.index)


def test_simulate_robot_through_the_command_line(tmp_path):
    params = {"simulator": "linear", "n_episodes": 2, "n_frames": 40, "seed": 0}
    args = {"out_dir": str(tmp_path / "log"), "out_truth_dir": str(tmp_path / "truth"), "params": params}
    assert cli.main(_args("simulate-robot", args)) == 0
    assert (tmp_path / "log" / "meta" / "info.json").exists()
    truth = pd.read_parquet(tmp_path / "truth" / "graph.parquet")
    assert len(truth) and {"source", "target"} <= set(truth.columns)
