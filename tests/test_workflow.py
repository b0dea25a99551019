"""The Snakemake workflow end to end, run the way a user runs it.

One session-scoped run of the whole DAG on a tiny config, in a folder of its own
(``snakemake -s <repo>/Snakefile --directory <folder> --configfile <folder>/config.yaml``),
with two datasets: a tiny simulated screen with ground truth, and a screen "written by someone
else" (its own obs column and labels, counts in a layer, relative and absolute paths). The other
tests read its artifacts, dry-run config changes against it, and check config validation, step
errors, ``--lint`` and ``snakefmt``.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import yaml
from _tiny_workflow import job_counts

from crl_pipe import InputError
from crl_pipe._snakemake import run_step
from crl_pipe.io import SCHEMAS, read_h5ad, read_table

REPO = Path(__file__).resolve().parents[1]
SIM = "sim"  # the simulated dataset, with truth
LAB = "lab_screen"  # the screen written by someone else, without truth
MODEL = "linear"

TINY_CONFIG = {
    "simulations": {
        "tiny": {
            "n_programs": 3,
            "n_genes": 80,
            "anchors_per_program": 6,
            "n_control": 300,
            "cells_per_perturbation": 80,
            "n_doubles": 1,
            "seed": 1,
        }
    },
    "datasets": {
        SIM: {
            "format": "h5ad",
            "path": "resources/simulated/tiny/screen.h5ad",
            "perturbation_key": "perturbation",
            "control_values": ["non-targeting"],
            "gene_sets": "resources/simulated/tiny/programs.gmt",
            "truth": {
                "graph": "resources/simulated/tiny/truth/graph.parquet",
                "targets": "resources/simulated/tiny/truth/targets.parquet",
                "latents": "resources/simulated/tiny/truth/latents.parquet",
            },
            "models": [MODEL],
        },
        LAB: {
            "format": "h5ad",
            "path": "data/screen.h5ad",  # relative to the folder
            "perturbation_key": "guide_target",
            "control_values": ["NT"],
            "gene_sets": "<absolute>",  # set to an absolute path below
            "counts_layer": "raw_umis",
        },
    },
    "preprocess": {"n_top_genes": 50},
    "graph": {"n_refits": 3},
}

LAB_PROGRAMS = {
    "PROG_A": [f"GENE{i}" for i in range(11, 17)],
    "PROG_B": [f"GENE{i}" for i in range(21, 27)],
    "PROG_C": [f"GENE{i}" for i in range(31, 37)],
}
LAB_SHIFTS = {"GENE1": (-2, 0, 0), "GENE2": (0, -2, 0), "GENE3": (0, 0, -2), "GENE1+GENE2": (-2, -2, 0)}

DATA_RULES = ["ingest", "label_interventions", "preprocess", "build_anchors"]
MODEL_RULES = ["train_model", "recover_graph", "evaluate", "write_report", "collect_benchmark"]


# ---- helpers -------------------------------------------------------------------------------------
def snakemake(venv_bin: Path, folder: Path, *args: str, configfile: str = "config.yaml", timeout: float = 600):
    """``snakemake -s <repo>/Snakefile --directory <folder> --configfile <folder>/<configfile> ...``.

    Run from the folder's parent with relative paths, as a user would type them.
    """
    cmd = [
        str(venv_bin),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        folder.name,
        "--configfile",
        f"{folder.name}/{configfile}",
        *args,
    ]
    return subprocess.run(cmd, cwd=folder.parent, capture_output=True, text=True, timeout=timeout)


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> None:
    (folder / name).write_text(yaml.safe_dump(config, sort_keys=False))


def write_lab_screen(folder: Path) -> None:
    """A screen as another lab writes it: barcodes, ``guide_target``/``NT``, counts in a layer."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(7)
    genes = [f"GENE{i}" for i in range(1, 61)]
    labels = np.array(["NT"] * 300 + [label for label in LAB_SHIFTS for _ in range(80)])
    rng.shuffle(labels)
    n = len(labels)
    z = rng.normal(size=(n, 3)) + np.array([LAB_SHIFTS.get(label, (0, 0, 0)) for label in labels])
    z[:, 1] += 0.8 * z[:, 0]  # PROG_A -> PROG_B
    log_rate = np.full((n, len(genes)), np.log(4.0)) + rng.normal(0, 0.3, size=(1, len(genes)))
    for k, members in enumerate(LAB_PROGRAMS.values()):
        log_rate[:, [genes.index(g) for g in members]] += 0.6 * z[:, [k]]
    for i, label in enumerate(labels):
        if label != "NT":  # CRISPRi knocks the targeted genes down
            log_rate[i, [genes.index(g) for g in label.split("+")]] += np.log(0.2)
    counts = rng.poisson(np.exp(log_rate) * rng.lognormal(0, 0.3, size=(n, 1))).astype(np.float32)
    normalised = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    obs = pd.DataFrame(
        {"guide_target": labels, "batch": rng.choice(["run1", "run2"], n), "n_umi": counts.sum(1)},
        index=[f"AAC{i:05d}-1" for i in range(n)],
    )
    var = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(len(genes))]}, index=genes)
    screen = ad.AnnData(X=normalised, obs=obs, var=var, layers={"raw_umis": sp.csr_matrix(counts)})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    screen.write_h5ad(folder / "data" / "screen.h5ad")
    lines = [f"{name}\thttps://example.org/{name}\t" + "\t".join(members) for name, members in LAB_PROGRAMS.items()]
    (folder / "data" / "programs.gmt").write_text("\n".join(lines) + "\n")


