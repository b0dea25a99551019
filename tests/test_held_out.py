"""Held-out combinations (config ``datasets.<ds>.held_out``): no model trains on their cells, a
model that generates cells (causal_vae) predicts them from their parts, and the workflow scores
the prediction beside the control-mean and additive baselines (predictions.parquet, metrics, report).
"""

from __future__ import annotations

import copy
import shutil
from html.parser import HTMLParser
from pathlib import Path

import _tiny_workflow as tiny
import numpy as np
import pandas as pd
import pytest
import yaml
from _screens import screen_and_data

from crl_pipe import ConfigError, pipeline, tl
from crl_pipe.config import validate_config
from crl_pipe.io import read_provenance, read_table
from crl_pipe.models import CRLData

SCHEMA = tiny.REPO / "workflow" / "schemas" / "config.schema.yaml"
TINY = dict(n_programs=3, n_genes=80, anchors_per_program=6, n_control=300, cells_per_perturbation=80, n_doubles=2)


@pytest.fixture(scope="module")
def data():
    return screen_and_data(**TINY, seed=1)[1]


def _doubles(labels) -> list[str]:
    return sorted({lab for lab in labels if "+" in lab})


def test_hold_out_drops_exactly_the_combination_cells(data):
    double = _doubles(data.perturbations)[0]
    train = tl.hold_out(data, [double])
    assert double not in train.perturbations
    assert train.n_cells == data.n_cells - int((data.intervention == double).sum())
    assert set(train.perturbations) == set(data.perturbations) - {double}
    # written the other way round, or as Norman 2019 writes it, it is the same label
    a, b = double.split("+")
    assert tl.resolve_held_out(data, [f"{b}+{a}"]) == tl.resolve_held_out(data, [f"{b},{a}"]) == [double]


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        (["REG9+REG1"], "held_out: 'REG9+REG1' has no cells in the data; expected a combination label ("),
        (["non-targeting"], "held_out: 'non-targeting' has no cells in the data"),
    ],
)
def test_a_label_that_cannot_be_held_out_is_a_config_error(data, held_out, message):
    with pytest.raises(ConfigError) as err:
        tl.hold_out(data, held_out)
    assert message in str(err.value)


def test_a_combination_whose_part_is_not_trained_is_a_config_error(data):
    double = _doubles(data.perturbations)[0]
    part = double.split("+")[0]
    without_part = data.subset(data.intervention != part)
    with pytest.raises(ConfigError) as err:
        tl.hold_out(without_part, [double])
    assert f"held_out: '{double}' cannot be predicted from its parts: '{part}' not trained on its own" in str(err.value)


def test_config_schema_checks_the_key():
    config = copy.deepcopy(tiny.CONFIG)
    validate_config(config, SCHEMA)
    assert config["datasets"][tiny.DATASET]["held_out"] == []  # the default: nothing held out
    config["datasets"][tiny.DATASET]["held_out"] = "REG1+REG2"
    with pytest.raises(
        ConfigError, match=rf"config: datasets\.{tiny.DATASET}\.held_out: 'REG1\+REG2' is not of type 'array'"
    ):
        validate_config(config, SCHEMA)


# -- the stage functions on the artifacts of the session's tiny run --------------------------------


@pytest.fixture
def run_dir(cached_run, monkeypatch):
    """The finished tiny run's folder as the working directory (its paths are relative to it)."""
    monkeypatch.chdir(cached_run.folder)
    res = f"results/{tiny.DATASET}"
    labels = read_table(f"{res}/interventions.parquet", "interventions")
    double = _doubles(labels["intervention"])[0]
    artifacts = {
        k: f"{res}/{k}.{ext}"
        for k, ext in (("preprocessed", "h5ad"), ("interventions", "parquet"), ("anchors", "parquet"))
    }
    return cached_run.folder, artifacts, labels, double


def test_no_model_or_baseline_is_fit_on_held_out_cells(run_dir, tmp_path, monkeypatch):
    _, artifacts, labels, double = run_dir
    seen = {}

    no_edges = pd.DataFrame({"source": [], "target": [], "weight": [], "stability": []})

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            seen[name] = next(a for a in args if isinstance(a, CRLData))
            return fn(*args, **kwargs) if fn else no_edges

        monkeypatch.setattr(tl, name, wrapper)

    spy("train", tl.train)
    spy("recover_graph", tl.recover_graph)
    spy("baseline_graph", None)  # PC itself takes a minute on these 50 genes: only its input matters here
    out = tmp_path / "linear"
    pipeline.train(**artifacts, out_dir=out, model="linear", held_out=[double])
    pipeline.graph(
        **artifacts,
        model_dir=out,
        out_parquet=tmp_path / "g.parquet",
        out_graphml=tmp_path / "g.graphml",
        n_refits=2,
        held_out=[double],
    )
    pipeline.baseline(
        preprocessed=artifacts["preprocessed"],
        interventions=artifacts["interventions"],
        out_parquet=tmp_path / "b.parquet",
        out_graphml=tmp_path / "b.graphml",
        out_meta=tmp_path / "b.json",
        method="pc",
        n_refits=1,
        held_out=[double],
    )
    held = set(labels.loc[labels["intervention"] == double, "sample_id"])
    assert len(held) >= 20
    for name in ("train", "recover_graph", "baseline_graph"):
        assert double not in set(seen[name].intervention), name
        assert not held & set(seen[name].sample_ids), name
        assert seen[name].n_cells == len(labels) - len(held), name
    # and what the step wrote says so: no latents of held-out cells, no targets of the label
    assert not held & set(read_table(out / "latents.parquet", "latents")["sample_id"])
    assert double not in set(read_table(out / "targets.parquet", "targets")["intervention"])
    assert read_provenance(out / "latents.parquet")["params"]["held_out"] == [double]


