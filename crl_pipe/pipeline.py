"""One function per workflow stage, file in -> file out.

The Snakemake rules (via ``workflow/scripts``) and the ``crl-pipe`` command line call these and
nothing else; each reads its input artifacts, calls the in-memory API (``io``, ``pp``, ``tl``,
``simulate``, ``report``) and writes its outputs atomically with provenance.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import io
from ._errors import ConfigError
from ._provenance import atomic_path, provenance
from .io import read_h5ad, read_table, storage_for, to_anndata, write_graphml, write_h5ad, write_table
from .kinds import get_kind
from .models import model_capabilities

log = logging.getLogger("crl_pipe")

PathLike = str | os.PathLike


def simulate(
    *,
    out_h5ad: PathLike,
    out_gmt: PathLike,
    out_truth_dir: PathLike,
    params: Mapping[str, Any],
    chunk_cells: int | None = None,
) -> None:
    """Simulate a Perturb-seq screen with a known latent causal graph (see :func:`crl_pipe.simulate.simulate_screen`).

    Writes the screen h5ad, a GMT of each program's anchor genes, and the truth folder
    (``graph.parquet``, ``targets.parquet``, ``latents.parquet``). ``chunk_cells``: draw and write
    the counts in blocks of that many cells (:func:`crl_pipe.simulate.simulate_screen_chunks`), for
    screens too large to hold as a dense matrix.
    """
    from . import simulate as sim  # deferred: scanpy, scikit-learn and MuJoCo load only to simulate

    params = {k: v for k, v in params.items() if k != "kind"}
    if chunk_cells:
        screen, blocks = sim.simulate_screen_chunks(chunk_cells=chunk_cells, **params)
        params = {**params, "chunk_cells": chunk_cells}  # the blocks draw other counts: part of the provenance
    else:
        screen, blocks = sim.simulate_screen(**params), None
    sim.write_simulation(
        screen, out_h5ad=out_h5ad, out_gmt=out_gmt, out_truth_dir=out_truth_dir, params=params, blocks=blocks
    )


def simulate_robot(*, out_dir: PathLike, out_truth_dir: PathLike, params: Mapping[str, Any]) -> None:
    """Simulate robot logs with a known causal graph (``simulator``: ``arm``, :func:`crl_pipe.simulate.simulate_arm`;
    ``linear``, :func:`crl_pipe.simulate.simulate_robot`).

    Writes a LeRobot v2.1 dataset (v3.0 with videos for ``observation: camera``) into ``out_dir`` and
    the truth folder (``graph.parquet``, ``targets.parquet``, ``latents.parquet``).
    """
    from . import simulate as sim  # deferred: scanpy, scikit-learn and MuJoCo load only to simulate

    kwargs = {k: v for k, v in params.items() if k not in ("kind", "simulator")}
    simulator = params.get("simulator", "arm")
    linear_only = [k for k in ("n_joints", "n_instantaneous", "n_limbs") if k in kwargs]
    if simulator == "arm" and linear_only:
        raise ConfigError(
            f"simulate_robot: {linear_only[0]}={kwargs[linear_only[0]]} with simulator 'arm' (4 joints); "
            f"expected {linear_only[0]} only with simulator: linear"
        )
    arm_only = [
        k for k in ("observation", "sensor_noise", "light_delay", "image_size", "scene", "limbs") if k in kwargs
    ]
    if simulator == "linear" and arm_only:
        raise ConfigError(
            f"simulate_robot: {arm_only[0]} with simulator 'linear'; expected it only with simulator: arm"
        )
    robot = (sim.simulate_arm if simulator == "arm" else sim.simulate_robot)(**kwargs)
    sim.write_robot_simulation(robot, out_dir=out_dir, out_truth_dir=out_truth_dir, params=params)


def ingest(
    *,
    path: PathLike,
    out_h5ad: PathLike,
    out_qc: PathLike,
    out_guides: PathLike | None = None,
    format: str = "h5ad",
    options: Mapping[str, Any] | None = None,
    guide_calling: Mapping[str, Any] | None = None,
    kind: str = "screen",
) -> None:
    """Read a raw input in any supported layout into the canonical ``ingested.h5ad`` (+ ``qc.parquet``,
    ``guides.parquet``), as its dataset ``kind`` reads it (:mod:`crl_pipe.kinds`).

    ``kind``: ``screen`` (counts; ``format`` h5ad, guide_counts or 10x; ``options``: ``counts_layer``,
    ``guides``, ``guide_map``, ``feature_reference``), ``table`` (measured variables with intervention
    indicator columns, :func:`crl_pipe.io.read_variable_table`; ``options``: ``interventions``,
    ``variables``) or ``robot`` (``format`` lerobot, rosbag or table; ``options``: the reader's).
    For ``format="guide_counts"`` and ``"10x"`` guides are called here (:func:`crl_pipe.pp.call_guides`;
    for a Cell Ranger run that has its own calls, those by default: :func:`crl_pipe.pp.import_guide_calls`),
    the calls written to ``out_guides`` and the resulting labels to ``obs["perturbation"]``; other
    formats write an empty guides table, so that every dataset has the same artifacts.
    """
    get_kind(kind).write_ingested(
        path,
        out_h5ad=out_h5ad,
        out_qc=out_qc,
        out_guides=out_guides,
        format=format,
        options=options,
        guide_calling=guide_calling,
    )


def label(*, ingested: PathLike, out: PathLike, kind: str = "screen", options: Mapping[str, Any] | None = None) -> None:
    """Build ``interventions.parquet`` as the dataset ``kind`` labels its samples (:mod:`crl_pipe.kinds`).

    ``options`` of ``screen``: ``perturbation_key`` (detected when left out), ``control_values``,
    ``min_cells``, ``target_map`` (label token -> variables it acts on, :func:`crl_pipe.pp.map_targets`);
    of ``table``: ``min_cells``, ``target_map``; of ``robot``: those of :func:`crl_pipe.pp.robot_interventions`
    (events and commanded actions)."""
    get_kind(kind).write_interventions(ingested, out=out, options=options)


def preprocess(
    *,
    ingested: PathLike,
    interventions: PathLike,
    out: PathLike,
    gene_sets: PathLike | None = None,
    kind: str = "screen",
    options: Mapping[str, Any] | None = None,
) -> None:
    """Build the model-ready ``preprocessed.h5ad`` as the dataset ``kind`` preprocesses (:mod:`crl_pipe.kinds`).

    ``screen``: normalise, log-transform and select genes (HVGs + perturbed genes + gene-set members;
    ``options``: ``n_top_genes``, ``target_sum``), block by block for a screen larger than memory;
    ``table``: transform the variables and standardise them by the controls (:func:`crl_pipe.pp.preprocess_table`;
    ``transform``, ``cofactor``); ``robot``: keep the channels of ``channel_kinds``."""
    get_kind(kind).write_preprocessed(ingested, interventions, out=out, gene_sets=gene_sets, options=options)


def anchors(
    *,
    preprocessed: PathLike,
    out: PathLike,
    gene_sets: PathLike | None = None,
    min_anchors: int = 2,
    exclusive: bool = True,
    n_programs: int | None = None,
    kind: str = "screen",
) -> None:
    """Build ``anchors.parquet`` as the dataset ``kind`` anchors its latents (:mod:`crl_pipe.kinds`): a
    screen intersects gene sets with the data (or derives ``n_programs`` programs from it); robot logs
    anchor each causal variable on its own channel, and so do the variables of a table without gene sets."""
    get_kind(kind).write_anchors(
        preprocessed, out=out, gene_sets=gene_sets, min_anchors=min_anchors, exclusive=exclusive, n_programs=n_programs
    )


def train(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    out_dir: PathLike,
    model: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    require_device: bool = False,
    held_out: Sequence[str] | Mapping[str, Any] = (),
) -> None:
    """Fit ``model``; write the checkpoint, ``latents``, ``targets``, ``loadings`` and ``training`` tables
    into ``out_dir``.

    The cells of the ``held_out`` combinations (e.g. ``["A+B"]``) are left out of the fit and of
    ``latents`` (:func:`crl_pipe.tl.hold_out`), to be predicted from their parts by :func:`predict`.

    A PyTorch model whose ``params["device"]`` (``cuda``) is not there trains on the CPU with a
    warning, or stops here, before reading anything, when ``require_device`` is true.

    Deep models checkpoint their training under ``out_dir/checkpoints`` (not a declared output, so
    that a killed job leaves it behind and a rerun resumes from it) and use ``threads`` CPU threads.
    """
    from . import tl  # deferred: torch loads only for the steps that use a model

    caps = model_capabilities(model)
    params = dict(params or {})
    if require_device and caps.uses_torch:
        from .models._training import resolve_device  # deferred: torch, as above

        resolve_device(params.get("device", "auto"), strict=True)
    data = _load_data(preprocessed, interventions, anchors, counts=caps.reads_counts, held_out=held_out)
    out_dir = Path(out_dir)
    if caps.time_series and "actions" not in params:
        params["actions"] = _action_channels(preprocessed)
    # run settings, not model parameters: they stay out of model.json and the provenance
    run = {"checkpoint_dir": str(out_dir / "checkpoints"), "threads": threads} if caps.uses_torch else {}
    fitted = tl.train(data, model=model, params={**params, **run}, seed=seed)
    fitted.save(out_dir)
    prov = provenance(
        "train",
        {"preprocessed": preprocessed, "interventions": interventions, "anchors": anchors},
        {"model": model, "params": dict(params or {}), "seed": seed, **_held_out_param(held_out)},
    )
    write_table(fitted.get_latent_representation(data), out_dir / "latents.parquet", "latents", prov)
    write_table(fitted.get_targets(), out_dir / "targets.parquet", "targets", prov)
    write_table(fitted.get_loadings(), out_dir / "loadings.parquet", "loadings", prov)
    write_table(fitted.history, out_dir / "training.parquet", "training", prov)


def graph(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    model_dir: PathLike,
    out_parquet: PathLike,
    out_graphml: PathLike,
    n_refits: int = 20,
    seed: int = 0,
    held_out: Sequence[str] | Mapping[str, Any] = (),
    min_stability: float = 0.8,
    min_weight_z: float = 2.0,
    min_orientation: float = 0.8,
) -> None:
    """Latent causal graph of the trained model, each edge with its stability selection over
    half-sample refits and a confidence call (on the cells it was trained on: without the
    ``held_out`` combinations); the thresholds are those of :class:`crl_pipe.tl.EdgeCalls`."""
    from . import tl  # deferred: torch loads only for the steps that use a model
    from .models import load_model  # deferred: these names load torch

    thresholds = {"min_stability": min_stability, "min_weight_z": min_weight_z, "min_orientation": min_orientation}
    params = {"n_refits": n_refits, "seed": seed, **thresholds, **_held_out_param(held_out)}
    fitted = load_model(model_dir)
    data = _load_data(preprocessed, interventions, anchors, counts=fitted.capabilities.reads_counts, held_out=held_out)
    edges = tl.recover_graph(fitted, data, n_refits=n_refits, seed=seed, calls=tl.EdgeCalls(**thresholds))
    inputs = _model_inputs(preprocessed, interventions, anchors, model_dir)
    prov = provenance("graph", inputs, params)
    write_table(edges, out_parquet, "graph", prov)
    write_graphml(edges, out_graphml)


def evaluate(
    *,
    graph: PathLike,
    targets: PathLike,
    latents: PathLike,
    out: PathLike,
    truth: Mapping[str, PathLike | None],
    predictions: PathLike | None = None,
    single_scores: PathLike | None = None,
    hierarchy: Mapping[str, PathLike] | None = None,
) -> None:
    """Compare the recovered model with the ground truth (target accuracy, SHD, MCC); with the
    ``predictions.parquet`` of :func:`predict`, add its held-out scores averaged over the labels
    (``heldout_r2_top20``, ``heldout_mmd``, ... and the baselines' ``heldout_r2_top20_additive`` ...);
    with the ``held_out_singles.parquet`` of :func:`steer`, those of the held-out singles
    (``heldout_single_pearson_delta_top20``, ... and ``..._mean_change``, ``..._linear_embedding`` ...).
    With a true ``hierarchy`` and the outputs of :func:`hierarchy` (``hierarchy``, ``module_graph``,
    ``graph_given_modules``), add the module scores of :func:`crl_pipe.tl.module_metrics`."""
    from . import tl  # deferred: torch loads only for the steps that use a model

    truth = {k: v for k, v in truth.items() if v}
    metrics = tl.evaluate(
        graph=read_table(graph, "graph"),
        targets=read_table(targets, "targets"),
        latents=read_table(latents, "latents"),
        true_graph=io.read_graph(truth["graph"]) if "graph" in truth else None,
        true_targets=read_table(truth["targets"]) if "targets" in truth else None,
        true_latents=read_table(truth["latents"]) if "latents" in truth else None,
    )
    inputs = {"graph": graph, "targets": targets, "latents": latents, **{f"truth_{k}": v for k, v in truth.items()}}
    if predictions:
        metrics = pd.concat([metrics, tl.held_out_metrics(read_table(predictions, "predictions"))], ignore_index=True)
        inputs["predictions"] = predictions
    if single_scores:
        scores = read_table(single_scores, "predictions")
        rollouts = scores["metric"].str.startswith("rollout_")  # a robot's held-out episodes (heldout_rollout_...)
        singles = tl.held_out_metrics(scores[~rollouts], prefix="heldout_single_")
        if rollouts.any():
            episodes = tl.held_out_metrics(scores[rollouts], prefix="heldout_")
            singles = episodes.replace({"heldout_n_labels": "heldout_n_episodes"})
        metrics = pd.concat([metrics, singles], ignore_index=True)
        inputs["single_scores"] = single_scores
    if hierarchy and "hierarchy" in truth:
        metrics = pd.concat([metrics, _module_metrics(targets, truth, hierarchy)], ignore_index=True)
        inputs |= {f"hierarchy_{k}": v for k, v in hierarchy.items()}
    write_table(metrics, out, "metrics", provenance("evaluate", inputs))


def _module_metrics(targets: PathLike, truth: Mapping[str, PathLike], found: Mapping[str, PathLike]) -> pd.DataFrame:
    """Module ARI, module-graph SHD and the program-graph SHD with and without the modules."""
    from . import tl  # deferred: torch loads with the tools

    program_graph = read_table(found["graph_given_modules"], "graph")
    true_graph = io.read_graph(truth["graph"]) if "graph" in truth else None
    nodes = set(program_graph["source"]) | set(program_graph["target"])
    mapping = {n: n for n in nodes}
    if "targets" in truth:  # latents named by the model: map them to programs through the interventions
        mapping |= tl.map_latents(tl.predicted_targets(read_table(targets, "targets")), read_table(truth["targets"]))
    scores = tl.module_metrics(
        read_table(found["hierarchy"], "hierarchy"),
        read_table(found["module_graph"], "graph"),
        program_graph,
        true_hierarchy=read_table(truth["hierarchy"], "hierarchy"),
        true_module_graph=io.read_graph(truth["module_graph"]) if "module_graph" in truth else None,
        true_graph=true_graph,
        mapping=mapping,
    )
    return pd.DataFrame(list(scores.items()), columns=["metric", "value"])


def _model_inputs(preprocessed: PathLike, interventions: PathLike, anchors: PathLike, model_dir: PathLike) -> dict:
    """Provenance inputs of a step that reads a trained model and the data it was trained on."""
    return {
        "preprocessed": preprocessed,
        "interventions": interventions,
        "anchors": anchors,
        "model": Path(model_dir) / "model.pt",
        "model_meta": Path(model_dir) / "model.json",
    }


def predict(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    model_dir: PathLike,
    out: PathLike,
    held_out: Sequence[str],
    n_cells: int = 1000,
    top_n: int = 20,
    seed: int = 0,
) -> None:
    """Score a trained model's predicted cells of the ``held_out`` combinations against the observed
    ones, beside the control-mean and additive baselines, into ``predictions.parquet``
    (:func:`crl_pipe.tl.evaluate_combinations`: ``intervention, predictor, metric, value``)."""
    from . import tl  # deferred: torch loads only for the steps that use a model
    from .models import load_model, model_names  # deferred: these names load torch

    fitted = load_model(model_dir)
    if not fitted.capabilities.predicts:
        raise ConfigError(
            f"{model_dir}: model {fitted.name} cannot predict held-out cells; expected one of {model_names('predicts')}"
        )
    data = _load_data(preprocessed, interventions, anchors, counts=False)
    labels = tl.combinations(tl.resolve_held_out(data, held_out, source=str(interventions)))
    scores = tl.evaluate_combinations(fitted, data, labels, n_cells=n_cells, top_n=top_n, seed=seed)
    inputs = _model_inputs(preprocessed, interventions, anchors, model_dir)
    params = {"held_out": labels, "n_cells": n_cells, "top_n": top_n, "seed": seed}
    write_table(scores, out, "predictions", provenance("predict", inputs, params))


def steer(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    model_dir: PathLike,
    out: PathLike,
    out_singles: PathLike,
    requests: Sequence[Mapping[str, Any]] = (),
    held_out: Sequence[str] | Mapping[str, Any] = (),
    n_boot: int = 50,
    level: float = 0.9,
    top_n: int = 20,
    seed: int = 0,
    hierarchy: PathLike | None = None,
) -> None:
    """Answer the steering ``requests`` with a trained model into ``steering.parquet``
    (:func:`crl_pipe.tl.steer`), and score its prediction of the held-out singles from prior knowledge
    beside the no-change, mean-change and linear gene-embedding baselines into ``held_out_singles.parquet``
    (:func:`crl_pipe.tl.evaluate_singles`; empty without held-out singles).

    The requests are checked against the model's programs and genes before anything is computed; a
    bad one is a one-line :class:`ConfigError` and nothing is written. With the model's ``hierarchy.parquet``
    (:func:`hierarchy`), a request may also set or shift a module: its member programs by their loadings.
    A robot log's model that rolls out answers ``command`` requests and scores held-out episodes' rollouts
    (``held_out: {episodes: [...]}``) beside persistence and a VAR instead.
    """
    from . import tl  # deferred: torch loads only for the steps that use a model
    from .models import load_model, model_names  # deferred: these names load torch

    fitted = load_model(model_dir)
    if not (fitted.capabilities.steers or fitted.capabilities.rolls_out):
        raise ConfigError(
            f"{model_dir}: model {fitted.name} cannot be steered; "
            f"expected one of {model_names('steers') + model_names('rolls_out')}"
        )
    data = _load_data(preprocessed, interventions, anchors, counts=False)
    inputs = _model_inputs(preprocessed, interventions, anchors, model_dir)
    params = {"requests": [dict(r) for r in requests], "n_boot": n_boot, "level": level, "seed": seed}
    if fitted.capabilities.rolls_out:  # robots: command requests and held-out episodes, by rollouts
        train = _held_out_dropped(data, held_out, interventions)
        steerer = tl.CommandSteerer(fitted, train, n_boot=0, seed=seed)
        parsed = steerer.check(requests, where="steer")
        scores = tl.score_rollouts(fitted, train, tl.split_episodes(data, held_out)[1]) if held_out else None
        steerer.bootstrap(n_boot if parsed else 0, seed)
        prov = provenance("steer", inputs, params | _held_out_param(held_out))
        write_table(steerer.table(parsed, level=level), out, "steering", prov)
        write_table(scores if scores is not None else io.empty_table("predictions"), out_singles, "predictions", prov)
        return
    labels = tl.resolve_held_out(data, held_out, source=str(interventions)) if held_out else []
    train = _held_out_dropped(data, held_out, interventions)
    modules = tl.module_members(read_table(hierarchy, "hierarchy")) if hierarchy else None
    steerer = tl.Steerer(fitted, train, n_boot=0, seed=seed, modules=modules)
    parsed = steerer.check(requests, where="steer")
    steerer.bootstrap(n_boot if parsed else 0, seed)
    table = steerer.table(parsed, level=level)
    scores = tl.evaluate_singles(fitted, data, labels, top_n=top_n, seed=seed)
    params.update({"top_n": top_n, **_held_out_param(labels)})
    prov = provenance("steer", inputs | ({"hierarchy": hierarchy} if hierarchy else {}), params)
    write_table(table, out, "steering", prov)
    write_table(scores, out_singles, "predictions", prov)


def baseline(
    *,
    preprocessed: PathLike,
    interventions: PathLike,
    out_parquet: PathLike,
    out_graphml: PathLike,
    out_meta: PathLike,
    method: str,
    params: Mapping[str, Any] | None = None,
    n_refits: int = 20,
    seed: int = 0,
    held_out: Sequence[str] | Mapping[str, Any] = (),
    min_stability: float = 0.8,
    min_weight_z: float = 2.0,
    min_orientation: float = 0.8,
) -> None:
    """Fit a classical causal-discovery baseline (``pc``, ``ges``; :func:`crl_pipe.tl.baseline_graph`) on the
    preprocessed variables (without the ``held_out`` combinations, as the models); writes
    ``graph.parquet``/``graph.graphml`` as ``graph`` does (same error control and thresholds), and ``model.json``."""
    from . import tl  # deferred: torch loads only for the steps that use a model
    from .models import CRLData  # deferred: these names load torch

    params = dict(params or {})
    data = CRLData.from_artifacts(read_h5ad(preprocessed), read_table(interventions, "interventions"))
    data = _held_out_dropped(data, held_out, interventions)
    thresholds = {"min_stability": min_stability, "min_weight_z": min_weight_z, "min_orientation": min_orientation}
    calls = tl.EdgeCalls(**thresholds)
    edges = tl.baseline_graph(data, method, params, n_refits=n_refits, seed=seed, calls=calls)
    inputs = {"preprocessed": preprocessed, "interventions": interventions}
    settings = {"method": method, "params": params, "n_refits": n_refits, "seed": seed, **thresholds}
    settings |= _held_out_param(held_out)
    prov = provenance("baseline", inputs, settings)
    write_table(edges, out_parquet, "graph", prov)
    write_graphml(edges, out_graphml)
    meta = {"model": method, "kind": "baseline", "params": params, "latent_names": list(data.features)}
    with atomic_path(out_meta) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))


def evaluate_baseline(*, graph: PathLike, truth_graph: PathLike, out: PathLike) -> None:
    """SHD, edge precision and recall of a baseline's graph of observed variables against the true graph."""
    from . import tl  # deferred: torch loads only for the steps that use a model

    edges, truth = read_table(graph, "graph"), io.read_graph(truth_graph)
    nodes = set(truth["source"]) | set(truth["target"])
    metrics = tl.graph_metrics(edges, truth, {n: n for n in nodes})
    table = pd.DataFrame(list(metrics.items()), columns=["metric", "value"]).astype({"value": float})
    write_table(table, out, "metrics", provenance("evaluate", {"graph": graph, "truth_graph": truth_graph}))


def report(
    *,
    dataset: str,
    out_html: PathLike,
    artifacts: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
) -> None:
    """Assemble the self-contained HTML report of one dataset across its models (and baselines).

    ``artifacts``: artifact -> path (:data:`crl_pipe.report.ARTIFACTS`): ``interventions``, ``qc``,
    ``anchors``; ``models`` and ``baselines`` (name -> results folder); optionally ``truth_graph``,
    for a screen of counts ``guides`` (``guides.parquet``), and ``expression`` (``preprocessed.h5ad``: a
    screen's knockdown of each targeted gene; its place on the robustness atlas, for screens and robot logs).
    ``config``: the settings shown under "How this was run".
    """
    from .report import ReportInputs, write_report  # deferred: matplotlib and jinja2 load only for the report

    write_report(out_html, ReportInputs.from_paths(dataset, artifacts, config=config))


def collect_benchmark(*, metrics: Mapping[str, PathLike], out: PathLike) -> None:
    """Stack ``metrics.parquet`` of every ``dataset/model`` key into ``benchmark.parquet``."""
    frames = []
    for key, path in metrics.items():
        dataset, model = key.split("/", 1)
        frames.append(read_table(path, "metrics").assign(dataset=dataset, model=model))
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["dataset", "model", "metric", "value"])
    )
    write_table(
        table[["dataset", "model", "metric", "value"]],
        out,
        "benchmark",
        provenance("benchmark", {"metrics": list(metrics.values())}),
    )