def lab_config(folder: Path) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["datasets"][LAB]["gene_sets"] = str((folder / "data" / "programs.gmt").resolve())
    return config


def tail(text: str, n: int = 4000) -> str:
    return text[-n:]


@dataclass
class Run:
    folder: Path
    config: dict
    proc: subprocess.CompletedProcess

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)


@pytest.fixture(scope="session")
def run(tmp_path_factory, venv_bin) -> Run:
    """The whole DAG, once per session, on the tiny two-dataset config."""
    folder = tmp_path_factory.mktemp("workflow") / "analysis"
    folder.mkdir()
    write_lab_screen(folder)
    config = lab_config(folder)
    write_config(folder, config)
    proc = snakemake(venv_bin, folder, "--cores", "2")
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{tail(p.read_text(), 1500)}" for p in sorted(folder.glob("logs/**/*.log")))
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{tail(proc.stderr)}\n{logs}", pytrace=False)
    return Run(folder, config, proc)


# ---- (a) the full DAG and the artifact contract --------------------------------------------------
@pytest.mark.workflow
def test_run_writes_every_artifact(run):
    expected = ["results/benchmark.parquet"]
    for ds in (SIM, LAB):
        expected += [
            f"results/{ds}/{name}"
            for name in ("ingested.h5ad", "qc.parquet", "interventions.parquet", "preprocessed.h5ad", "anchors.parquet")
        ]
        expected += [
            f"results/{ds}/{MODEL}/{name}"
            for name in ("model.pt", "model.json", "latents.parquet", "targets.parquet", "training.parquet")
        ]
        expected += [f"results/{ds}/{MODEL}/graph.parquet", f"results/{ds}/{MODEL}/graph.graphml"]
        expected += [f"results/{ds}/report.html"]
    expected += [f"results/{SIM}/{MODEL}/metrics.parquet"]
    expected += [f"resources/simulated/tiny/{name}" for name in ("screen.h5ad", "programs.gmt")]
    missing = [p for p in expected if not run.path(p).is_file() or run.path(p).stat().st_size == 0]
    assert not missing
    assert not run.path(f"results/{LAB}/{MODEL}/metrics.parquet").exists(), "no truth, no metrics"
    assert not list(run.folder.glob("results/**/.*.tmp-*")), "temporary files left behind"


