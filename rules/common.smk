"""What the rules share: the validated config, wildcard constraints and input/params functions.

Relative paths, in the config and in the rules, are relative to the working directory
(``snakemake --directory``); scripts, envs and the schema are found relative to this file.
"""

import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The Snakemake process imports crl_pipe.config (jsonschema and yaml only) from this checkout,
# as the jobs import crl_pipe from it (see PYTHONPATH below).
if workflow.basedir not in sys.path:
    sys.path.insert(0, workflow.basedir)

from crl_pipe import ConfigError
from crl_pipe._provenance import source_digest
from crl_pipe.config import PREDICTING_MODELS, model_device, validate_config

# ---- configuration -------------------------------------------------------------------------------
# Checked against the schema (defaults filled in) by the same function the tests call; an error is
# one line naming the key, e.g. "config: datasets.demo: unknown key 'modles' (did you mean 'models'?)".
if not workflow.modifier.skip_validation:
    try:
        validate_config(
            config,
            os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"),
        )
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


DATASETS = config["datasets"]
SIMULATIONS = config["simulations"]
MODELS = list(config["models"])
BASELINES = list(config["baselines"])
TRUTH_DATASETS = [name for name, ds in DATASETS.items() if ds.get("truth")]
NAME_PATTERN = "[A-Za-z0-9_-][A-Za-z0-9_.-]*"
ROBOT_SIMULATIONS = [
    name for name, sim in SIMULATIONS.items() if sim.get("kind") == "robot"
]
SCREEN_SIMULATIONS = [name for name in SIMULATIONS if name not in ROBOT_SIMULATIONS]


def one_of(names):
    """A wildcard pattern matching exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def _simulated(path):
    """Whether ``path`` is written by rule simulate_screen or simulate_robot for a configured simulation."""
    parts = Path(os.path.normpath(path)).parts
    return (
        parts[:2] == ("resources", "simulated")
        and len(parts) > 3
        and parts[2] in SIMULATIONS
    )


def check_input_paths():
    """Every file a dataset names exists, or is simulated (Snakemake would silently keep the
    results of a former input whose new path is missing)."""
    for name, ds in DATASETS.items():
        files = {"path": ds["path"], "gene_sets": ds.get("gene_sets")}
        files.update({f"truth.{kind}": p for kind, p in ds.get("truth", {}).items()})
        for key, path in files.items():
            if path and not _simulated(path) and not os.path.exists(path):
                raise WorkflowError(
                    f"config: datasets.{name}.{key}: file {path!r} does not exist "
                    f"(relative paths start at the working directory {os.getcwd()})"
                )


check_input_paths()

# Jobs import crl_pipe from this checkout, so that the package always matches the rules, also in
# the envs/ conda environments (--sdm conda), which hold its dependencies but not the package.
_pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if workflow.basedir not in _pythonpath:
    os.environ.update(PYTHONPATH=os.pathsep.join([workflow.basedir, *_pythonpath]))


wildcard_constraints:
    dataset=NAME_PATTERN,
    sim=NAME_PATTERN,
    model="|".join(MODELS),


# ---- targets -------------------------------------------------------------------------------------
def get_final_targets(wildcards):
    """Every dataset's report, and the benchmark table when some dataset has ground truth."""
    targets = [f"results/{name}/report.html" for name in DATASETS]
    targets += [
        f"results/{name}/{baseline}/graph.parquet"
        for name, ds in DATASETS.items()
        for baseline in ds.get("baselines", [])
    ]
    if TRUTH_DATASETS:
        targets.append("results/benchmark.parquet")
    return targets


# ---- simulate_screen, simulate_robot --------------------------------------------------------------
# The code behind simulate_screen and simulate_robot, a params value: a change reruns them and gives
# them a new key in the between-workflow cache (which hashes the rule's script and params, not the
# package it calls).
SIMULATOR_CODE = source_digest(
    "simulate",
    "io/_artifacts.py",
    "io/_h5ad.py",
    "io/_gmt.py",
    "io/_lerobot.py",
    "io/_robot.py",
    "io/_video.py",
    "io/_frames.py",
    "_provenance.py",
)


def get_simulation_params(wildcards):
    """Settings of simulation ``{sim}`` (crl_pipe.pipeline.simulate / simulate_robot)."""
    if wildcards.sim not in SIMULATIONS:
        raise WorkflowError(
            f"resources/simulated/{wildcards.sim}/ is requested but config.simulations has no "
            f"{wildcards.sim!r} (simulations: {', '.join(SIMULATIONS) or 'none'})"
        )
    return dict(SIMULATIONS[wildcards.sim])


# ---- per-dataset inputs and params ---------------------------------------------------------------
def _dataset(wildcards):
    return DATASETS[wildcards.dataset]


def get_raw_input(wildcards):
    """The dataset's raw input file."""
    return _dataset(wildcards)["path"]


