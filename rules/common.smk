"""What the rules share: the validated config, wildcard constraints and input/params functions.

Relative paths, in the config and in the rules, are relative to the working directory
(``snakemake --directory``); scripts, envs and the schema are found relative to this file.
"""

import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The Snakemake process imports crl_pipe.config, crl_pipe.kinds and the model registry (jsonschema
# and yaml only: no anndata, no torch) from this checkout, as the jobs import crl_pipe from it
# (see PYTHONPATH below).
if workflow.basedir not in sys.path:
    sys.path.insert(0, workflow.basedir)

from crl_pipe import ConfigError
from crl_pipe._sources import code_digest
from crl_pipe._steer_requests import check_names, gmt_programs, parse_requests
from crl_pipe.config import validate_config
from crl_pipe.kinds import kind_of
from crl_pipe.models.registry import model_capabilities, model_device, model_names

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
# Each dataset's kind (crl_pipe.kinds: screen, table, robot, ...), chosen once from its kind and
# format; the getters below ask it for the settings and files of each stage.
try:
    KINDS = {
        name: kind_of(ds, where=f"datasets.{name}") for name, ds in DATASETS.items()
    }
except ConfigError as err:
    raise WorkflowError(str(err)) from None
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
    return targets + get_hierarchy_targets()


# ---- simulate_screen, simulate_robot --------------------------------------------------------------
# The code behind simulate_screen and simulate_robot (crl_pipe.simulate and every crl_pipe module it
# imports), a params value: a change reruns them and gives them a new key in the between-workflow
# cache (which hashes the rule's script and params, not the package it calls).
SIMULATOR_CODE = code_digest("simulate")


def get_simulation_params(wildcards):
    """Settings of simulation ``{sim}`` (crl_pipe.pipeline.simulate / simulate_robot)."""
    if wildcards.sim not in SIMULATIONS:
        raise WorkflowError(
            f"resources/simulated/{wildcards.sim}/ is requested but config.simulations has no "
            f"{wildcards.sim!r} (simulations: {', '.join(SIMULATIONS) or 'none'})"
        )
    return dict(SIMULATIONS[wildcards.sim])


# ---- per-dataset inputs and params ---------------------------------------------------------------
# What a stage reads from the config depends on the dataset's kind: each getter asks it.
def _dataset(wildcards):
    return DATASETS[wildcards.dataset]


def _kind(wildcards):
    return KINDS[wildcards.dataset]


def get_raw_input(wildcards):
    """The dataset's raw input file."""
    return _dataset(wildcards)["path"]


def get_input_format(wildcards):
    return _dataset(wildcards)["format"]


def get_kind(wildcards):
    """Name of the dataset's kind (crl_pipe.kinds), the ``kind`` of the stage functions."""
    return _kind(wildcards).name


def get_ingest_options(wildcards):
    """Reader options of the dataset (only those set, so that defaults stay the reader's)."""
    return _kind(wildcards).ingest_options(_dataset(wildcards))


def get_ingest_files(wildcards):
    """Files the reader options name (guide counts, guide map, feature reference): ingest reruns when they change."""
    return list(_kind(wildcards).ingest_files(get_ingest_options(wildcards)).values())


def get_guide_calling(wildcards):
    """Guide-calling options ({} for formats without guide counts)."""
    return _kind(wildcards).guide_calling(_dataset(wildcards))


def get_label_options(wildcards):
    """How the dataset's interventions are labelled (perturbation column and controls, robot_labels, ...)."""
    return _kind(wildcards).label_options(_dataset(wildcards), config)


def get_preprocess_options(wildcards):
    """Preprocessing settings of the dataset's kind (gene selection, table transform, robot channel kinds)."""
    return _kind(wildcards).preprocess_options(_dataset(wildcards), config)


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
    """Combination labels whose cells no model trains on (config datasets.<ds>.held_out), or a robot log's
    held-out episodes (``{"episodes": [...]}``)."""
    held_out = _dataset(wildcards).get("held_out", [])
    return dict(held_out) if isinstance(held_out, dict) else list(held_out)


def predicts(dataset, model):
    """Whether ``model`` generates the held-out cells of ``dataset`` (rule predict_held_out)."""
    return (
        bool(DATASETS[dataset].get("held_out")) and model_capabilities(model).predicts
    )


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
    if "hierarchy" in ds:
        names += [
            "hierarchy.parquet",
            "module_graph.parquet",
            "graph_given_modules.parquet",
            "hierarchy.json",
        ]
    files = [
        f"results/{dataset}/{model}/{name}" for model in ds["models"] for name in names
    ]
    files += [
        f"results/{dataset}/{model}/predictions.parquet"
        for model in ds["models"]
        if predicts(dataset, model)
    ]
    files += [
        f"results/{dataset}/{model}/{name}"
        for model in ds["models"]
        if steers(dataset, model)
        for name in ("steering.parquet", "held_out_singles.parquet")
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


def get_report_files(wildcards):
    """Artifacts of the dataset's kind that its report reads besides the common ones: guides.parquet
    and preprocessed.h5ad of a screen of counts (guides and knockdown); nothing for others (use with unpack).
    """
    return _kind(wildcards).report_files(f"results/{wildcards.dataset}")


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


# ---- steer (requests and held-out singles) ------------------------------------------------------
def _held_out_singles(ds):
    """Held-out labels that name one perturbation (no '+'): predicted from prior knowledge by rule steer."""
    held_out = ds.get("held_out", [])
    return (
        []
        if isinstance(held_out, dict)
        else [label for label in held_out if "+" not in label]
    )


def _held_out_episodes(ds):
    """A robot log's held-out episodes (``held_out: {episodes: [...]}``): rollouts scored by rule steer."""
    held_out = ds.get("held_out", [])
    return list(held_out.get("episodes", [])) if isinstance(held_out, dict) else []


def steers(dataset, model):
    """Whether ``model`` answers steering requests on ``dataset`` (its rule is steer) - it steers (a latent
    linear SEM) and the dataset has requests or held-out singles to predict, or it rolls out (a robot's
    transition) and the dataset has requests or held-out episodes."""
    ds = DATASETS[dataset]
    caps = model_capabilities(model)
    commands = [bool(r.command) for r in parse_requests(ds.get("steer", []))]
    if caps.rolls_out:  # command requests (robots)
        return any(commands) or bool(_held_out_episodes(ds))
    # program requests (screens)
    wanted = not all(commands) or bool(_held_out_singles(ds))
    return wanted and caps.steers


def get_steer_requests(wildcards):
    """The dataset's steering requests that ``model`` answers (config datasets.<ds>.steer): command
    requests for a model that rolls out (robots), the others for a model with a latent SEM.
    """
    rolls_out = model_capabilities(wildcards.model).rolls_out
    return [
        request
        for request in _dataset(wildcards).get("steer", [])
        if ("command" in request) == rolls_out
    ]


def get_steer_hierarchy(wildcards):
    """``{"hierarchy": path}`` when the dataset has a concept hierarchy, so that steering requests may name
    its modules (rule steer; use with unpack); else nothing, and a module named is an error.
    """
    if "hierarchy" not in _dataset(wildcards):
        return {}
    return {
        "hierarchy": f"results/{wildcards.dataset}/{wildcards.model}/hierarchy.parquet"
    }


def get_single_scores(wildcards):
    """``{"single_scores": path}`` when rule steer scores held-out singles of this model (use with unpack)."""
    ds = _dataset(wildcards)
    held = _held_out_singles(ds) or _held_out_episodes(ds)
    if not (held and steers(wildcards.dataset, wildcards.model)):
        return {}
    return {
        "single_scores": f"results/{wildcards.dataset}/{wildcards.model}/held_out_singles.parquet"
    }


def _check_answered(requests, ds, where):
    """Each request has a model of the dataset that answers it: a command a model that rolls out, a
    program request a model with a latent SEM."""
    for request in requests:
        capability = "rolls_out" if request.command else "steers"
        if not any(getattr(model_capabilities(m), capability) for m in ds["models"]):
            raise ConfigError(
                f"{where} {request.name!r}: no model of this dataset answers it "
                f"(models: {', '.join(ds['models'])}); expected one of {model_names(capability)}"
            )


def check_steer_requests():
    """Each dataset's steering requests are well formed, and set or shift programs of its gene sets when
    the GMT file is already there (rule steer checks every name against the trained model).
    """
    for name, ds in DATASETS.items():
        where = f"config: datasets.{name}.steer"
        try:
            requests = parse_requests(ds.get("steer", []), where=where)
            _check_answered(requests, ds, where)
            gene_sets = ds.get("gene_sets")
            if requests and gene_sets and os.path.exists(gene_sets):
                programs = gmt_programs(gene_sets)
                hierarchy = ds.get("hierarchy")
                given = (hierarchy or {}).get("modules")
                if hierarchy is not None and not given:
                    continue  # modules still to be learned: rule steer checks their names
                modules = None if hierarchy is None else list(given)
                check_names(
                    requests,
                    programs=programs,
                    genes=None,
                    modules=modules,
                    where=where,
                )
        except ConfigError as err:
            raise WorkflowError(str(err)) from None


check_steer_requests()
# ---- learn_hierarchy (datasets with a hierarchy entry) ---------------------------------------------
HIERARCHY_DATASETS = [name for name, ds in DATASETS.items() if "hierarchy" in ds]


def get_given_hierarchy(wildcards):
    """The dataset's given level 2 (module -> programs), or None: learned from the latents."""
    return (_dataset(wildcards).get("hierarchy") or {}).get("modules") or None


def get_hierarchy_resamples(wildcards):
    """Bootstrap resamples behind each membership's stability."""
    return (_dataset(wildcards).get("hierarchy") or {}).get("n_resamples", 20)


def get_hierarchy_max_level(wildcards):
    """Deepest level of the concept graph learned (2: modules only)."""
    return (_dataset(wildcards).get("hierarchy") or {}).get("max_level", 3)


def get_hierarchy_outputs(wildcards):
    """``hierarchy_*`` outputs of rule learn_hierarchy that evaluate scores, when the dataset's truth
    has modules and the dataset a hierarchy entry; else nothing (use with unpack)."""
    ds = _dataset(wildcards)
    if "hierarchy" not in ds or "hierarchy" not in (ds.get("truth") or {}):
        return {}
    folder = f"results/{wildcards.dataset}/{wildcards.model}"
    return {
        f"hierarchy_{name}": f"{folder}/{name}.parquet"
        for name in ("hierarchy", "module_graph", "graph_given_modules")
    }


def get_hierarchy_targets():
    """hierarchy.parquet of every model of every dataset with a hierarchy entry."""
    return [
        f"results/{name}/{model}/hierarchy.parquet"
        for name in HIERARCHY_DATASETS
        for model in DATASETS[name]["models"]
    ]