@pytest.mark.workflow
@pytest.mark.parametrize("dataset", [SIM, LAB])
def test_tables_follow_the_contract(run, dataset):
    res = run.path("results", dataset)
    tables = {
        "qc": res / "qc.parquet",
        "interventions": res / "interventions.parquet",
        "anchors": res / "anchors.parquet",
        "latents": res / MODEL / "latents.parquet",
        "targets": res / MODEL / "targets.parquet",
        "training": res / MODEL / "training.parquet",
        "graph": res / MODEL / "graph.parquet",
    }
    if "loadings" in SCHEMAS:
        tables["loadings"] = res / MODEL / "loadings.parquet"
    if dataset == SIM:
        tables["metrics"] = res / MODEL / "metrics.parquet"
    for kind, path in tables.items():
        table = read_table(path, kind)  # raises InputError on a contract violation
        assert len(table) > 0, f"{path} is empty"
    graph = read_table(tables["graph"], "graph")
    assert graph["stability"].between(0, 1).all()
    assert np.isfinite(graph["weight"]).all()
    for name in ("ingested", "preprocessed"):
        adata = read_h5ad(res / f"{name}.h5ad")
        assert "crl_pipe" in adata.uns, f"{name}.h5ad has no provenance"
        assert adata.obs_names.is_unique and adata.var_names.is_unique


@pytest.mark.workflow
@pytest.mark.parametrize("dataset", [SIM, LAB])
def test_latent_names_agree(run, dataset):
    res = run.path("results", dataset, MODEL)
    latents = [c for c in read_table(res / "latents.parquet", "latents").columns if c != "sample_id"]
    assert latents
    targets = read_table(res / "targets.parquet", "targets")
    graph = read_table(res / "graph.parquet", "graph")
    assert set(targets["latent"]) == set(latents)
    assert set(graph["source"]) | set(graph["target"]) <= set(latents)
    meta = json.loads((res / "model.json").read_text())
    assert meta["latent_names"] == latents
    graphml = nx.read_graphml(res / "graph.graphml")
    assert {(u, v) for u, v in graphml.edges} == set(zip(graph["source"], graph["target"], strict=True))


@pytest.mark.workflow
@pytest.mark.parametrize("dataset", [SIM, LAB])
def test_intervention_labels_agree(run, dataset):
    labels = read_table(run.path("results", dataset, "interventions.parquet"), "interventions")
    targets = read_table(run.path("results", dataset, MODEL, "targets.parquet"), "targets")
    perturbations = set(labels.loc[~labels["is_control"], "intervention"])
    assert perturbations
    assert set(targets["intervention"]) == perturbations
    latents = read_table(run.path("results", dataset, MODEL, "latents.parquet"), "latents")
    assert set(latents["sample_id"]) <= set(labels["sample_id"])


@pytest.mark.workflow
def test_truth_dataset_is_scored_and_benchmarked(run):
    metrics = read_table(run.path("results", SIM, MODEL, "metrics.parquet"), "metrics")
    assert metrics["metric"].is_unique
    bench = read_table(run.path("results", "benchmark.parquet"), "benchmark")
    assert set(bench["dataset"]) == {SIM}
    assert set(bench["model"]) == {MODEL}
    assert set(bench["metric"]) == set(metrics["metric"])


@pytest.mark.workflow
def test_reports_are_html(run):
    for ds in (SIM, LAB):
        html = run.path("results", ds, "report.html").read_text()
        assert "<html" in html.lower() and ds in html


@pytest.mark.workflow
def test_every_step_logs_and_heavy_steps_are_benchmarked(run):
    logs = ["logs/simulate_screen/tiny.log", "logs/collect_benchmark/all.log"]
    for ds in (SIM, LAB):
        logs += [f"logs/{rule}/{ds}.log" for rule in (*DATA_RULES, "write_report")]
        logs += [f"logs/{rule}/{ds}/{MODEL}.log" for rule in ("train_model", "recover_graph")]
        for bench in (f"preprocess/{ds}", f"train_model/{ds}/{MODEL}", f"recover_graph/{ds}/{MODEL}"):
            assert run.path(f"benchmarks/out/{bench}.tsv").is_file()
    logs.append(f"logs/evaluate/{SIM}/{MODEL}.log")
    for log in logs:
        text = run.path(log).read_text()
        assert "crl_pipe" in text and "done in" in text, f"{log}:\n{tail(text)}"