def export(*, results_dir: PathLike, model: str, out: PathLike, counts: bool = True) -> None:
    """Write the preprocessed AnnData with one model's latents (``obsm["X_<model>"]``), loadings
    (``varm["<model>_loadings"]``), targets and graph (``uns[<model>]``) to ``out``, for scanpy and
    pertpy (:func:`crl_pipe.io.to_anndata`); ``counts=false`` leaves out the raw counts layer."""
    folder = Path(results_dir) / str(model)
    adata = to_anndata(results_dir, model, counts=counts)
    files = {
        "preprocessed": Path(results_dir) / "preprocessed.h5ad",
        "interventions": Path(results_dir) / "interventions.parquet",
    }
    files.update({name: folder / f"{name}.parquet" for name in ("latents", "loadings", "targets", "graph")})
    files = {role: path for role, path in files.items() if path.exists()}
    write_h5ad(adata, out, provenance("export", files, {"model": model, "counts": counts}))


def _action_channels(preprocessed: PathLike) -> list[str]:
    """Channels of kind ``action`` in a preprocessed robot log (reader naming differs by format)."""
    var = read_h5ad(preprocessed, backed=True).var
    return [str(c) for c in var.index[var["kind"] == "action"]] if "kind" in var else []


def _load_data(
    preprocessed: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    counts: bool = True,
    held_out: Sequence[str] | Mapping[str, Any] = (),
):
    """CRLData of the stage artifacts; a large screen is read without its raw counts unless ``counts``;
    without the cells of the ``held_out`` combinations (what every model trains on)."""
    from .models import CRLData  # deferred: these names load torch

    adata = storage_for(preprocessed).read(preprocessed, layers=["counts"] if counts else [])
    data = CRLData.from_artifacts(adata, read_table(interventions, "interventions"), read_table(anchors, "anchors"))
    return _held_out_dropped(data, held_out, interventions)