def test_a_bad_label_stops_training_with_one_line(run_dir, tmp_path):
    _, artifacts, _, _ = run_dir
    with pytest.raises(
        ConfigError, match=r"^held_out: 'REG7\+REG8' has no cells in results/sim/interventions\.parquet; expected"
    ):
        pipeline.train(**artifacts, out_dir=tmp_path / "m", model="linear", held_out=["REG7+REG8"])
    assert not (tmp_path / "m").exists()


# -- the workflow ------------------------------------------------------------------------------------


@pytest.mark.workflow
def test_workflow_scores_the_held_out_double(cached_run, tmp_path):
    # A copy of the finished tiny run, now with causal_vae and its one double held out: only the
    # model's steps, the prediction, its evaluation and the report run (5 jobs).
    folder = tmp_path / "run"
    shutil.copytree(cached_run.folder, folder, symlinks=False)
    labels = read_table(folder / f"results/{tiny.DATASET}/interventions.parquet", "interventions")
    double = _doubles(labels["intervention"])[0]
    config = copy.deepcopy(tiny.CONFIG)
    config["datasets"][tiny.DATASET] |= {"held_out": [double], "models": ["linear", "causal_vae"]}
    config["models"] = {"causal_vae": {"epochs": 100, "hidden": 64, "device": "cpu"}}
    config["graph"] = {"n_refits": 3, "n_refits_by_model": {"causal_vae": 1}}
    tiny.write_config(folder, config)
    dry = tiny.run_snakemake(folder, "--dry-run", "--quiet", "rules")
    assert dry.returncode == 0, tiny.failure(dry, folder)
    jobs = tiny.job_counts(dry.stdout + dry.stderr)
    assert (
        jobs["predict_held_out"] == 1 and jobs["train_model"] == 2
    )  # causal_vae only; linear retrains without the double

    config["datasets"][tiny.DATASET]["models"] = ["causal_vae"]  # keep the run short
    tiny.write_config(folder, config)
    proc = tiny.run_snakemake(folder, f"results/{tiny.DATASET}/report.html", "--cores", "2")
    assert proc.returncode == 0, tiny.failure(proc, folder)
    res = folder / f"results/{tiny.DATASET}"

    scores = read_table(res / "causal_vae/predictions.parquet", "predictions")
    s = scores.pivot(index="metric", columns="predictor", values="value")
    assert set(scores["intervention"]) == {double}
    # measured (sim seed 1, model seeds 0-3, 100 epochs): R² top-20 0.905-0.928 (control mean 0.263,
    # additive 0.981), MMD 0.067-0.085 (control 0.351, additive 0.030); other screens: 0.76-0.93
    assert s.loc["r2_top20_genes", "model"] > 0.8 > 0.5 > s.loc["r2_top20_genes", "control"]
    assert s.loc["r2_all_genes", "model"] > 0.9
    assert s.loc["mmd", "model"] < 0.5 * s.loc["mmd", "control"]
    assert s.loc["r2_top20_genes", "additive"] > 0.95  # the simulated effects add up: a strong bar

    metrics = read_table(res / "causal_vae/metrics.parquet", "metrics").set_index("metric")["value"]
    assert metrics["heldout_r2_top20"] == pytest.approx(s.loc["r2_top20_genes", "model"])
    assert metrics["heldout_mmd_control"] == pytest.approx(s.loc["mmd", "control"])
    assert metrics["heldout_r2_top20_additive"] == pytest.approx(s.loc["r2_top20_genes", "additive"])
    assert metrics["heldout_n_labels"] == 1 and metrics["target_accuracy"] == 1.0
    assert not held_out_cells_in(res / "causal_vae/latents.parquet", labels, double)

    html = (res / "report.html").read_text()
    assert "<h3>Held-out combinations</h3>" in html
    header, *rows = html_table(html.split("<h3>Held-out combinations</h3>")[1])
    assert header == ["combination", "predicted by", "R² all genes", "R² top-20 genes", "R² top-20 changes", "MMD"]
    assert [row[:2] for row in rows] == [
        [double, "causal_vae"],
        [double, "control mean (baseline)"],
        [double, "additive (baseline)"],
    ]
    shown = [float(row[3]) for row in rows]
    assert np.allclose(shown, s.loc["r2_top20_genes", ["model", "control", "additive"]], atol=5e-3)


def html_table(html: str) -> list[list[str]]:
    """The cells of the first table in ``html``, row by row (header row first)."""

    class Cells(HTMLParser):
        rows: list[list[str]] = []
        cell: list[str] | None = None
        done = False

        def handle_starttag(self, tag, attrs):
            if not self.done and tag == "tr":
                self.rows.append([])
            elif not self.done and tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell).strip())
                self.cell = None
            self.done = self.done or tag == "table"

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Cells()
    parser.rows = []
    parser.feed(html)
    return parser.rows


def held_out_cells_in(path: Path, labels: pd.DataFrame, double: str) -> set[str]:
    held = set(labels.loc[labels["intervention"] == double, "sample_id"])
    return held & set(read_table(path, "latents")["sample_id"])


def test_demo_config_holds_out_a_double_and_a_single():
    config = yaml.safe_load((tiny.REPO / "config" / "config.yaml").read_text())
    held_out = config["datasets"]["demo"].get("held_out", [])
    doubles = [label for label in held_out if "+" in label]
    singles = [label for label in held_out if "+" not in label]
    assert len(doubles) == 1 and len(singles) == 1
    assert not set(singles) & set(doubles[0].split("+"))  # the double stays predictable from its trained parts
    assert "causal_vae" in config["datasets"]["demo"]["models"]
    assert config["datasets"]["demo"]["steer"]  # and one steering request (issue 14)