# ---- (b) a screen written by someone else --------------------------------------------------------
@pytest.mark.workflow
def test_lab_screen_labels_and_counts(run):
    labels = read_table(run.path("results", LAB, "interventions.parquet"), "interventions").set_index("sample_id")
    screen = read_h5ad(run.path("data", "screen.h5ad"))
    guides = screen.obs["guide_target"]
    assert labels.loc[guides.index[guides == "NT"], "is_control"].all()
    assert not labels.loc[guides.index[guides != "NT"], "is_control"].any()
    double = labels[labels["intervention"] == "GENE1+GENE2"]
    assert len(double) == (guides == "GENE1+GENE2").sum()
    assert all(sorted(t) == ["GENE1", "GENE2"] for t in double["targets"]) and (double["n_targets"] == 2).all()
    single = labels[labels["intervention"] == "GENE3"]
    assert all(list(t) == ["GENE3"] for t in single["targets"]) and (single["n_targets"] == 1).all()

    ingested = read_h5ad(run.path("results", LAB, "ingested.h5ad"))
    raw = screen[ingested.obs_names, ingested.var_names].layers["raw_umis"]
    assert np.array_equal(np.asarray(ingested.X.todense()), np.asarray(raw.todense())), "counts_layer not used"
    anchors = read_table(run.path("results", LAB, "anchors.parquet"), "anchors")
    assert set(anchors["program"]) <= set(LAB_PROGRAMS)
    for program, genes in anchors.groupby("program")["feature"]:
        assert set(genes) <= set(LAB_PROGRAMS[program])


# ---- (c) rerun semantics -------------------------------------------------------------------------
@pytest.mark.workflow
def test_nothing_to_do_after_a_run(run, venv_bin):
    proc = snakemake(venv_bin, run.folder, "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, tail(proc.stderr)
    assert job_counts(proc.stdout + proc.stderr) == {}


@pytest.mark.workflow
def test_model_param_change_reruns_model_steps_only(run, venv_bin):
    config = copy.deepcopy(run.config)
    config["models"] = {MODEL: {"edge_threshold": 0.25}}
    write_config(run.folder, config, "edge_threshold.yaml")
    proc = snakemake(venv_bin, run.folder, "--dry-run", "--quiet", "rules", configfile="edge_threshold.yaml")
    assert proc.returncode == 0, tail(proc.stderr)
    jobs = job_counts(proc.stdout + proc.stderr)
    assert jobs.get("train_model") == 2 and jobs.get("recover_graph") == 2
    assert jobs.get("evaluate") == 1 and jobs.get("write_report") == 2 and jobs.get("collect_benchmark") == 1
    assert not set(jobs) & {"simulate_screen", *DATA_RULES}, jobs


@pytest.mark.workflow
def test_preprocess_param_change_keeps_ingest_and_labels(run, venv_bin):
    config = copy.deepcopy(run.config)
    config["preprocess"] = {"n_top_genes": 40}
    write_config(run.folder, config, "n_top_genes.yaml")
    proc = snakemake(venv_bin, run.folder, "--dry-run", "--quiet", "rules", configfile="n_top_genes.yaml")
    assert proc.returncode == 0, tail(proc.stderr)
    jobs = job_counts(proc.stdout + proc.stderr)
    assert jobs.get("preprocess") == 2 and jobs.get("train_model") == 2
    assert not set(jobs) & {"simulate_screen", "ingest", "label_interventions"}, jobs


@pytest.mark.workflow
def test_snakemake_report_bundles_the_reports(run, venv_bin):
    proc = snakemake(venv_bin, run.folder, "--report", "snakemake-report.zip")
    assert proc.returncode == 0, tail(proc.stderr)
    import zipfile

    names = zipfile.ZipFile(run.path("snakemake-report.zip")).namelist()
    assert sum(name.endswith("/report.html") for name in names) >= 2


# ---- errors: the config and the steps ------------------------------------------------------------
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["datasets"][LAB].update(modles=["linear"]), f"config: datasets.{LAB}: unknown key 'modles'"),
        (lambda c: c["graph"].update(n_refits="many"), "config: graph.n_refits: 'many' is not of type 'integer'"),
        (lambda c: c["datasets"][SIM].pop("path"), f"config: datasets.{SIM}: 'path' is a required property"),
        (lambda c: c.update(sede=1), "config: unknown key 'sede' (did you mean 'seed'?)"),
        (lambda c: None, f"config: datasets.{LAB}.path: file 'data/screen.h5ad' does not exist"),
    ],
    ids=["typo", "type", "missing-key", "top-level-typo", "missing-file"],
)
def test_bad_config_names_the_key(tmp_path, venv_bin, edit, message):
    config = copy.deepcopy(TINY_CONFIG)
    edit(config)
    write_config(tmp_path, config)
    proc = snakemake(venv_bin, tmp_path, "--dry-run")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout, tail(proc.stderr)