def _held_out_dropped(data, held_out: Sequence[str] | Mapping[str, Any], interventions: PathLike):
    """The one place where held-out combinations (or a robot log's episodes) leave the training data (train,
    graph, baseline, steer)."""
    from . import tl  # deferred: torch loads only for the steps that use a model

    return tl.hold_out(data, held_out, source=str(interventions)) if held_out else data


def _held_out_param(held_out: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``{"held_out": [...]}`` for the provenance when labels (or a robot's episodes) are held out, else
    nothing (unchanged provenance)."""
    if isinstance(held_out, Mapping):
        return {"held_out": {str(k): [str(x) for x in v] for k, v in held_out.items()}} if held_out else {}
    return {"held_out": [str(x) for x in held_out]} if held_out else {}


def hierarchy(
    *,
    latents: PathLike,
    interventions: PathLike,
    anchors: PathLike,
    out_hierarchy: PathLike,
    out_modules: PathLike,
    out_module_graph: PathLike,
    out_program_graph: PathLike,
    out_summary: PathLike,
    given: Mapping[str, Sequence[str]] | None = None,
    n_resamples: int = 20,
    seed: int = 0,
    kind: str = "screen",
    max_level: int = 3,
) -> None:
    """Level 2 of the concept graph (:func:`crl_pipe.tl.hierarchy`): ``hierarchy.parquet`` (level 1 =
    anchor feature -> program, 2 = program -> module, 3 = module -> module of a given nested hierarchy or
    learned up to ``max_level`` where minimality keeps it, ``L3M1`` ...),
    ``modules.parquet`` (module scores; learned levels above 2 add their ``L3M1`` ... columns),
    ``module_graph.parquet`` (level 2), ``graph_given_modules.parquet`` (the program graph re-read given
    the modules, with the one-level edges a module explains) and ``hierarchy.json`` (candidate
    decompositions with their description length, the graphs among learned modules above level 2
    (``upper_module_graphs``), identifiability per module, notes).

    A ``given`` hierarchy (module -> programs or modules) is checked against the latents before any fit.
    The dataset ``kind`` says which samples the hierarchy reads (:meth:`~crl_pipe.kinds.DatasetKind.hierarchy_samples`:
    a screen's cells as they are; a robot log's frame-to-frame changes, every frame observational).
    """
    from . import tl  # deferred: torch loads with the shift readout

    lat = read_table(latents, "latents")
    if given:
        tl.check_given_hierarchy(given, [c for c in lat.columns if c != "sample_id"], where="hierarchy.modules")
    samples, labels = get_kind(kind).hierarchy_samples(lat, read_table(interventions, "interventions"))
    result = tl.hierarchy(samples, labels, given=given or None, n_resamples=n_resamples, seed=seed, max_level=max_level)
    anchor_rows = read_table(anchors, "anchors")
    level1 = pd.DataFrame(
        {"level": 1, "parent": anchor_rows["program"], "child": anchor_rows["feature"], "weight": anchor_rows["weight"]}
    ).assign(stability=float("nan"))
    params = {"given": {k: list(v) for k, v in (given or {}).items()}, "n_resamples": n_resamples, "seed": seed}
    params |= {"kind": kind} if kind != "screen" else {}  # a screen's provenance as before
    params |= {"max_level": max_level} if max_level != 3 else {}
    prov = provenance("hierarchy", {"latents": latents, "interventions": interventions, "anchors": anchors}, params)
    # a module is named by the gene sets of its programs (the anchored ones); a program by itself
    names = tl.module_names(result.membership, set(anchor_rows["program"]))
    table = pd.concat([level1, result.membership], ignore_index=True)
    table["parent_name"] = [names.get(str(p), str(p)) for p in table["parent"]]
    write_table(table, out_hierarchy, "hierarchy", prov)
    scores = result.scores
    for upper in result.upper:  # learned levels above 2: their module scores beside level 2's
        scores = scores.merge(upper.scores, on="sample_id", how="left", validate="one_to_one")
    write_table(scores, out_modules, "modules", prov)
    write_table(result.module_graph, out_module_graph, "graph", prov)
    write_table(result.program_graph, out_program_graph, "graph", prov)
    summary = {
        "notes": result.notes,
        "selection": [  # a decomposition whose covariance is not positive definite has no finite length: null
            {
                **row,
                "description_length": row["description_length"]
                if abs(row["description_length"]) < float("inf")
                else None,
            }
            for row in result.selection.to_dict(orient="records")
        ],
        "identifiability": result.identifiability.to_dict(orient="records"),
        "module_targets": result.module_targets.to_dict(orient="records"),
        "module_names": names,
        "upper_module_graphs": {  # learned levels above 2: the graph among each level's modules
            str(level): upper.module_graph.drop(columns="lag").to_dict(orient="records")
            for level, upper in enumerate(result.upper, start=3)
        },
    }
    with atomic_path(out_summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=_json_value, allow_nan=False), encoding="utf-8")


def _json_value(value: Any) -> Any:
    """numpy scalars in a JSON summary as plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)


def simulate_modules(*, out_truth_dir: PathLike, params: Mapping[str, Any]) -> None:
    """The module truth of a two-level simulated screen (``n_modules`` > 0): ``hierarchy``, ``module_graph``,
    ``module_targets`` and ``modules.parquet`` in ``out_truth_dir``, without drawing the counts again;
    of simulated robot logs with limbs (``n_limbs`` > 0, or the arm's ``limbs``): ``hierarchy`` (limb -> joint)
    and ``module_graph``, from the settings alone (:func:`crl_pipe.simulate.limb_truth`, ``arm_limb_truth``)."""
    from . import simulate as sim  # deferred: scanpy, scikit-learn and MuJoCo load only to simulate

    drive, seed = float(params.get("limb_drive", 0.8)), int(params.get("seed", 0))
    if params.get("n_limbs") or params.get("limbs"):  # limbs come from the settings alone: no logs rolled out
        if params.get("n_limbs"):  # the linear simulator's joints, split at random
            joints = [f"joint_{j}" for j in range(int(params.get("n_joints", 6)))]
            limbs = sim.limb_truth(joints, int(params["n_limbs"]), drive, seed)
        else:  # the arm's kinematic groups
            limbs = sim.arm_limb_truth(drive, seed)
        sim.write_limb_truth(limbs, out_truth_dir, provenance("simulate_robot", {}, params))
        return
    params = {k: v for k, v in params.items() if k != "kind"}
    if not params.get("n_modules"):
        raise ConfigError(
            "simulate_modules: the simulation has no modules; expected n_modules >= 1 (screen) or n_limbs >= 1 (robot)"
        )
    screen, _ = sim.simulate_screen_chunks(**params)  # the truth of simulate_screen, no counts drawn
    sim.write_module_truth(screen, out_truth_dir, provenance("simulate", {}, params))