def get_input_format(wildcards):
    return _dataset(wildcards)["format"]


def get_ingest_options(wildcards):
    """Reader options of the dataset (only those set, so that defaults stay the reader's)."""
    ds = _dataset(wildcards)
    if is_table(ds):
        columns = {"interventions": ds["interventions"]["columns"]}
        return columns | ({"variables": ds["variables"]} if "variables" in ds else {})
    if ds.get("kind") == "robot":
        return dict(ds.get("reader", {})) | get_camera_options(ds)
    return {
        key: ds[key]
        for key in ("counts_layer", "guides", "guide_map", "feature_reference")
        if key in ds
    }


def get_camera_options(ds):
    """``cameras`` and ``frame_size`` of a robot dataset with cameras (nothing without: its ingest is unchanged)."""
    if not ds.get("cameras"):
        return {}
    return {"cameras": list(ds["cameras"]), "frame_size": ds.get("frame_size", 64)}


def is_table(ds):
    """A screen given as a table of observed variables with intervention indicator columns."""
    return ds.get("kind", "screen") == "screen" and ds["format"] == "table"


def get_guide_files(wildcards):
    """Guide count matrix and guide -> target map or feature reference of a dataset (reruns when they change)."""
    ds = _dataset(wildcards)
    return [
        ds[key] for key in ("guides", "guide_map", "feature_reference") if ds.get(key)
    ]


def get_guide_calling(wildcards):
    """Guide-calling options of a guide_counts or 10x dataset ({} for other formats)."""
    ds = _dataset(wildcards)
    screen = ds.get("kind", "screen") == "screen"
    guides = screen and ds["format"] in ("guide_counts", "10x")
    return dict(ds.get("guide_calling", {})) if guides else {}


def get_kind(wildcards):
    """screen or robot."""
    return _dataset(wildcards).get("kind", "screen")


def get_perturbation_key(wildcards):
    ds = _dataset(wildcards)
    return "perturbation" if is_table(ds) else ds.get("perturbation_key")


def get_control_values(wildcards):
    ds = _dataset(wildcards)
    return ["control"] if is_table(ds) else list(ds.get("control_values", []))


def get_intervention_targets(wildcards):
    """Intervention -> known target variables of a table screen (None for other datasets)."""
    ds = _dataset(wildcards)
    return dict(ds["interventions"].get("targets", {})) if is_table(ds) else None


def get_transform(wildcards):
    return _dataset(wildcards).get("transform", "none")


def get_cofactor(wildcards):
    return _dataset(wildcards).get("cofactor", 5)


def get_robot_labels(wildcards):
    """How a robot log's interventions are read (config datasets.<ds>.robot_labels)."""
    return dict(_dataset(wildcards).get("robot_labels", {}))


def get_channel_kinds(wildcards):
    return list(_dataset(wildcards).get("channel_kinds", ["state", "action"]))


def get_gene_sets(wildcards):
    """``{"gene_sets": path}`` when the dataset has a GMT file, else nothing (use with unpack)."""
    ds = _dataset(wildcards)
    return {"gene_sets": ds["gene_sets"]} if "gene_sets" in ds else {}


def get_n_latents(wildcards):
    return _dataset(wildcards).get("n_latents")


# ---- per-model params ----------------------------------------------------------------------------
def get_model_params(wildcards):
    """Hyper-parameters of ``{model}`` (config.models.<model>), with the device it trains on."""
    params = dict(config["models"][wildcards.model])
    device = model_device(config, wildcards.model)
    return {**params, "device": device} if device else params


def get_n_refits(wildcards):
    """Bootstrap refits of ``{model}``: graph.n_refits_by_model.<model>, else graph.n_refits."""
    graph = config["graph"]
    return int(
        graph.get("n_refits_by_model", {}).get(wildcards.model, graph["n_refits"])
    )


def wants_gpu(wildcards):
    """Whether ``train_model`` asks for a GPU: a PyTorch model whose device is not ``cpu``."""
    return model_device(config, wildcards.model) not in (None, "cpu")


def get_train_gpus(wildcards):
    """Resource ``gpu`` of train_model: 1 for a PyTorch model on ``auto``/``cuda``, else 0."""
    return int(wants_gpu(wildcards))


def get_train_env(wildcards):
    """Conda environment of train_model (``--sdm conda``): the CUDA build where it asks for a GPU."""
    return (
        "../envs/crl-pipe-gpu.yaml" if wants_gpu(wildcards) else "../envs/crl-pipe.yaml"
    )


# ---- evaluate ------------------------------------------------------------------------------------
def get_truth(wildcards):
    """``truth_graph``/``truth_targets``/``truth_latents``: the dataset's ground-truth files."""
    truth = _dataset(wildcards).get("truth")
    if not truth:
        raise WorkflowError(
            f"results/{wildcards.dataset}/{wildcards.model}/metrics.parquet is requested but "
            f"config.datasets.{wildcards.dataset} has no truth to evaluate against"
        )
    return {f"truth_{kind}": path for kind, path in truth.items()}