@pytest.mark.workflow
def test_step_error_is_one_line_without_traceback(run, tmp_path, venv_bin):
    (tmp_path / "data").symlink_to(run.path("data"))
    config = lab_config(run.folder)
    config["datasets"] = {"bad": {**config["datasets"][LAB], "perturbation_key": "guide"}}
    write_config(tmp_path, config)
    proc = snakemake(venv_bin, tmp_path, "--cores", "1", "results/bad/interventions.parquet")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("crl-pipe error in rule")]
    assert len(lines) == 1 and lines[0].startswith("crl-pipe error in rule label_interventions: "), tail(proc.stderr)
    assert "guide" in lines[0]
    log = (tmp_path / "logs" / "label_interventions" / "bad.log").read_text()
    assert lines[0] in log and "Traceback" not in log
    assert not (tmp_path / "results" / "bad" / "interventions.parquet").exists()


# ---- (e) lint and format -------------------------------------------------------------------------
@pytest.mark.workflow
def test_lint_is_clean(run, venv_bin):
    proc = snakemake(venv_bin, run.folder, "--lint")
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)


def test_snakefmt_is_clean(snakefmt_bin):
    proc = subprocess.run(
        [str(snakefmt_bin), "--check", "Snakefile", "rules/"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- run_step, the adapter every script uses (no Snakemake needed) --------------------------------
def _smk(tmp_path: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(rule="demo_rule", log=[str(tmp_path / "step.log")])


def test_run_step_logs_and_returns(tmp_path, capfd):
    def step(*, x):
        import logging

        logging.getLogger("crl_pipe.demo").info("working on %s", x)
        print("from stderr", file=sys.stderr)
        return x * 2

    assert run_step(_smk(tmp_path), step, x=21) == 42
    log = (tmp_path / "step.log").read_text()
    assert "working on 21" in log and "from stderr" in log and "done in" in log
    assert "from stderr" not in capfd.readouterr().err


def test_run_step_turns_crl_pipe_errors_into_one_line(tmp_path, capfd):
    def step():
        raise InputError("data/screen.h5ad: obs has no column 'guide'")

    with pytest.raises(SystemExit) as exit_info:
        run_step(_smk(tmp_path), step)
    assert exit_info.value.code == 1
    expected = "crl-pipe error in rule demo_rule: data/screen.h5ad: obs has no column 'guide'"
    assert capfd.readouterr().err.strip() == expected
    log = (tmp_path / "step.log").read_text()
    assert expected in log and "Traceback" not in log


def test_run_step_logs_unexpected_errors_with_traceback(tmp_path):
    def step():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_step(_smk(tmp_path), step)
    log = (tmp_path / "step.log").read_text()
    assert "Traceback" in log and "KeyError: 'boom'" in log


def test_run_step_without_log_file(capfd):
    smk = types.SimpleNamespace(rule="nolog", log=[])
    assert run_step(smk, lambda: "ok") == "ok"
    assert re.search(r"rule nolog: done in", capfd.readouterr().err)