# ---- held-out combinations (train_model, recover_graph, fit_baseline, predict_held_out) -----------
def get_held_out(wildcards):
    """Combination labels whose cells no model trains on (config datasets.<ds>.held_out)."""
    return list(_dataset(wildcards).get("held_out", []))


def predicts(dataset, model):
    """Whether ``model`` generates the held-out cells of ``dataset`` (rule predict_held_out)."""
    return bool(DATASETS[dataset].get("held_out")) and model in PREDICTING_MODELS


def get_predictions(wildcards):
    """``{"predictions": path}`` when the model predicts held-out cells, else nothing (use with unpack)."""
    if not predicts(wildcards.dataset, wildcards.model):
        return {}
    return {
        "predictions": f"results/{wildcards.dataset}/{wildcards.model}/predictions.parquet"
    }


# ---- write_report --------------------------------------------------------------------------------
def _model_files(dataset):
    ds = DATASETS[dataset]
    names = ["model.json", "latents.parquet", "targets.parquet", "loadings.parquet"]
    names += ["training.parquet"]
    names += ["graph.parquet", "graph.graphml"]
    if ds.get("truth"):
        names.append("metrics.parquet")
    files = [
        f"results/{dataset}/{model}/{name}" for model in ds["models"] for name in names
    ]
    files += [
        f"results/{dataset}/{model}/predictions.parquet"
        for model in ds["models"]
        if predicts(dataset, model)
    ]
    files += [
        f"results/{dataset}/{baseline}/{name}"
        for baseline in ds.get("baselines", [])
        for name in ("model.json", "graph.parquet", "graph.graphml")
    ]
    return files + [
        f"results/{dataset}/{baseline}/metrics.parquet"
        for baseline in _scored_baselines(ds)
    ]


def get_report_models(wildcards):
    """Every artifact the report reads from each of the dataset's model folders."""
    return _model_files(wildcards.dataset)


def get_report_guides(wildcards):
    """guides.parquet and preprocessed.h5ad of a screen of counts, for the report's guide and
    knockdown section; nothing for robot logs and tables of variables (use with unpack).
    """
    ds = _dataset(wildcards)
    counts = ds["format"] in ("h5ad", "guide_counts", "10x")
    if ds.get("kind", "screen") != "screen" or not counts:
        return {}
    folder = f"results/{wildcards.dataset}"
    return {
        "guides": f"{folder}/guides.parquet",
        "expression": f"{folder}/preprocessed.h5ad",
    }


def get_truth_graph(wildcards):
    """``{"truth_graph": path}`` when the dataset has a true graph, else nothing (use with unpack)."""
    truth = _dataset(wildcards).get("truth") or {}
    return {"truth_graph": truth["graph"]} if "graph" in truth else {}


def get_model_dirs(wildcards):
    """Model name -> its results folder, as crl_pipe.pipeline.report expects."""
    return {
        model: f"results/{wildcards.dataset}/{model}"
        for model in _dataset(wildcards)["models"]
    }


def get_baseline_dirs(wildcards):
    """Baseline name -> its results folder (graph, model.json, metrics)."""
    return {
        baseline: f"results/{wildcards.dataset}/{baseline}"
        for baseline in _dataset(wildcards).get("baselines", [])
    }


def get_report_config(wildcards):
    """The settings behind this dataset's results, shown in its report."""
    ds = _dataset(wildcards)
    settings = {
        "dataset": {"name": wildcards.dataset, **ds},
        "labels": config["labels"],
        "preprocess": config["preprocess"],
        "anchors": config["anchors"],
        "models": {model: config["models"][model] for model in ds["models"]},
        "graph": config["graph"],
        "seed": config["seed"],
    }
    if ds.get("baselines"):
        settings["baselines"] = {b: config["baselines"][b] for b in ds["baselines"]}
    return settings


# ---- collect_benchmark ---------------------------------------------------------------------------
def _benchmark_runs():
    return [
        f"{name}/{model}"
        for name in TRUTH_DATASETS
        for model in DATASETS[name]["models"] + _scored_baselines(DATASETS[name])
    ]


def _scored_baselines(ds):
    """The dataset's baselines, when it has a true graph to score them against."""
    return ds.get("baselines", []) if "graph" in (ds.get("truth") or {}) else []


def get_benchmark_metrics(wildcards):
    """metrics.parquet of every model of every dataset with ground truth."""
    return [f"results/{key}/metrics.parquet" for key in _benchmark_runs()]


def get_benchmark_runs(wildcards):
    """``dataset/model`` of each file of :func:`get_benchmark_metrics`, in the same order."""
    return _benchmark_runs()
